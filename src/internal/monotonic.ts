/**
 * Milliseconds on Effect's monotonic clock (`process.hrtime`, or the `TestClock`). Deadlines and intervals are
 * measured on it, never on the wall clock (`Clock.currentTimeMillis`), which NTP or an operator may step back or
 * forward at any moment: during the very outage a fence guards against, or in the middle of a paced burst.
 */
import { Effect } from "effect"

export const millis: Effect.Effect<number> = Effect.clockWith((clock) =>
  Effect.sync(() => {
    try {
      return Number(clock.unsafeCurrentTimeNanos() / 1_000_000n)
    } catch {
      // The TestClock's nanosecond reading throws once its instant is fractional (after a jittered sleep, say); its
      // millisecond reading is the test's own time, monotonic by construction.
      return clock.unsafeCurrentTimeMillis()
    }
  })
)
