/**
 * The lease session against a real etcd: self-fencing on a monotonic clock.
 */
import { expect, layer } from "@effect/vitest"
import { Clock, Duration, Effect } from "effect"
import { performance } from "node:perf_hooks"
import { Etcd } from "../../src/index.js"
import * as Lease from "../../src/internal/lease.js"
import { EtcdEndpoints } from "../support/etcd.js"
import { sharedOf } from "../support/members.js"
import { startProxy } from "../support/proxy.js"

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
      const { endpoints } = yield* EtcdEndpoints
      const proxy = yield* startProxy(endpoints[0]!)
      const connection = yield* Etcd.make({ endpoints: [proxy.endpoint], requestTimeout: "1 second" })
      const { clock, step } = steppableClock()
      const ttl = Duration.seconds(2)
      const session = yield* Lease.make(sharedOf(connection).api, ttl).pipe(Effect.withClock(clock))
      // A keepalive goes through first (every TTL/3).
      yield* Effect.sleep("800 millis")
      yield* proxy.pause
      const cutAt = performance.now()
      step(-10_000)
      const reason = yield* session.lost.pipe(Effect.timeout("6 seconds"))
      expect(reason).toBe("no keepalive succeeded within the TTL")
      // Fenced a margin before the TTL, counted from the last keepalive sent, not 10 s later.
      expect(performance.now() - cutAt).toBeLessThan(Duration.toMillis(ttl))
      yield* proxy.resume
    }))
})
