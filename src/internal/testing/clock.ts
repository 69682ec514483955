/**
 * The harness runs on the live clock: `@effect/vitest` provides a `TestClock`, under which the harness's sleeps and
 * timeouts would never fire.
 */
import { Clock, Duration, Effect } from "effect"

const liveClock = Clock.make()

/** `self` with the live clock, whatever clock the caller's fiber has. */
export const live = <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> => Effect.withClock(self, liveClock)

/** How often the harness polls etcd while it waits for health or a leader. */
export const POLL_EVERY = Duration.millis(100)
