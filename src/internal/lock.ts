/**
 * An etcd lock per index (etcd's `concurrency.Mutex`): the lock key is `<prefix><member id>.<run>` written under the
 * member's lease, contenders are ordered by create revision, and each waits only for the delete of its direct
 * predecessor, so a release wakes one waiter, not a herd. A dead holder's key vanishes with its lease; a live one
 * whose release failed retries it in the background.
 */
import { Effect, Option, type Scope, Stream } from "effect"
import { Range } from "etcd3"
import type { EtcdRequestFailed, EtcdUnavailable } from "../EtcdSeqError.js"
import { type Connection, request } from "./request.js"
import { watchPrefix } from "./watch.js"

/**
 * Holds the lock under `prefix` for the life of the scope, waiting (not failing) while others hold it. Returns the
 * lock key's create revision: it grows with every acquisition of this lock, so it serves as a fencing token.
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
): Effect.Effect<number, EtcdUnavailable | EtcdRequestFailed, Scope.Scope> =>
  Effect.gen(function*() {
    const ownPrefix = `${prefix}${holder.owner}.`
    const key = `${ownPrefix}${holder.run}`
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
    while (true) {
      const predecessors = yield* request(connection, "lock.range", (client) =>
        client.kv.range({
          key: range.start,
          range_end: range.end,
          max_create_revision: revision - 1,
          sort_order: "Descend",
          sort_target: "Create",
          limit: 1,
          keys_only: true
        }))
      const predecessor = predecessors.kvs[0]?.key.toString()
      if (predecessor === undefined) return revision
      if (predecessor.startsWith(ownPrefix)) {
        // A key of this member's own earlier run: its runs never overlap (each stops before the next starts), so it
        // is a leftover (a put applied after its run gave up on it), not a holder. It goes, and the search goes on.
        yield* deleteKey(predecessor)
        continue
      }
      // Wait for the predecessor's key to go, from the revision we read it at: its delete cannot slip by.
      yield* watchPrefix(connection, prefix, Number(predecessors.header.revision) + 1).pipe(
        Stream.flatMap((response) => Stream.fromIterable(response.events)),
        Stream.filter((event) => event.type === "Delete" && event.kv.key.toString() === predecessor),
        Stream.runHead,
        Effect.map(Option.isSome),
        // A dropped watch just means "look again".
        Effect.catchTag("WatchEnded", () => Effect.succeed(false))
      )
    }
  }).pipe(Effect.withSpan("EtcdSeq.lock", { attributes: { prefix } }))
