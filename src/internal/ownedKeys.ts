/**
 * Keys written under a lease other members share, for the life of a scope (etcd's recipes tie a key to a session
 * lease of its own; here the lease outlives the key, so the key must be deleted by hand):
 * - the delete is registered before the write, and the write completes even when interrupted: abandoned in flight, a
 *   write could land after the delete meant to undo it, a key left under a lease that may live for long;
 * - a delete that fails is retried in the background until it lands or the lease ends;
 * - a write etcd applies late (after its writer gave up on it: a request that timed out on a slow or paused etcd
 *   node and was applied later, after the delete meant to undo it) is swept: the client's watches hand every key
 *   they see written to its {@link Registry}, which deletes the ones under the client's leases that nobody holds.
 *   Keys are never written twice (every member id, lock and claim key is new), so a key nobody holds is stale. Where
 *   the client has no watch of a key's prefix (index locks: each contender watches its predecessor only), a write
 *   that got no answer makes its key a suspect, watched alone until it lands and goes, or its lease ends.
 */
import { Duration, Effect, FiberSet, Metric, Scope, Stream } from "effect"
import * as Bounded from "./bounded.js"
import * as Api from "./etcd/api.js"
import * as Metrics from "./metrics.js"
import { type Fold, watchStream } from "./prefixCache.js"
import { backoff } from "./retry.js"

/** The keys a client means to hold under its leases; every other key under them is a write applied late. */
export interface Registry {
  /** `key` is meant to exist from now on: called before its write. Counted: as many releases as holds. */
  readonly hold: (key: string) => void
  /** `key` is no longer meant to exist: called before its delete. */
  readonly release: (key: string) => void
  /**
   * Told of every key a watch of the client saw written, synchronously: one under a lease this client granted that
   * nobody holds is deleted in the background (retried until it lands).
   */
  readonly sweep: (kv: { readonly key: string; readonly lease: string; readonly modRevision: number }) => void
  /**
   * A write of `key` got no answer: it may land at any time. The key is read, then watched alone, and swept as above
   * when it shows up while nobody holds it; the watch ends once it was swept, or once `until` completes (the lease
   * is gone, and the key with it). For keys under a prefix none of the client's watches follow.
   */
  readonly suspect: (key: string, until: Effect.Effect<unknown>) => void
}

/** `fold`, telling `sweep` of every key it reads or sees written: how a watch of the client sweeps. */
export const sweeping = <S>(fold: Fold<S>, sweep: Registry["sweep"]): Fold<S> => ({
  initial: (kvs, revision) => {
    kvs.forEach(sweep)
    return fold.initial(kvs, revision)
  },
  reread: (previous, kvs, revision) => {
    kvs.forEach(sweep)
    return fold.reread(previous, kvs, revision)
  },
  apply: (state, events) => {
    for (const event of events) if (event._tag === "Put") sweep(event.kv)
    return fold.apply(state, events)
  },
  seen: fold.seen
})

/** How long a key nobody holds may stay before it is swept: its owner's own delete is usually done by then. */
const sweepAfter = Duration.seconds(1)

/** The registry of a client whose leases `granted` tells. */
export const makeRegistry = (
  api: Api.EtcdApi,
  granted: (leaseId: string) => boolean
): Effect.Effect<Registry, never, Scope.Scope> =>
  Effect.gen(function*() {
    const run = yield* FiberSet.makeRuntime<never, void, never>()
    const held = new Map<string, number>()
    const sweeping = new Set<string>()
    const suspects = new Set<string>()
    // Deleted only as the version seen: a key its owner deleted meanwhile (a release whose put the watch showed
    // late) is left alone, and only a key that stayed is counted and told of.
    const remove = (kv: { readonly key: string; readonly modRevision: number }) =>
      api.txn({
        compare: [{ key: kv.key, target: "mod", result: "equal", value: kv.modRevision }],
        success: [{ _tag: "Delete", key: kv.key }]
      }).pipe(
        Effect.retry(backoff),
        Effect.flatMap((result) =>
          result.succeeded
            ? Effect.logWarning(`deleted ${kv.key}: written under this process's lease, held by nobody`).pipe(
              Effect.zipRight(Metric.increment(Metrics.staleKeysDeleted))
            )
            : Effect.void
        ),
        Effect.ignore
      )
    // A suspect's watch: the key as it is now, then every change of it, until it is swept or `until`.
    const watchSuspect = (key: string, until: Effect.Effect<unknown>) =>
      Effect.gen(function*() {
        const stale = (kv: Api.KeyValue | undefined): kv is Api.KeyValue =>
          kv !== undefined && !held.has(key) && granted(kv.lease)
        const now = yield* api.range({ target: { key } }).pipe(Effect.retry(backoff))
        const there = now.kvs[0]
        if (stale(there)) return yield* remove(there)
        // Resumed after the last revision seen when the watch drops, so nothing slips by.
        let seen = now.revision
        const landed = yield* Stream.suspend(() => watchStream(api, { key }, seen + 1)).pipe(
          Stream.tap((response) =>
            Effect.sync(() => {
              for (const event of response.events) seen = Math.max(seen, Api.eventRevision(event))
            })
          ),
          Stream.map((response) => response.events.find((event) => event._tag === "Put" && stale(event.kv))),
          Stream.filter((event) => event !== undefined),
          Stream.runHead,
          Effect.retry(backoff)
        )
        if (landed._tag === "Some" && landed.value._tag === "Put") yield* remove(landed.value.kv)
      }).pipe(
        Effect.raceFirst(Effect.asVoid(until)),
        Effect.ignore,
        Effect.ensuring(Effect.sync(() => suspects.delete(key)))
      )
    return {
      hold: (key) => void held.set(key, (held.get(key) ?? 0) + 1),
      release: (key) => {
        const n = held.get(key) ?? 0
        if (n <= 1) held.delete(key)
        else held.set(key, n - 1)
      },
      sweep: (kv) => {
        if (kv.lease === "0" || held.has(kv.key) || sweeping.has(kv.key) || !granted(kv.lease)) return
        sweeping.add(kv.key)
        // After a while: the put of a key released meanwhile often shows after its release, whose delete is then
        // under way; only one that stays is stale.
        run(
          Effect.sleep(sweepAfter).pipe(
            Effect.zipRight(remove(kv)),
            Effect.ensuring(Effect.sync(() => sweeping.delete(kv.key)))
          )
        )
      },
      suspect: (key, until) => {
        if (suspects.has(key)) return
        suspects.add(key)
        run(watchSuspect(key, until))
      }
    }
  })

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
  /** The client's registry: the keys are held from before the write until before the delete. */
  readonly registry: Registry
}

/** Runs `write` (which creates some of `options.keys`) with the keys' delete registered first in the scope. */
export const hold = <A, E>(options: Options, write: Effect.Effect<A, E>): Effect.Effect<A, E, Scope.Scope> =>
  Effect.zipRight(
    deleteOnClose(options),
    Effect.zipRight(Effect.sync(() => options.keys.forEach(options.registry.hold)), write)
  )

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
        // Released before the delete: the write landing after it is stale from then on, whenever it shows.
        options.keys.forEach(options.registry.release)
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
