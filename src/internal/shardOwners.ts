/**
 * Each member's shards in a view: the pure plan (shardPlan.ts) of the members that declared the group's number of
 * shards, computed once per view and member set, shared by every runner and observer in the process.
 */
import * as ShardPlan from "./shardPlan.js"
import type { View } from "./view.js"

/** The most shards a group may have. */
const maxShards = 65_536

/** Why `shards` is not a number of shards, or `undefined` when it is. */
export const invalidShards = (shards: unknown): string | undefined =>
  typeof shards !== "number" || !Number.isInteger(shards)
    ? `${String(shards)} is not an integer`
    : shards < 1 || shards > maxShards
    ? `must be between 1 and ${maxShards}, got ${shards}`
    : undefined

/** A plan as the runners read it: each member's shards (ascending), by member name (kept across incarnations). */
type Planned = ReadonlyMap<string, ReadonlyArray<number>>

/** One plan per view and number of shards, computed once for all the members of a client that hold the view. */
const plans = new WeakMap<View, Map<number, Planned>>()

/**
 * The last plans made in this process, by member set: the members of one group on several clients hold views of one
 * member set, and a plan of a thousand members is the costliest step of a view change, which each client would pay again.
 */
const recent = new Map<string, Planned>()
const recentMax = 16

/**
 * Each member's shards in `view` (by name), among the members that declared `shards`, the plan computed once per view
 * and member set.
 */
export const planOf = (view: View, shards: number): Planned => {
  let byCount = plans.get(view)
  if (byCount === undefined) plans.set(view, byCount = new Map())
  const known = byCount.get(shards)
  if (known !== undefined) return known
  // Only the members that declared this number run the group's shards: one that has not (yet), or runs another
  // number, changes nobody's plan. By name, not id: a new incarnation of a member with an instance takes over its
  // predecessor's shards.
  const ids = view.members.flatMap((m) => m.shards === shards ? [m.name] : [])
  const key = `${shards}:${ids.join(",")}`
  let planned = recent.get(key)
  if (planned === undefined) {
    const byMember = new Map<string, Array<number>>()
    ShardPlan.plan(ids, shards).forEach((owner, shard) => {
      const list = byMember.get(owner)
      if (list === undefined) byMember.set(owner, [shard])
      else list.push(shard)
    })
    planned = byMember
  }
  // Most recently used last; the oldest goes.
  recent.delete(key)
  recent.set(key, planned)
  if (recent.size > recentMax) recent.delete(recent.keys().next().value!)
  byCount.set(shards, planned)
  return planned
}
