/**
 * Keys written under a lease other members share, for the life of a scope (etcd's recipes tie a key to a session
 * lease of its own; here the lease outlives the key, so the key must be deleted by hand):
 * - the delete is registered before the write, and the write completes even when interrupted: abandoned in flight, a
 *   write could land after the delete meant to undo it, a key left under a lease that may live for long;
 * - a delete that fails is retried in the background until it lands or the lease ends.
 */
import { Duration, Effect, Scope } from "effect"
import * as Bounded from "./bounded.js"
import type * as Api from "./etcd/api.js"

export interface Options {
  readonly api: Api.EtcdApi
  /** Every key the write may create: deleted together when the scope closes. */
  readonly keys: ReadonlyArray<string>
  /** Retries cleanup past the scope (the client's `LeasePool.retryInBackground`). */
  readonly retryInBackground: (
    effect: Effect.Effect<unknown, unknown>,
    until?: Effect.Effect<unknown>
  ) => Effect.Effect<void>
  /** Completes once the lease is gone: its keys went with it, a retried delete may stop. */
  readonly leaseLost?: Effect.Effect<unknown> | undefined
  /** Bound on the delete when the scope closes; past it, the background takes over. */
  readonly deleteWithin?: Duration.Duration | undefined
  /** Checked when the scope closes: true when nothing needs deleting (the lease is known to be gone). */
  readonly gone?: (() => boolean) | undefined
  /** The delete, when it is more than a delete of `keys` (conditional on them still being the writer's own). */
  readonly remove?: (() => Effect.Effect<unknown, Api.RequestError>) | undefined
}

/** Runs `write` (which creates some of `options.keys`) with the keys' delete registered first in the scope. */
export const hold = <A, E>(options: Options, write: Effect.Effect<A, E>): Effect.Effect<A, E, Scope.Scope> =>
  Effect.zipRight(deleteOnClose(options), write)

/**
 * Apart from `hold`, so that the finalizer's closure does not keep `write` (and all it captured) alive for the life
 * of the scope: a thousand members would each keep their first put.
 */
const deleteOnClose = (options: Options): Effect.Effect<void, never, Scope.Scope> =>
  Effect.flatMap(Effect.scope, (scope) =>
    // Scope.addFinalizer, not Effect.addFinalizer: a thousand members would each keep a copy of their fiber refs. The
    // delete is built when the scope closes, not before: a thousand members would each keep one for nothing.
    Scope.addFinalizer(
      scope,
      Effect.suspend(() => {
        if (options.gone?.() === true) return Effect.void
        const { api, keys } = options
        const remove: Effect.Effect<unknown, Api.RequestError> = options.remove !== undefined
          ? Effect.suspend(options.remove)
          : keys.length === 1
          ? api.delete(keys[0]!)
          : api.txn({ compare: [], success: keys.map((key) => ({ _tag: "Delete" as const, key })) })
        return remove.pipe(
          Bounded.timeout(options.deleteWithin ?? Duration.sum(api.requestTimeout, Duration.millis(500))),
          Effect.catchAll((e) =>
            Effect.logWarning("delete failed; retrying in the background until it succeeds or the lease ends", e).pipe(
              Effect.zipRight(options.retryInBackground(remove, options.leaseLost))
            )
          )
        )
      })
    ))
