/**
 * The group handover of `runAssigned({ exclusive: "group" })`.
 *
 * Each member publishes, under its lease, `<group>/handover/<member id>` = the revision of the newest view whose
 * assignment it holds: "I run no work of a view older than this". Work of view V starts only after every live member
 * has published at least V, and no handover key of anyone else is left. Members that left are covered: a leave
 * deletes the member's handover key with its member key, and a lost lease takes both with it and removes them from
 * the view, so nobody waits for them long.
 */
import { Effect, type Scope, Stream, SubscriptionRef } from "effect"
import * as Api from "./etcd/api.js"
import * as Keys from "./keys.js"
import * as OwnedKeys from "./ownedKeys.js"
import * as PrefixCache from "./prefixCache.js"
import type { View } from "./view.js"

/** Every member's published revision, followed by one watch per client and group. */
export interface HandoverWatch {
  readonly published: SubscriptionRef.SubscriptionRef<ReadonlyMap<string, number>>
}

/** Every member's published revision, with the highest revision applied. */
interface Published {
  readonly map: ReadonlyMap<string, number>
  readonly seen: number
}

const decode = (prefix: string, kvs: ReadonlyArray<Api.KeyValue>, revision: number): Published => {
  const map = new Map<string, number>()
  for (const kv of kvs) {
    const entry = Keys.decodeHandover(prefix, kv)
    if (entry !== undefined) map.set(entry.id, entry.revision)
  }
  return { map, seen: revision }
}

const apply = (prefix: string) => (state: Published, events: ReadonlyArray<Api.Event>): Published => {
  const map = new Map(state.map)
  let seen = state.seen
  for (const event of events) {
    const key = Api.eventKey(event)
    seen = Math.max(seen, Api.eventRevision(event))
    // Only a member speaks for itself: a value not bound to the lease its key names is no promise, and it replaces
    // whatever the key held before.
    const entry = event._tag === "Put" ? Keys.decodeHandover(prefix, event.kv) : undefined
    if (entry !== undefined) map.set(entry.id, entry.revision)
    else map.delete(key.slice(prefix.length))
  }
  return { map, seen }
}

/** Follows every member's published revision for the life of the scope. */
export const watch = (
  api: Api.EtcdApi,
  group: string,
  sweep: OwnedKeys.Registry["sweep"]
): Effect.Effect<HandoverWatch, Api.RequestError, Scope.Scope> =>
  Effect.gen(function*() {
    const prefix = Keys.handoverPrefix(group)
    const published = yield* SubscriptionRef.make<ReadonlyMap<string, number>>(new Map())
    const cache = yield* PrefixCache.follow(
      api,
      prefix,
      OwnedKeys.sweeping({
        initial: (kvs, revision) => decode(prefix, kvs, revision),
        reread: (_, kvs, revision) => decode(prefix, kvs, revision),
        apply: apply(prefix),
        seen: (state) => state.seen
      }, sweep),
      {
        span: "EtcdSeq.handoverWatch",
        onChange: (state) => SubscriptionRef.set(published, state.map)
      }
    )
    yield* SubscriptionRef.set(published, cache.current().map)
    return { published }
  })

/**
 * Says "I hold no work of views older than `revision`", under the member's lease. A put completes when interrupted:
 * abandoned in flight, it could land after the leave's delete, a key left under a lease others keep alive.
 */
export const publish = (
  api: Api.EtcdApi,
  group: string,
  holder: { readonly id: string; readonly leaseId: string },
  revision: number
): Effect.Effect<void, Api.RequestError> =>
  Effect.asVoid(api.put(Keys.handoverKey(group, holder.id), String(revision), holder.leaseId))

/**
 * Waits until every member of the current view has published at least `revision`, and nobody outside the view holds
 * work: a member with an instance taken over by a new incarnation leaves the view without leaving, and its work runs
 * until its handover key goes (deleted when it stops, or with its lease).
 */
export const awaitAll = (
  view: SubscriptionRef.SubscriptionRef<View>,
  handover: HandoverWatch,
  revision: number
): Effect.Effect<void> =>
  Stream.zipLatest(view.changes, handover.published.changes).pipe(
    Stream.filter(([current, map]) => {
      // A parked member (it left, its place kept for its next incarnation) runs nothing, and publishes nothing.
      let publishing = 0
      for (const m of current.members) {
        if (m.parked === true) continue
        if ((map.get(m.id) ?? 0) < revision) return false
        publishing++
      }
      // Every member that publishes has a key in the map: any more keys are of someone outside the view.
      return map.size === publishing
    }),
    Stream.runHead,
    Effect.asVoid
  )
