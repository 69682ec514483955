/**
 * An etcd lock per index (etcd's `concurrency.Mutex`): the lock key is `<prefix><member id>.<run>` written under the
 * member's lease, contenders are ordered by create revision, and each waits only for the delete of its direct
 * predecessor's key, so a release wakes one waiter, not a herd. The lock is held once no live contender comes
 * before this one's key and that key still exists (read in one transaction, as `Mutex.Lock` checks its own key after
 * waiting): a key that went meanwhile (its lease revoked) holds nothing. A dead holder's key vanishes with its lease;
 * a live one whose release failed retries it in the background.
 */
import { Data, Effect, Option, type Scope, Stream } from "effect"
import type * as Api from "./etcd/api.js"
import * as Keys from "./keys.js"
import * as OwnedKeys from "./ownedKeys.js"
import { watchStream } from "./prefixCache.js"

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
  retryInBackground: OwnedKeys.Options["retryInBackground"]
): Effect.Effect<number, Api.RequestError | LockLost, Scope.Scope> =>
  Effect.gen(function*() {
    const key = Keys.lockKey(prefix, holder.owner, holder.run)
    // A key left behind would hold the index for everyone: its delete is registered first (ownedKeys.ts).
    const written = yield* OwnedKeys.hold(
      { api, keys: [key], retryInBackground },
      api.txn({
        compare: [{ key, target: "create", result: "equal", value: 0 }],
        success: [{ _tag: "Put", key, value: "", lease: holder.leaseId }],
        failure: [{ _tag: "Range", range: { target: { key } } }]
      })
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
        // membership has one runner), so it is a leftover (a put applied after its run gave up on it), not a holder.
        yield* api.delete(predecessor.key)
        before = revision
        continue
      }
      // Wait for that one key to change (its delete, in practice), from the revision we read it at: nothing slips by.
      yield* watchStream(api, { key: predecessor.key }, look.revision + 1).pipe(
        Stream.runHead,
        Effect.map(Option.isSome),
        // A dropped watch just means "look again".
        Effect.catchTag("WatchEnded", () => Effect.succeed(false))
      )
      before = revision
    }
  }).pipe(Effect.withSpan("EtcdSeq.lock", { attributes: { prefix } }))
