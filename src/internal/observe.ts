/**
 * `EtcdSeq.observe`: a group seen from outside, without joining it. The members come from the group watch a member
 * of the group on the same client uses; the handover values and shard claims from the client's shared watches of
 * them; the index locks from a watch of their own (members never follow locks as a whole: each waits for its
 * predecessor only). What the group waits for is a pure function of the four (`waiting`).
 */
import { Effect, RcMap, type Scope, Stream, SubscriptionRef } from "effect"
import type { Member } from "../EtcdSeq.js"
import type { GroupView, IndexLock, ShardOwner, ShardsView } from "../GroupView.js"
import type * as Claims from "./claims.js"
import type { Shared } from "./client.js"
import * as Api from "./etcd/api.js"
import * as Keys from "./keys.js"
import * as PrefixCache from "./prefixCache.js"
import { planOf } from "./shards.js"
import type { View } from "./view.js"

/** The members of a view as `EtcdSeq.members` lists them. */
export const membersOf = (view: View): ReadonlyArray<Member> =>
  view.members.map((e, index): Member => ({
    id: e.id,
    instance: e.instance,
    metadata: e.metadata,
    index,
    joinRevision: e.createRevision
  }))

// --- Index locks --------------------------------------------------------------------------------------------------

interface Contender {
  readonly key: string
  readonly owner: string
  readonly createRevision: number
}

/** Every index's contenders, oldest (the holder) first, and the highest revision applied. */
interface Locks {
  readonly byIndex: ReadonlyMap<number, ReadonlyArray<Contender>>
  readonly seen: number
}

const indexOfKey = (prefix: string, key: string): number | undefined => {
  const rest = key.slice(prefix.length)
  const slash = rest.indexOf("/")
  return slash > 0 && /^(0|[1-9][0-9]{0,8})$/.test(rest.slice(0, slash)) ? Number(rest.slice(0, slash)) : undefined
}

const withContender = (locks: Map<number, ReadonlyArray<Contender>>, prefix: string, kv: Api.KeyValue) => {
  const index = indexOfKey(prefix, kv.key)
  if (index === undefined) return
  const owner = Keys.lockOwnerOfKey(`${prefix}${index}/`, kv.key, kv.lease)
  const others = (locks.get(index) ?? []).filter((c) => c.key !== kv.key)
  if (owner === undefined) return void locks.set(index, others)
  locks.set(
    index,
    [...others, { key: kv.key, owner, createRevision: kv.createRevision }].sort((a, b) =>
      a.createRevision - b.createRevision
    )
  )
}

const readLocks = (prefix: string, kvs: ReadonlyArray<Api.KeyValue>, revision: number): Locks => {
  const byIndex = new Map<number, ReadonlyArray<Contender>>()
  for (const kv of kvs) withContender(byIndex, prefix, kv)
  // Keys no lease holds leave an index with no contender.
  for (const [index, list] of byIndex) if (list.length === 0) byIndex.delete(index)
  return { byIndex, seen: revision }
}

const applyLocks = (prefix: string) => (state: Locks, events: ReadonlyArray<Api.Event>): Locks => {
  const byIndex = new Map(state.byIndex)
  let seen = state.seen
  for (const event of events) {
    seen = Math.max(seen, Api.eventRevision(event))
    if (event._tag === "Put") withContender(byIndex, prefix, event.kv)
    else {
      const index = indexOfKey(prefix, event.key)
      if (index !== undefined) byIndex.set(index, (byIndex.get(index) ?? []).filter((c) => c.key !== event.key))
    }
  }
  for (const [index, list] of byIndex) if (list.length === 0) byIndex.delete(index)
  return { byIndex, seen }
}

const followLocks = (api: Api.EtcdApi, group: string) =>
  Effect.gen(function*() {
    const prefix = Keys.locksPrefix(group)
    const latest = yield* SubscriptionRef.make<Locks>({ byIndex: new Map(), seen: 0 })
    const cache = yield* PrefixCache.follow(api, prefix, {
      initial: (kvs, revision) => readLocks(prefix, kvs, revision),
      reread: (_, kvs, revision) => readLocks(prefix, kvs, revision),
      apply: applyLocks(prefix),
      seen: (state) => state.seen
    }, { span: "EtcdSeq.locksWatch", onChange: (state) => SubscriptionRef.set(latest, state) })
    yield* SubscriptionRef.set(latest, cache.current())
    return latest
  })

