/**
 * The operator's controls over the shard plan: pins, pauses and a freeze, stored elsewhere and passed in as data, and
 * applied after the balanced plan so that every member holding the same view and the same controls computes the same
 * owners. Pure: no etcd, no effects.
 *
 * Each control overrides only the shards it names (a freeze: only the shards whose owner would move), and the plan
 * beneath is computed as if there were no controls: setting or lifting a pin or a pause moves that one shard and no
 * other, and the caps of the plan bound the shards it places, not the shards pinned on top of it.
 *
 * Precedence, last wins: the plan's owner; a freeze keeps the previous owner; a pin names the owner; a pause names
 * none. So an operator can still pin a shard during a freeze (a deliberate move), and a pause stops a pinned shard.
 */

// The plan's shapes, as shardPlan.ts has them (which applies these controls: importing it back would be a cycle).
/** The id of each shard's owner, by shard number. */
type Plan = ReadonlyArray<string>
/** The same with controls applied: `undefined` for a shard nobody runs. */
type ControlledPlan = ReadonlyArray<string | undefined>
/** What the controls read of a member of the plan: its id, and its instance (a pin may name either). */
interface PlanMember {
  readonly id: string
  readonly instance?: string | undefined
}

/** The operator's controls, group-wide. */
export interface Controls {
  /**
   * Shard number to the member that must run it, by member id or instance name (an id match first). A pin to a
   * member that is not live for the plan (gone, or draining while others are not) is ignored until it is: the shard
   * stays with the plan's owner, so a pin never leaves a shard unrun. Numbers outside the shards are ignored.
   */
  readonly pins: ReadonlyMap<number, string>
  /** Shards nobody runs: their owner is `undefined`, pinned or not. */
  readonly paused: ReadonlySet<number>
  /**
   * No planned moves: each shard stays with its previous owner while that owner is live for the plan (not gone, not
   * draining); a shard whose previous owner is gone, drains, or was none (a new or just unpaused shard) goes to the
   * plan's owner, so a freeze never leaves a shard unrun and never blocks a drain.
   */
  readonly frozen: boolean
}

/** No controls: the plan as it is. */
export const none: Controls = { pins: new Map(), paused: new Set(), frozen: false }

/**
 * The owner `target` names among `live`: the member with that id, else the live member with that instance (the
 * smallest id if several claim it), else `undefined`.
 */
export const resolve = (live: ReadonlyArray<PlanMember>, target: string): string | undefined => {
  let byInstance: string | undefined
  for (const m of live) {
    if (m.id === target) return m.id
    if (m.instance === target && (byInstance === undefined || m.id < byInstance)) byInstance = m.id
  }
  return byInstance
}

/**
 * `base` (the plan among `live`, the members eligible for shards) with `controls` applied; `previous` is the owners
 * in effect before (read only under a freeze; a shard beyond its length had none).
 */
export const apply = (
  base: Plan,
  live: ReadonlyArray<PlanMember>,
  controls: Controls,
  previous?: ControlledPlan
): ControlledPlan => {
  const shards = base.length
  const ids = new Set(live.map((m) => m.id))
  const out: Array<string | undefined> = base.slice()
  if (controls.frozen && previous !== undefined) {
    for (let s = 0; s < shards && s < previous.length; s++) {
      const before = previous[s]
      if (before !== undefined && ids.has(before)) out[s] = before
    }
  }
  for (const [s, target] of controls.pins) {
    if (!Number.isInteger(s) || s < 0 || s >= shards) continue
    const owner = resolve(live, target)
    if (owner !== undefined) out[s] = owner
  }
  for (const s of controls.paused) if (Number.isInteger(s) && s >= 0 && s < shards) out[s] = undefined
  return out
}
