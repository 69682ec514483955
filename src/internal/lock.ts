/**
 * An etcd lock per index (etcd's `concurrency.Mutex`): the lock key is `<prefix><member id>` written under the
 * member's lease, contenders are ordered by create revision, and each waits only for the delete of its direct
 * predecessor, so a release wakes one waiter, not a herd. A dead holder's key vanishes with its lease.
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
  holder: { readonly id: string; readonly leaseId: string }
): Effect.Effect<number, EtcdUnavailable | EtcdRequestFailed, Scope.Scope> =>
  Effect.gen(function*() {
    const key = prefix + holder.id
    const revision = yield* Effect.acquireRelease(
      request(connection, "lock.put", (client) =>
        client.if(key, "Create", "==", 0)
          .then(client.put(key).value("").lease(holder.leaseId))
          .else(client.get(key))
          .commit()).pipe(
          Effect.map((txn) =>
            txn.succeeded
              ? Number(txn.header.revision)
              : Number(txn.responses[0]?.response_range?.kvs[0]?.create_revision ?? txn.header.revision)
          )
        ),
      () =>
        request(connection, "lock.delete", (client) => client.delete().key(key).exec()).pipe(
          Effect.catchAll((e) => Effect.logWarning("lock release failed; it goes with the lease", e))
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
