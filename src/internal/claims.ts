/**
 * Shard claims of `runShards`: etcd's mutex recipe per shard. A claim is `<group>/claims/<shard>/<member id>.<run>`
 * under the claiming member's lease; a shard's claims are ordered by create revision, and a claim holds the shard
 * once no older claim of it is left. A claim is released after its work stopped, and a dead claimer's claims go with
 * its lease, so a new owner starts only once the old one has stopped.
 *
 * All claims of a group are followed by one watch per client (a prefix cache), however many shards wait on it; claims
 * and releases that come together are written together, in transactions of up to 128 operations.
 */
import { Data, Effect, type Scope, SubscriptionRef } from "effect"
import * as Contenders from "./contenders.js"
import type * as Api from "./etcd/api.js"
import * as Keys from "./keys.js"
import * as OwnedKeys from "./ownedKeys.js"
import * as PrefixCache from "./prefixCache.js"
import { backoff } from "./retry.js"
import * as TxnBatcher from "./txnBatcher.js"

/** Every live claim of a group, by shard, oldest first. */
export type Claims = Contenders.Contenders

export interface ClaimsWatch {
  /** The claims as the watch last applied them. */
  readonly current: () => Claims
  /** The same, for those who follow every change (`EtcdSeq.observe`). */
  readonly latest: SubscriptionRef.SubscriptionRef<Claims>
  /**
   * Calls `wake` once, after the next change of `shard`'s claims; the returned function cancels. A waiter costs
   * nothing while other shards change: a thousand shards waiting at once must not each wake on every event.
   */
  readonly onShardChange: (shard: number, wake: () => void) => () => void
  /**
   * Calls `listener` after every change, with the shards whose claims it touched, until the returned function is
   * called: a runner follows the shards it runs this way without registering a waiter per shard on every turn.
   */
  readonly onChanges: (listener: (touched: ReadonlyArray<number>) => void) => () => void
}

/** A claim's key went before it held its shard (its lease revoked, or deleted from outside): it holds nothing. */
export class ClaimLost extends Data.TaggedError("ClaimLost")<{ readonly key: string }> {}

/** How claim keys name their shard and owner. */
const scheme = (prefix: string): Contenders.Scheme => ({
  numberOf: (key) => {
    const shard = Number(key.slice(prefix.length).split("/")[0])
    return Number.isInteger(shard) ? shard : undefined
  },
  ownerOf: (kv) => Keys.decodeClaim(prefix, kv)?.owner
})

/** Follows every claim of `group` for the life of the scope: one watch, whatever number of shards wait. */
export const watch = (
  api: Api.EtcdApi,
  group: string,
  sweep: OwnedKeys.Registry["sweep"]
): Effect.Effect<ClaimsWatch, Api.RequestError, Scope.Scope> =>
  Effect.gen(function*() {
    const prefix = Keys.claimsPrefix(group)
    const waiters = new Map<number, Set<() => void>>()
    const listeners = new Set<(touched: ReadonlyArray<number>) => void>()
    let last: Claims = { byNumber: new Map(), seen: 0 }
    const latest = yield* SubscriptionRef.make(last)
    // Shards an event touched get new lists (`apply` copies the map, not the untouched lists).
    const changed = (next: Claims) =>
      Effect.zipRight(
        Effect.sync(() => {
          const before = last
          last = next
          if (waiters.size === 0 && listeners.size === 0) return
          const touched: Array<number> = []
          for (const [shard, list] of next.byNumber) if (before.byNumber.get(shard) !== list) touched.push(shard)
          for (const shard of before.byNumber.keys()) if (!next.byNumber.has(shard)) touched.push(shard)
          if (touched.length === 0) return
          for (const shard of touched) {
            const set = waiters.get(shard)
            if (set === undefined) continue
            waiters.delete(shard)
            for (const wake of set) wake()
          }
          for (const listener of listeners) listener(touched)
        }),
        SubscriptionRef.set(latest, next)
      )
    const cache = yield* PrefixCache.follow(
      api,
      prefix,
      OwnedKeys.sweeping(Contenders.fold(scheme(prefix)), sweep),
      {
        span: "EtcdSeq.claimsWatch",
        onChange: changed
      }
    )
    yield* changed(cache.current())
    return {
      current: () => last,
      latest,
      onShardChange: (shard, wake) => {
        let set = waiters.get(shard)
        if (set === undefined) waiters.set(shard, set = new Set())
        set.add(wake)
        return () => void waiters.get(shard)?.delete(wake)
      },
      onChanges: (listener) => {
        listeners.add(listener)
        return () => void listeners.delete(listener)
      }
    }
  })

/**
 * Waits until the claim `key` holds `shard`: it is in the cache and no older claim of the shard is left. Older claims
 * of `owner` itself are leftovers of its earlier runs (its runs of one shard never overlap): a release still under
 * way (slow under load: this claim would wait for it), or a put applied late; they are deleted. Fails with
 * `ClaimLost` when the key goes after it was seen. Returns the claim's create revision: the shard's fence.
 */
