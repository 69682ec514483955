/**
 * The group handover of `runAssigned({ exclusive: "group" })`.
 *
 * Each member publishes, under its lease, `<group>/handover/<member id>` = the revision of the newest view whose
 * assignment it holds: "I run no work of a view older than this". Work of view V starts only after every live member
 * has published at least V. Members that left are covered: a leave deletes the member's handover key with its member
 * key, and a lost lease takes both with it and removes them from the view, so nobody waits for them.
 */
import { Effect, type Scope, Stream, SubscriptionRef } from "effect"
import type { IKeyValue } from "etcd3"
import type { EtcdRequestFailed, EtcdUnavailable } from "../EtcdSeqError.js"
import * as Keys from "./keys.js"
import { type Connection, request } from "./request.js"
import { backoff } from "./retry.js"
import type { View } from "./view.js"
import { watchPrefix } from "./watch.js"

/** Every member's published revision, followed by one watch per client and group. */
export interface HandoverWatch {
  readonly published: SubscriptionRef.SubscriptionRef<ReadonlyMap<string, number>>
}

const entry = (prefix: string, kv: IKeyValue) =>
  Keys.decodeHandover(prefix, { key: kv.key.toString(), value: kv.value.toString(), lease: kv.lease })

const read = (connection: Connection, prefix: string) =>
  request(connection, "range", (client) => client.getAll().prefix(prefix).exec()).pipe(
    Effect.map((response) => {
      const published = new Map<string, number>()
      for (const kv of response.kvs) {
        const decoded = entry(prefix, kv)
        if (decoded !== undefined) published.set(decoded.id, decoded.revision)
      }
      return { revision: Number(response.header.revision), published }
    })
  )

/** Follows every member's published revision for the life of the scope. */
export const watch = (
  connection: Connection,
  group: string
): Effect.Effect<HandoverWatch, EtcdUnavailable | EtcdRequestFailed, Scope.Scope> =>
  Effect.gen(function*() {
    const prefix = Keys.handoverPrefix(group)
    const initial = yield* read(connection, prefix)
    const published = yield* SubscriptionRef.make<ReadonlyMap<string, number>>(initial.published)

    const follow = (from: number): Effect.Effect<never, EtcdUnavailable | EtcdRequestFailed> =>
      watchPrefix(connection, prefix, from).pipe(
        Stream.runForEach((response) =>
          SubscriptionRef.update(published, (map) => {
            const next = new Map(map)
            for (const event of response.events) {
              // Only a member speaks for itself: a value not bound to the lease its key names is no promise, and
              // it replaces whatever the key held before.
              const decoded = event.type === "Put" ? entry(prefix, event.kv) : undefined
              const id = event.kv.key.toString().slice(prefix.length)
              if (decoded !== undefined) next.set(decoded.id, decoded.revision)
              else next.delete(id)
            }
            return next
          })
        ),
        // Whatever ended the watch (a drop, a compaction), a fresh read is the simple, safe restart.
        Effect.catchTag("WatchEnded", () =>
          read(connection, prefix).pipe(
            Effect.tap((fresh) => SubscriptionRef.set(published, fresh.published)),
            Effect.flatMap((fresh) => follow(fresh.revision + 1))
          )),
        Effect.zipRight(Effect.never)
      )
    yield* follow(initial.revision + 1).pipe(
      Effect.retry(backoff),
      Effect.forkScoped
    )
    return { published }
  })

/** Says "I hold no work of views older than `revision`", under the member's lease. */
export const publish = (
  connection: Connection,
  group: string,
  holder: { readonly id: string; readonly leaseId: string },
  revision: number
): Effect.Effect<void, EtcdUnavailable | EtcdRequestFailed> =>
  request(
    connection,
    "handover.put",
    (client) => client.put(Keys.handoverKey(group, holder.id)).value(String(revision)).lease(holder.leaseId).exec(),
    // Abandoned in flight, the put could land after the leave's delete: a key left under a lease others keep alive.
    { completes: true }
  ).pipe(Effect.asVoid)

/** Waits until every member of the current view has published at least `revision`. */
export const awaitAll = (
  view: SubscriptionRef.SubscriptionRef<View>,
  handover: HandoverWatch,
  revision: number
): Effect.Effect<void> =>
  Stream.zipLatest(view.changes, handover.published.changes).pipe(
    Stream.filter(([current, map]) => current.members.every((m) => (map.get(m.id) ?? 0) >= revision)),
    Stream.runHead,
    Effect.asVoid
  )