// --- The view, and what it waits for -------------------------------------------------------------------------------

const lockViews = (locks: Locks): ReadonlyArray<IndexLock> =>
  [...locks.byIndex].sort(([a], [b]) => a - b).map(([index, [holder, ...waiting]]) => ({
    index,
    holder: holder!.owner,
    fence: holder!.createRevision,
    waiting: waiting.map((c) => c.owner)
  }))

const shardsView = (view: View, claims: Claims.Claims): ShardsView | undefined => {
  const shards = view.members.find((m) => m.shards !== undefined)?.shards
  if (shards === undefined) return undefined
  const idOf = new Map(view.members.map((m) => [m.name, m.id]))
  const planned = new Array<string>(shards)
  for (const [name, owned] of planOf(view, shards)) for (const shard of owned) planned[shard] = idOf.get(name)!
  const owners = Array.from({ length: shards }, (_, shard): ShardOwner => {
    const [holder, ...waiting] = claims.byShard.get(shard) ?? []
    return {
      shard,
      planned: planned[shard]!,
      holder: holder?.owner,
      fence: holder?.createRevision,
      waiting: waiting.map((c) => c.owner)
    }
  })
  return { shards, owners }
}

/** What the group waits for, one line each: empty once it converged. */
export const waitingOf = (
  view: View,
  published: ReadonlyMap<string, number>,
  locks: ReadonlyArray<IndexLock>,
  shards: ShardsView | undefined
): ReadonlyArray<string> => {
  const lines: Array<string> = []
  // The handover only counts where the group uses it: some member published.
  if (published.size > 0) {
    for (const m of view.members) {
      const revision = published.get(m.id)
      if (m.parked !== true && (revision ?? 0) < view.revision) {
        lines.push(`handover: view ${view.revision} waits for ${m.id} (published ${revision ?? "nothing"})`)
      }
    }
    const ids = new Set(view.members.map((m) => m.id))
    for (const [id, revision] of published) {
      if (!ids.has(id)) lines.push(`handover: ${id}, not a member, still promises ${revision}`)
    }
  }
  for (const lock of locks) {
    if (lock.waiting.length > 0) lines.push(`index ${lock.index}: ${lock.waiting.join(", ")} wait for ${lock.holder}`)
  }
  // A parked member's shards wait for its next incarnation: no one else may run them, so nothing to converge.
  const parked = new Set(view.members.flatMap((m) => m.parked === true ? [m.id] : []))
  for (const owner of shards?.owners ?? []) {
    if (owner.holder !== owner.planned && !(owner.holder === undefined && parked.has(owner.planned))) {
      lines.push(`shard ${owner.shard}: planned for ${owner.planned}, held by ${owner.holder ?? "nobody"}`)
    }
    if (owner.waiting.length > 0) {
      lines.push(`shard ${owner.shard}: ${owner.waiting.join(", ")} wait for ${owner.holder}`)
    }
  }
  return lines
}

/** The group's views from `shared`, the current one first, then every change. */
export const observe = (
  shared: Shared,
  group: string
): Effect.Effect<Stream.Stream<GroupView>, Api.RequestError, Scope.Scope> =>
  Effect.gen(function*() {
    const watch = yield* RcMap.get(shared.groups, group)
    const handover = yield* RcMap.get(shared.handovers, group)
    const claims = yield* RcMap.get(shared.claims, group)
    const locks = yield* followLocks(shared.api, group)
    let last: string | undefined
    return Stream.zipLatestAll(
      watch.view.changes,
      handover.published.changes,
      claims.latest.changes,
      locks.changes
    ).pipe(
      Stream.map(([view, published, claimed, held]): GroupView => {
        const lockList = lockViews(held)
        const shards = shardsView(view, claimed)
        return {
          group,
          revision: view.revision,
          members: membersOf(view),
          locks: lockList,
          handover: [...published].map(([id, revision]) => ({ id, revision })),
          shards,
          waiting: waitingOf(view, published, lockList, shards)
        }
      }),
      // One GroupView per change an operator can see: the four sources move together on many events.
      Stream.filter((groupView) => {
        const text = JSON.stringify(groupView)
        if (text === last) return false
        last = text
        return true
      })
    )
  })