export const awaitHeld = (
  api: Api.EtcdApi,
  claims: ClaimsWatch,
  shard: number,
  key: string,
  owner: string
): Effect.Effect<number, ClaimLost> =>
  Effect.gen(function*() {
    let seen = false
    const deleting = new Set<string>()
    while (true) {
      // Registered before the look, so that no change between the look and the wait is missed.
      let woken = false
      let resume: (() => void) | undefined
      const cancel = claims.onShardChange(shard, () => {
        woken = true
        resume?.()
      })
      const list = claims.current().byNumber.get(shard) ?? []
      const at = list.findIndex((c) => c.key === key)
      if (at < 0 && seen) {
        cancel()
        return yield* new ClaimLost({ key })
      }
      if (at >= 0) {
        seen = true
        const ahead = list.slice(0, at)
        for (const leftover of ahead.filter((c) => c.owner === owner && !deleting.has(c.key))) {
          deleting.add(leftover.key)
          yield* api.delete(leftover.key).pipe(Effect.retry(backoff), Effect.ignore, Effect.forkDaemon)
        }
        if (ahead.length === 0) {
          cancel()
          return list[at]!.createRevision
        }
      }
      yield* Effect.async<void>((cb) => {
        if (woken) return cb(Effect.void)
        resume = () => cb(Effect.void)
        return Effect.sync(cancel)
      })
    }
  })

// --- Writes, batched ----------------------------------------------------------------------------------------------

/** A claim's put or its release's delete. */
interface Write {
  readonly op: Extract<Api.Op, { readonly _tag: "Put" | "Delete" }>
}

export interface Writer {
  /** Writes a claim under `lease`; completes once it is written. */
  readonly claim: (key: string, lease: string) => Effect.Effect<void, Api.RequestError>
  /** Deletes a claim, in the background: retried until it lands (a delete of a key its lease took is a success). */
  readonly release: (key: string) => Effect.Effect<void>
}

// etcd refuses a transaction that writes one key twice. A claim whose shard stopped in the turn it was asked for is a
// put and a delete of one key: only the last write of a key goes, and the earlier share its outcome. A key goes where
// its last write is; a batch holds every write of its keys.
const lastWrites = (writes: ReadonlyArray<Write>): Map<string, Write["op"]> => {
  const byKey = new Map<string, Write["op"]>()
  for (const { op } of writes) {
    byKey.delete(op.key)
    byKey.set(op.key, op)
  }
  return byKey
}

const take = (queue: ReadonlyArray<Write>): ReadonlyArray<Write> => {
  const keys = new Set([...lastWrites(queue).keys()].slice(0, TxnBatcher.maxOps))
  return queue.filter(({ op }) => keys.has(op.key))
}

/**
 * One writer per runner: claims and releases asked for together go together, in transactions of at most
 * `TxnBatcher.maxOps` operations. One transaction at a time, so that a claim's put and its later delete land in that
 * order. A release that fails is retried in the background (`retryInBackground`).
 */
export const writer = (
  api: Api.EtcdApi,
  retryInBackground: (effect: Effect.Effect<unknown, unknown>) => Effect.Effect<void>,
  /** The client's registry: a claim is held from before its put until before its delete. */
  registry: OwnedKeys.Registry
): Effect.Effect<Writer, never, Scope.Scope> =>
  Effect.gen(function*() {
    const batcher = yield* TxnBatcher.make<Write, void, Api.RequestError>({
      take,
      send: (batch) =>
        Effect.as(api.txn({ compare: [], success: [...lastWrites(batch).values()] }), batch.map(() => undefined)),
      maxInFlight: 1,
      // A claim's waiter may go (its shard stopped): the put is written anyway, and the release deletes it after.
      waiting: "detached",
      // Writes once taken are written even when the runner stops meanwhile (its stop is what asks for the releases):
      // a release lost here would leave its claim for the life of the lease, which other members may share. What the
      // runner's stop asked for (its last releases) is written once more; what still fails goes to the background
      // through each release's own retry.
      onClose: { flush: api.requestTimeout }
    })
    return {
      claim: (key, lease) =>
        Effect.zipRight(
          Effect.sync(() => registry.hold(key)),
          batcher.write({ op: { _tag: "Put", key, value: "", lease } })
        ),
      release: (key) =>
        // Queued at once (synchronously): a release asked for while the runner stops is in the queue before the
        // runner's final flush looks.
        Effect.flatMap(
          Effect.zipRight(Effect.sync(() => registry.release(key)), batcher.offer({ op: { _tag: "Delete", key } })),
          (written) =>
            written.pipe(
              Effect.catchAll(() => retryInBackground(api.delete(key))),
              // A release never holds up the stop of a shard: it lands in the background.
              Effect.forkDaemon,
              Effect.asVoid
            )
        )
    }
  })
