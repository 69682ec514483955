/**
 * An etcd lock per index (etcd's `concurrency.Mutex`): the lock key is `<prefix><member id>.<run>` written under the
 * member's lease, contenders are ordered by create revision, and each waits only for the delete of its direct
 * predecessor's key, so a release wakes one waiter, not a herd. The lock is held once no live contender comes
 * before this one's key and that key still exists (read in one transaction, as `Mutex.Lock` checks its own key after
 * waiting): a key that went meanwhile (its lease revoked) holds nothing. A dead holder's key vanishes with its lease;
 * a live one whose release failed retries it in the background.
 */
import { Data, Effect, Option, type Scope, Stream } from "effect"
import { type IKeyValue, Range } from "etcd3"
import type { EtcdRequestFailed, EtcdUnavailable } from "../EtcdSeqError.js"
import * as Keys from "./keys.js"
import { type Connection, request } from "./request.js"
import { watchPrefix } from "./watch.js"

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
  connection: Connection,
  prefix: string,
  /**
   * `owner`: the member id; `run`: a number unique to this run, the same across retries of `acquire` (or the member
   * would queue behind its own earlier key). One key per run, not per member, so a release retried in the
   * background can never delete a later acquisition by the same member.
   */
  holder: { readonly owner: string; readonly run: number; readonly leaseId: string },
  /** Retries cleanup past the holder's scope (the client's `LeasePool.retryInBackground`). */
  retryInBackground: (effect: Effect.Effect<unknown, unknown>) => Effect.Effect<void>
): Effect.Effect<number, EtcdUnavailable | EtcdRequestFailed | LockLost, Scope.Scope> =>
  Effect.gen(function*() {
    const key = Keys.lockKey(prefix, holder.owner, holder.run)
    const deleteKey = (target: string) =>
      request(connection, "lock.delete", (client) => client.delete().key(target).exec())
    // Registered before the put, not after, and the put completes even when interrupted: a put abandoned in flight
    // could be applied after this delete, and its key must not outlive the run (the lease is shared with the
    // client's other members and may live for long). A failed delete is retried in the background until it goes
    // through, since a key left behind would hold the index for everyone.
    yield* Effect.addFinalizer(() =>
      deleteKey(key).pipe(
        Effect.catchAll((e) =>
          Effect.logWarning("lock release failed; retrying in the background", e).pipe(
            Effect.zipRight(retryInBackground(deleteKey(key)))
          )
        )
      )
    )
    const revision = yield* request(connection, "lock.put", (client) =>
      client.if(key, "Create", "==", 0)
        .then(client.put(key).value("").lease(holder.leaseId))
        .else(client.get(key))
        .commit(), { completes: true }).pipe(
        Effect.map((txn) =>
          txn.succeeded
            ? Number(txn.header.revision)
            : Number(txn.responses[0]?.response_range?.kvs[0]?.create_revision ?? txn.header.revision)
        )
      )
    const range = Range.prefix(prefix)
    let before = revision
    while (true) {
      // One transaction: the contenders ahead, read only while our own key is still the one we wrote.
      const look = yield* request(connection, "lock.range", (client) =>
        client.kv.txn({
          compare: [{ key: Buffer.from(key), target: "Create", result: "Equal", create_revision: String(revision) }],
          success: [{
            request_range: {
              key: range.start,
              range_end: range.end,
              max_create_revision: String(before - 1),
              sort_order: "Descend",
              sort_target: "Create",
              limit: lookBehind,
              keys_only: true
            }
          }]
        }))
      if (!look.succeeded) return yield* new LockLost({ key })
      const ahead: ReadonlyArray<IKeyValue> = look.responses[0]?.response_range?.kvs ?? []
      const predecessor = ahead.find((kv) => Keys.lockOwnerOfKey(prefix, kv.key.toString(), kv.lease) !== undefined)
      if (predecessor === undefined) {
        if (ahead.length < lookBehind) return revision
        // Only keys no lease holds in this look: look further back.
        before = Number(ahead.at(-1)!.create_revision)
        continue
      }
      const predecessorKey = predecessor.key.toString()
      if (Keys.lockOwnerOfKey(prefix, predecessorKey, predecessor.lease) === holder.owner) {
        // A key of this member's own earlier run: its runs never overlap (each stops before the next starts, and a
        // membership has one runner), so it is a leftover (a put applied after its run gave up on it), not a holder.
        yield* deleteKey(predecessorKey)
        before = revision
        continue
      }
      // Wait for that one key to change (its delete, in practice), from the revision we read it at: nothing slips by.
      yield* watchPrefix(connection, { key: predecessorKey }, Number(look.header.revision) + 1).pipe(
        Stream.runHead,
        Effect.map(Option.isSome),
        // A dropped watch just means "look again".
        Effect.catchTag("WatchEnded", () => Effect.succeed(false))
      )
      before = revision
    }
  }).pipe(Effect.withSpan("EtcdSeq.lock", { attributes: { prefix } }))
