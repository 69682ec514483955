/**
 * Each member's shards in a view: the pure plan (shardPlan.ts) of the members that declared the group's number of
 * shards, by their weights, draining members left out, with the operator's controls (shardControls.ts) applied;
 * computed once per view, number of shards and controls, shared by every runner and observer in the process.
 */
import type { GroupControls } from "./controlsWatch.js"
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

/** A plan both ways: by member name, and each shard's owner by name (`undefined`: nobody runs it, paused). */
interface Plans {
  readonly byMember: Planned
  readonly owners: ShardPlan.ControlledPlan
}

/** The controls in effect when none are known (a group nobody controls). */
const noControls: Pick<GroupControls, "controls" | "previous" | "drains" | "text"> = {
  controls: { pins: new Map(), paused: new Set(), frozen: false },
  previous: undefined,
  drains: new Set(),
  text: ""
}

type Inputs = Pick<GroupControls, "controls" | "previous" | "drains" | "text">

/** One plan per view, number of shards and controls, computed once for all the members of a client that hold them. */
const plans = new WeakMap<View, Map<string, Plans>>()

/**
 * The last plans made in this process, by member set: the members of one group on several clients hold views of one
 * member set, and a plan of a thousand members is the costliest step of a view change, which each client would pay again.
 */
const recent = new Map<string, Plans>()
const recentMax = 16

const plansOf = (view: View, shards: number, inputs: Inputs): Plans => {
  let byKey = plans.get(view)
  if (byKey === undefined) plans.set(view, byKey = new Map())
  const known = byKey.get(`${shards}:${inputs.text}`)
  if (known !== undefined) return known
  // Only the members that declared this number run the group's shards: one that has not (yet), or runs another
  // number, changes nobody's plan. By name, not id: a new incarnation of a member with an instance takes over its
  // predecessor's shards (a drain is the incarnation's: by id).
  const members: Array<ShardPlan.PlanMember> = view.members.flatMap((m) =>
    m.shards === shards
      ? [{ id: m.name, weight: m.weight, draining: inputs.drains.has(m.id), instance: m.instance }]
      : []
  )
  const key = `${shards}:${inputs.text}:${
    members.map((m) => `${m.id}${m.weight === undefined ? "" : `*${m.weight}`}${m.draining ? "-" : ""}`).join(",")
  }`
  let planned = recent.get(key)
  if (planned === undefined) {
    const owners = ShardPlan.weightedPlan(members, shards, inputs.controls, inputs.previous)
    const byMember = new Map<string, Array<number>>()
    owners.forEach((owner, shard) => {
      if (owner === undefined) return
      const list = byMember.get(owner)
      if (list === undefined) byMember.set(owner, [shard])
      else list.push(shard)
    })
    planned = { byMember, owners }
  }
  // Most recently used last; the oldest goes.
  recent.delete(key)
  recent.set(key, planned)
  if (recent.size > recentMax) recent.delete(recent.keys().next().value!)
  byKey.set(`${shards}:${inputs.text}`, planned)
  return planned
}

/** Each shard's owner in the same plan, by member name; `undefined` for a paused shard (or no member at all). */
export const ownersOf = (view: View, shards: number, controls: Inputs = noControls): ShardPlan.ControlledPlan =>
  plansOf(view, shards, controls).owners
