/**
 * An etcd lock per index (etcd's `concurrency.Mutex`): the lock key is `<prefix><member id>.<run>` written under the
 * member's lease, contenders are ordered by create revision, and each waits only for the delete of its direct
 * predecessor's key, so a release wakes one waiter, not a herd. The lock is held once no live contender comes
 * before this one's key and that key still exists (read in one transaction, as `Mutex.Lock` checks its own key after
 * waiting): a key that went meanwhile (its lease revoked) holds nothing. A dead holder's key vanishes with its lease;
 * a live one whose release failed retries it in the background, and a key of a run that gave up on its write but
 * that etcd applied late is swept by the writer's client (ownedKeys.ts), so no waiter waits behind a key nobody holds
 * for longer than it takes its client to see it.
 */
import { Data, Effect, Option, type Scope, Stream, SubscriptionRef } from "effect"
import * as Contenders from "./contenders.js"
import * as Api from "./etcd/api.js"
import * as Keys from "./keys.js"
import * as OwnedKeys from "./ownedKeys.js"
import * as PrefixCache from "./prefixCache.js"

/** The contender's own key went while it waited (its lease revoked, or deleted from outside): it holds nothing. */
export class LockLost extends Data.TaggedError("LockLost")<{ readonly key: string }> {}

/** Predecessors read per look: keys that cannot hold the lock (no lease) are skipped without another request. */
const lookBehind = 8

/**
 * Holds the lock under `prefix` for the life of the scope, waiting (not failing) while others hold it. Returns the
 * lock key's create revision: it grows with every acquisition of this lock, so it serves as a fencing token. Fails
 * with `LockLost` when its own key goes while it waits.
 */
export const acquire = (
  api: Api.EtcdApi,
  prefix: string,
  /**
   * `owner`: the member id; `run`: a number unique to this run, the same across retries of `acquire` (or the member
   * would queue behind its own earlier key). One key per run, not per member, so a release retried in the
   * background can never delete a later acquisition by the same member.
   */
  holder: { readonly owner: string; readonly run: number; readonly leaseId: string },
  /** Retries cleanup past the holder's scope (the client's `LeasePool.retryInBackground`). */
  retryInBackground: OwnedKeys.Options["retryInBackground"],
  /** The client's registry: the key is held while this run holds or waits for the lock. */
  registry: OwnedKeys.Registry,
  /** Completes once the holder's lease is gone (its keys with it). */
  leaseLost: Effect.Effect<unknown>
): Effect.Effect<number, Api.RequestError | LockLost, Scope.Scope> =>
  Effect.gen(function*() {
    const key = Keys.lockKey(prefix, holder.owner, holder.run)
    // A key left behind would hold the index for everyone: its delete is registered first (ownedKeys.ts).
    const written = yield* OwnedKeys.hold(
      { api, keys: [key], retryInBackground, registry },
      api.txn({
        compare: [{ key, target: "create", result: "equal", value: 0 }],
        success: [{ _tag: "Put", key, value: "", lease: holder.leaseId }],
        failure: [{ _tag: "Range", range: { target: { key } } }]
      }).pipe(
        // No answer within the request timeout: the write may still land, after this run gave up on it. Nothing of
        // the client follows the locks as a whole (a contender watches its predecessor only), so the key is watched
        // alone. Uninterruptible with its outcome, as a write is anyway: a run interrupted meanwhile still learns it.
        Effect.tapError((e) =>
          e._tag === "EtcdUnavailable" ? Effect.sync(() => registry.suspect(key, leaseLost)) : Effect.void
        ),
        Effect.uninterruptible
      )
    )
    const own = written.results[0]
    const revision = written.succeeded || own?._tag !== "Range"
      ? written.revision
      : own.result.kvs[0]?.createRevision ?? written.revision
    let before = revision
    while (true) {
      // One transaction: the contenders ahead, read only while our own key is still the one we wrote.
      const look = yield* api.txn({
        compare: [{ key, target: "create", result: "equal", value: revision }],
        success: [{
          _tag: "Range",
          range: {
            target: { prefix },
            maxCreateRevision: before - 1,
            order: "createDescending",
            limit: lookBehind,
            keysOnly: true
          }
        }]
      })
      const found = look.results[0]
      if (!look.succeeded || found?._tag !== "Range") return yield* new LockLost({ key })
      const ahead = found.result.kvs
      const predecessor = ahead.find((kv) => Keys.lockOwnerOfKey(prefix, kv.key, kv.lease) !== undefined)
      if (predecessor === undefined) {
        if (ahead.length < lookBehind) return revision
        // Only keys no lease holds in this look: look further back.
        before = ahead.at(-1)!.createRevision
        continue
      }
      if (Keys.lockOwnerOfKey(prefix, predecessor.key, predecessor.lease) === holder.owner) {
        // A key of this member's own earlier run: its runs never overlap (each stops before the next starts, and a
        // membership has one runner), so it is a leftover, not a holder: a release still under way (slow under
        // load: this run would wait for it), or a put applied after its run gave up on it.
        yield* api.delete(predecessor.key)
        before = revision
        continue
      }
      // Wait for that one key to change (its delete, in practice), from the revision we read it at: nothing slips by.
      yield* PrefixCache.watchStream(api, { key: predecessor.key }, look.revision + 1).pipe(
        Stream.runHead,
        Effect.map(Option.isSome),
        // A dropped watch just means "look again".
        Effect.catchTag("WatchEnded", () => Effect.succeed(false))
      )
      before = revision
    }
  }).pipe(Effect.withSpan("EtcdSeq.lock", { attributes: { prefix } }))

// --- The group's locks, for the client ---

/** Every index's contenders (lock keys), oldest (the holder) first. */
export type Locks = Contenders.Contenders

const indexOfKey = (prefix: string, key: string): number | undefined => {
  const rest = key.slice(prefix.length)
  const slash = rest.indexOf("/")
  return slash > 0 && /^(0|[1-9][0-9]{0,8})$/.test(rest.slice(0, slash)) ? Number(rest.slice(0, slash)) : undefined
}

/** How lock keys name their index and owner. */
const scheme = (prefix: string): Contenders.Scheme => ({
  numberOf: (key) => indexOfKey(prefix, key),
  ownerOf: (kv) => Keys.lockOwnerOfKey(`${prefix}${indexOfKey(prefix, kv.key)}/`, kv.key, kv.lease)
})

/** Every index lock of a group, as one watch of the client follows them. */
export interface LocksWatch {
  readonly latest: SubscriptionRef.SubscriptionRef<Locks>
}

/**
 * Follows every index lock of `group` for the life of the scope (`EtcdSeq.observe` shows them). Contenders wait for
 * their predecessor only, not on this: a watch of every lock in each client costs a group of a thousand members
 * thousands of events per change.
 */
export const watch = (
  api: Api.EtcdApi,
  group: string,
  sweep: OwnedKeys.Registry["sweep"]
): Effect.Effect<LocksWatch, Api.RequestError, Scope.Scope> =>
  Effect.gen(function*() {
    const prefix = Keys.locksPrefix(group)
    const latest = yield* SubscriptionRef.make<Locks>({ byNumber: new Map(), seen: 0 })
    const cache = yield* PrefixCache.follow(
      api,
      prefix,
      OwnedKeys.sweeping(Contenders.fold(scheme(prefix)), sweep),
      { span: "EtcdSeq.locksWatch", onChange: (state) => SubscriptionRef.set(latest, state) }
    )
    yield* SubscriptionRef.set(latest, cache.current())
    return { latest }
  })
