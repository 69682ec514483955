/**
 * A value that changes, whose subscribers see only the latest: a subscriber that falls behind skips the values it
 * missed instead of queueing them. Members' Infos are such values (a member that is told "2/5" then "2/6" only needs
 * "2/6"), and a join storm of a thousand members would otherwise queue thousands of stale Infos per subscriber.
 */
import { Effect, Stream } from "effect"

export interface Cell<A> {
  readonly get: Effect.Effect<A>
  /** Replaces the value with `f(value)`'s second element and returns its first. */
  readonly modify: <B>(f: (a: A) => readonly [B, A]) => Effect.Effect<B>
  /** `modify`, outside any Effect: for callbacks that must not allocate an Effect per call. */
  readonly unsafeModify: <B>(f: (a: A) => readonly [B, A]) => B
  readonly set: (a: A) => Effect.Effect<void>
  /**
   * A new reader: an effect that gives the current value the first time, then waits for a change and gives the
   * latest value (values set in between are skipped).
   */
  readonly reader: Effect.Effect<Effect.Effect<A>>
  /** The values a reader gives, as a stream. */
  readonly changes: Stream.Stream<A>
}

export const make = <A>(initial: A): Effect.Effect<Cell<A>> =>
  Effect.sync(() => {
    let value = initial
    let version = 0
    let waiters = new Set<() => void>()
    const unsafeModify = <B>(f: (a: A) => readonly [B, A]): B => {
      const [b, next] = f(value)
      if (next !== value) {
        value = next
        version++
        const woken = waiters
        waiters = new Set()
        for (const wake of woken) wake()
      }
      return b
    }
    const modify = <B>(f: (a: A) => readonly [B, A]): Effect.Effect<B> => Effect.sync(() => unsafeModify(f))
    const reader = Effect.sync(() => {
      let seen = -1
      // A bare callback per waiting reader, not a Deferred: every change wakes every reader, so it stays cheap.
      const changed = Effect.async<void>((resume) => {
        // The fiber may have yielded between its check and this registration: a change made meanwhile woke nobody.
        if (seen !== version) return resume(Effect.void)
        const wake = () => resume(Effect.void)
        waiters.add(wake)
        return Effect.sync(() => waiters.delete(wake))
      })
      const next: Effect.Effect<A> = Effect.suspend(() => {
        if (seen !== version) {
          seen = version
          return Effect.succeed(value)
        }
        return Effect.zipRight(changed, next)
      })
      return next
    })
    return {
      get: Effect.sync(() => value),
      unsafeModify,
      modify,
      set: (a) => modify(() => [undefined, a] as const),
      reader,
      changes: Stream.suspend(() => Stream.unwrap(Effect.map(reader, Stream.repeatEffect)))
    }
  })
