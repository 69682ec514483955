/**
 * The lease session against a real etcd: self-fencing on a monotonic clock.
 */
import { expect, layer } from "@effect/vitest"
import { Clock, Deferred, Duration, Effect, Exit } from "effect"
import { performance } from "node:perf_hooks"
import * as Lease from "../../src/internal/lease.js"
import { EtcdEndpoints } from "../support/etcd.js"
import { clientBehindProxy, sharedOf } from "../support/members.js"

/**
 * The live clock, except that its wall-clock reading can be stepped (as NTP or an operator steps a host's clock);
 * the monotonic reading and the timers are untouched.
 */
const steppableClock = () => {
  const live = Clock.make()
  let offset = 0
  const clock: Clock.Clock = {
    [Clock.ClockTypeId]: Clock.ClockTypeId,
    unsafeCurrentTimeMillis: () => live.unsafeCurrentTimeMillis() + offset,
    currentTimeMillis: Effect.sync(() => live.unsafeCurrentTimeMillis() + offset),
    unsafeCurrentTimeNanos: () => live.unsafeCurrentTimeNanos(),
    currentTimeNanos: Effect.sync(() => live.unsafeCurrentTimeNanos()),
    sleep: (duration) => live.sleep(duration)
  }
  return { clock, step: (millis: number) => (offset += millis) }
}

layer(EtcdEndpoints.layer, { timeout: "60 seconds", excludeTestServices: true })("lease session", (it) => {
  it.scoped("a wall clock stepped back while etcd is out of reach does not delay the self-fence", () =>
    Effect.gen(function*() {
      const { etcd: connection, proxy } = yield* clientBehindProxy({ requestTimeout: "1 second" })
      const { clock, step } = steppableClock()
      const ttl = Duration.seconds(2)
      const session = yield* Lease.make(sharedOf(connection).api, ttl).pipe(Effect.withClock(clock))
      // A keepalive goes through first (every TTL/6).
      yield* Effect.sleep("800 millis")
      yield* proxy.pause
      const cutAt = performance.now()
      step(-10_000)
      const fenced = yield* Deferred.make<void>()
      yield* session.onFence((isFenced) => isFenced && Deferred.unsafeDone(fenced, Exit.void))
      yield* Deferred.await(fenced).pipe(Effect.timeout("6 seconds"))
      // Fenced a margin before the TTL, counted from the last keepalive sent, not 10 s later.
      expect(performance.now() - cutAt).toBeLessThan(Duration.toMillis(ttl))
      yield* proxy.resume
    }))
  it.scoped("a keepalive answered in time but read after a stall past the fence keeps the lease", () =>
    Effect.gen(function*() {
      const { etcd: connection, proxy } = yield* clientBehindProxy({ requestTimeout: "5 seconds" })
      // TTL 2 s: a keepalive every 333 ms, the fence 1.6 s after the last one sent that succeeded.
      const session = yield* Lease.make(sharedOf(connection).api, Duration.seconds(2))
      const grantedAt = performance.now()
      const fences: Array<boolean> = []
      yield* session.onFence((isFenced) => void fences.push(isFenced))
      // etcd's answers to the keepalives (the first sent at 333 ms) wait in the proxy...
      yield* proxy.holdDown
      yield* Effect.sleep("1 second")
      // ...then reaches the process, which stalls right away until past the fence (a starved process, a long GC).
      yield* proxy.releaseDown(() => {
        while (performance.now() - grantedAt < 2_100) {
          // busy: the event loop is stalled
        }
      })
      // The answer was in the socket before the fence came due: the lease lives, and keepalives go on.
      yield* Effect.sleep("2 seconds")
      expect(fences).toEqual([])
    }))
})
