/**
 * Letting time pass in tests over the in-memory etcd, under the TestClock: event-loop turns for the fibers a step
 * woke, and the clock moved in small steps.
 */
import { Duration, Effect, TestClock } from "effect"

/** One event-loop turn, after the fibers ready to run had theirs. */
const turn = Effect.zipRight(
  Effect.yieldNow(),
  Effect.async<void>((resume) => void setImmediate(() => resume(Effect.void)))
)

/** Enough turns for a change to reach every member (watch, view, Info, runners), without moving the clock. */
export const settle = Effect.repeatN(turn, 30)

/**
 * Moves the TestClock by `millis` in small steps, letting fibers run between: a timer a fiber sets in reaction to
 * another (a work's stop after a self-fence) must fire in its turn, not after a later one the clock jumped past.
 */
export const advance = (millis: number) =>
  Effect.gen(function*() {
    for (let done = 0; done < millis; done += 50) {
      yield* TestClock.adjust(Duration.millis(Math.min(50, millis - done)))
      yield* Effect.repeatN(turn, 4)
    }
  })
