/**
 * `EtcdSeq.observe`: a group seen from outside, without joining it. The members come from the group watch a member
 * of the group on the same client uses; the handover values, shard claims, shard controls and index locks from the
 * client's shared watches of them. What the group waits for is a pure function of them (`waiting`).
 */
import { Effect, RcMap, type Scope, Stream } from "effect"
import type { GroupView, IndexLock, Member, ShardControls, ShardOwner, ShardsView } from "../GroupView.js"
import type * as Claims from "./claims.js"
import type { Shared } from "./client.js"
import type { GroupControls } from "./controlsWatch.js"
import type * as Api from "./etcd/api.js"
import type * as Lock from "./lock.js"
import { invalidShards, ownersOf } from "./shardOwners.js"
import { weightOf } from "./shardPlan.js"
import type { View } from "./view.js"

/** The members of a view as `EtcdSeq.members` lists them. */
export const membersOf = (view: View): ReadonlyArray<Member> =>
  view.members.map((e, index): Member => ({
    id: e.id,
    instance: e.instance,
    metadata: e.metadata,
    index,
    joinRevision: e.createRevision,
    weight: weightOf({ id: e.name, weight: e.weight })
  }))

/** The controls as `GroupView` shows them. */
const controlsOf = (controls: GroupControls): ShardControls => ({
  pins: [...controls.controls.pins].sort(([a], [b]) => a - b).map(([shard, to]) => ({ shard, to })),
  paused: [...controls.controls.paused].sort((a, b) => a - b),
  frozen: controls.controls.frozen,
  frozenOwners: controls.previous?.map((o) => o ?? null)
})

// --- The view, and what it waits for -------------------------------------------------------------------------------

const lockViews = (locks: Lock.Locks): ReadonlyArray<IndexLock> =>
  [...locks.byNumber].sort(([a], [b]) => a - b).map(([index, [holder, ...waiting]]) => ({
    index,
    holder: holder!.owner,
    fence: holder!.createRevision,
    waiting: waiting.map((c) => c.owner)
  }))

const shardsView = (view: View, claims: Claims.Claims, controls: GroupControls): ShardsView | undefined => {
  // The number the oldest member runs that a member may run (a record may declare anything: a writer of another
  // version, or by hand).
  const shards = view.members.find((m) => invalidShards(m.shards) === undefined)?.shards
  if (shards === undefined) return undefined
  const idOf = new Map(view.members.map((m) => [m.name, m.id]))
  const planned = ownersOf(view, shards, controls)
  const owners = Array.from({ length: shards }, (_, shard): ShardOwner => {
    const [holder, ...waiting] = claims.byNumber.get(shard) ?? []
    const name = planned[shard]
    return {
      shard,
      planned: name === undefined ? undefined : idOf.get(name),
      holder: holder?.owner,
      fence: holder?.createRevision,
      waiting: waiting.map((c) => c.owner)
    }
  })
  return { shards, owners }
}

/** What the group waits for, one line each: empty once it converged. */
const waitingOf = (
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
    if (
      owner.holder !== owner.planned &&
      !(owner.holder === undefined && owner.planned !== undefined && parked.has(owner.planned))
    ) {
      lines.push(
        `shard ${owner.shard}: planned for ${owner.planned ?? "nobody (paused)"}, held by ${owner.holder ?? "nobody"}`
      )
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
    const locks = yield* RcMap.get(shared.locks, group)
    const controls = yield* RcMap.get(shared.controls, group)
    let last: string | undefined
    return Stream.zipLatestAll(
      watch.view.changes,
      handover.published.changes,
      claims.latest.changes,
      locks.latest.changes,
      controls.latest.changes
    ).pipe(
      Stream.map(([view, published, claimed, held, controlled]): GroupView => {
        const lockList = lockViews(held)
        const shards = shardsView(view, claimed, controlled)
        return {
          group,
          revision: view.revision,
          members: membersOf(view),
          locks: lockList,
          handover: [...published].map(([id, revision]) => ({ id, revision })),
          shards,
          controls: controlsOf(controlled),
          // A member's leave deletes its drain key too, but through another watch: a drain shows with its member only.
          drains: view.members.flatMap((m) => controlled.drains.has(m.id) ? [m.id] : []),
          waiting: waitingOf(view, published, lockList, shards)
        }
      }),
      // One GroupView per change an operator can see: the five sources move together on many events.
      Stream.filter((groupView) => {
        const text = JSON.stringify(groupView)
        if (text === last) return false
        last = text
        return true
      })
    )
  })
