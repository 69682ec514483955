/**
 * A value that changes, whose subscribers see only the latest: a subscriber that falls behind skips the values it
 * missed instead of queueing them. Members' Infos are such values (a member that is told "2/5" then "2/6" only needs
 * "2/6"), and a join storm of a thousand members would otherwise queue thousands of stale Infos per subscriber.
 */
import { Deferred, Effect, Exit, FiberId, Stream } from "effect"

export interface Cell<A> {
  readonly get: Effect.Effect<A>
  /** Replaces the value with `f(value)`'s second element and returns its first. */
  readonly modify: <B>(f: (a: A) => readonly [B, A]) => Effect.Effect<B>
  readonly set: (a: A) => Effect.Effect<void>
  /** The current value, then the latest value after each change (values set in between are skipped). */
  readonly changes: Stream.Stream<A>
}

export const make = <A>(initial: A): Effect.Effect<Cell<A>> =>
  Effect.sync(() => {
    let value = initial
    let version = 0
    let waiters: Array<Deferred.Deferred<void>> = []
    const modify = <B>(f: (a: A) => readonly [B, A]): Effect.Effect<B> =>
      Effect.sync(() => {
        const [b, next] = f(value)
        if (next !== value) {
          value = next
          version++
          const woken = waiters
          waiters = []
          for (const waiter of woken) Deferred.unsafeDone(waiter, Exit.void)
        }
        return b
      })
    const changes = Stream.suspend(() => {
      let seen = -1
      const next: Effect.Effect<A> = Effect.suspend(() => {
        if (seen !== version) {
          seen = version
          return Effect.succeed(value)
        }
        const waiter = Deferred.unsafeMake<void>(FiberId.none)
        waiters.push(waiter)
        return Deferred.await(waiter).pipe(
          Effect.onInterrupt(() => Effect.sync(() => waiters = waiters.filter((w) => w !== waiter))),
          Effect.zipRight(next)
        )
      })
      return Stream.repeatEffect(next)
    })
    return {
      get: Effect.sync(() => value),
      modify,
      set: (a) => modify(() => [undefined, a] as const),
      changes
    }
  })
