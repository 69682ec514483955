/**
 * Which member owns which shard: a pure function of the members (by id) and the number of shards, so that every
 * member holding one view computes the same owners. Pure: no etcd, no effects.
 *
 * The plan is built in three steps, each of which depends on hashes of member ids and shard numbers only, never on a
 * member's position in the view (positions shift whenever an older member leaves):
 *
 * 1. Applications: every member applies to its `cap` best shards by rendezvous score (`score(member, shard)`), and a
 *    shard goes to its best applicant. No member can get more than `cap`, and a member that joins or leaves changes
 *    the owners of the shards it applied to, and of no other: this step has no chains.
 * 2. Shards nobody won go, in hash order, to their best-scoring member with room (members holding none first, when
 *    every member must hold one).
 * 3. When every member must hold a shard (shards >= members), a member still holding none takes its best-scoring
 *    shard from a member holding more than one.
 *
 * With weights (`weightedPlan`), the same steps with each member's cap `⌈1.25 · shards · w / W⌉`, contests by
 * weighted rendezvous, and a 4th step: every member whose share is 8 shards or more gets at least three quarters of
 * it. All weights alike, it is exactly `plan`. Draining members are left out; operator controls (shardControls.ts)
 * apply on top; bounded moves towards the plan are shardMoves.ts.
 *
 * Balance is guaranteed: at most `cap = ⌈1.25 · shards / members⌉` per member, at least one when shards >= members.
 * Movement (measured in the property tests and the README): a change moves about the ideal (`shards / (n + 1)` on a
 * join) when members hold many shards each; when they hold only a few (1 to 4) the capacity bounds make steps 2 and
 * 3 move more.
 */

import * as Controls from "./shardControls.js"

/** 32-bit FNV-1a of a string's UTF-16 code units (member ids are ASCII). */
const fnv = (text: string): number => {
  let hash = 0x811c9dc5
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i)
    hash = Math.imul(hash, 0x01000193) >>> 0
  }
  return hash >>> 0
}

/** murmur3's 32-bit finalizer: every input bit reaches every output bit. */
const mix = (value: number): number => {
  let h = value >>> 0
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b) >>> 0
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35) >>> 0
  h ^= h >>> 16
  return h >>> 0
}

/** Rendezvous score of a shard for a member (given the member's id hash). */
const score = (memberHash: number, shard: number): number =>
  mix((memberHash ^ Math.imul(shard + 0x9e3779b9, 0x85ebca6b)) >>> 0)

/** The most shards one member may own. */
export const cap = (shards: number, members: number): number => Math.ceil((1.25 * shards) / members)

/** The most shards a member of weight `weight` may own, when the members' weights sum to `total`. */
export const weightedCap = (shards: number, weight: number, total: number): number =>
  Math.ceil((1.25 * shards * weight) / total)

/**
 * Weighted rendezvous: a member's score for a shard scaled by its weight, as `w / -ln(u)` with `u` the raw score in
 * (0, 1). Over random shards, a member has the best weighted score with probability `w / W`. For one member it is
 * increasing in the raw score, so it ranks that member's shards as the raw score does.
 */
const weightedScore = (weight: number, raw: number): number => weight / -Math.log((raw + 0.5) / 4_294_967_296)

/** Each member's cap: `cap(shards, n)` for all when `weights` is `undefined` (all alike), else by weight. */
const capsOf = (weights: ReadonlyArray<number> | undefined, n: number, shards: number): Int32Array => {
  if (weights === undefined) return new Int32Array(n).fill(cap(shards, n))
  let total = 0
  for (const w of weights) total += w
  return Int32Array.from(weights, (w) => weightedCap(shards, w, total))
}

/** A plan: the id of each shard's owner, by shard number. */
export type Plan = ReadonlyArray<string>

/**
 * A plan with operator controls applied: the id of each shard's owner, by shard number, `undefined` for a shard
 * nobody runs (paused, or no members at all).
 */
export type ControlledPlan = ReadonlyArray<string | undefined>

/** A member as `weightedPlan` sees it. */
export interface PlanMember {
  /** The member's id in the plan (the runner uses the member's name, kept across incarnations). */
  readonly id: string
  /**
   * Its share of the shards relative to the others': a positive finite number, 1 when absent. A weight that is not
   * one counts as 1: every member computes the plan from the same records, so a bad record must not fail them all.
   */
  readonly weight?: number | undefined
  /** A draining member stays in the group but the plan gives it no shard (unless every member drains). */
  readonly draining?: boolean | undefined
  /** The member's instance name, if any: a pin may name it instead of the id. */
  readonly instance?: string | undefined
}

/** Why `weight` is not a member's weight, or `undefined` when it is (for the options' validation). */
export const invalidWeight = (weight: unknown): string | undefined =>
  typeof weight !== "number" || !Number.isFinite(weight) || weight <= 0
    ? `must be a positive finite number, got ${String(weight)}`
    : undefined

/** A member's weight as the plan uses it: its own when valid, else 1. */
export const weightOf = (member: PlanMember): number =>
  member.weight === undefined || invalidWeight(member.weight) !== undefined ? 1 : member.weight

/**
 * The members the plan gives shards to: those not draining; all of them when every member drains, since the shards
 * must run somewhere and a group that drains entirely is one about to stop (its shards stay where today's plan would
 * put them, rather than nowhere).
 */
export const eligible = (members: ReadonlyArray<PlanMember>): ReadonlyArray<PlanMember> => {
  const staying = members.filter((m) => m.draining !== true)
  return staying.length > 0 ? staying : members
}

/** Every shard by a member's score, best first (equal scores: the smaller shard first). */
const ranked = (memberHash: number, shards: number): Array<number> => {
  const scores = new Float64Array(shards)
  for (let s = 0; s < shards; s++) scores[s] = score(memberHash, s)
  const order = Array.from({ length: shards }, (_, s) => s)
  return order.sort((a, b) => scores[b]! - scores[a]! || a - b)
}

/** The `k` shards a member scores best, best first (but all of them in shard order when `k` >= `shards`). */
const best = (memberHash: number, shards: number, k: number): Array<number> => {
  if (k >= shards) return Array.from({ length: shards }, (_, s) => s)
  // A small sorted window when k is small (the common case: many members), a full sort otherwise. Both keep the
  // same `k`: by score, then the smaller shard first.
  if (k > 64) return ranked(memberHash, shards).slice(0, k)
  const window: Array<[number, number]> = []
  for (let s = 0; s < shards; s++) {
    const value = score(memberHash, s)
    if (window.length === k && value <= window[k - 1]![0]) continue
    let at = window.length === k ? k - 1 : window.length
    if (window.length < k) window.push([value, s])
    while (at > 0 && window[at - 1]![0] < value) {
      window[at] = window[at - 1]!
      at--
    }
    window[at] = [value, s]
  }
  return window.map(([, s]) => s)
}

/** The owners of `shards` shards among `members` (ids; their order does not matter), every member of weight 1. */
export const plan = (members: ReadonlyArray<string>, shards: number): Plan => {
  if (members.length === 0) return []
  return Array.from(assign(members, undefined, shards), (m) => members[m]!)
}

/**
 * The core of `plan` and `weightedPlan`: each shard's owner as a position in `members`. `weights` is `undefined` when
 * every member weighs the same: then every comparison is of raw scores and every cap is `cap(shards, n)`, so the
 * result is exactly the unweighted plan's, bit for bit (no float of a weight enters it).
 *
 * With weights, a contest between members for a shard is won by weighted rendezvous (`weightedScore`), under which a
 * member wins a shard with probability `w / W`; each member's own ranking of shards stays its raw ranking (a weight
 * scales all of one member's scores alike), so which shards a member applies to does not depend on weights at all,
 * only how many (its cap).
 */
const assign = (
  members: ReadonlyArray<string>,
  weights: ReadonlyArray<number> | undefined,
  shards: number
): Int32Array => {
  const n = members.length
  const hashes = members.map(fnv)
  const limits = capsOf(weights, n, shards)
  const owner = new Int32Array(shards).fill(-1)
  const load = new Int32Array(n)
  // A member's key for a shard: its raw score unweighted, its weighted score otherwise. Ties of keys fall back to
  // the raw score (a key rounds), then to `tieBreak`: so unweighted, the order is the raw score's, as it always was.

  // --- 1. Applications: each shard to its best applicant ---
  const top = new Float64Array(shards).fill(-1)
  const topRaw = new Float64Array(shards).fill(-1)
  for (let m = 0; m < n; m++) {
    for (const s of best(hashes[m]!, shards, limits[m]!)) {
      const raw = score(hashes[m]!, s)
      const value = weights === undefined ? raw : weightedScore(weights[m]!, raw)
      // Ties (equal scores) go to the member with the smaller id hash, then the smaller id: never to a position.
      if (
        value > top[s]! ||
        (value === top[s]! && (raw > topRaw[s]! || (raw === topRaw[s]! && tieBreak(members, hashes, m, owner[s]!) < 0)))
      ) {
        top[s] = value
        topRaw[s] = raw
        owner[s] = m
      }
    }
  }
  for (let s = 0; s < shards; s++) if (owner[s]! >= 0) load[owner[s]!]!++

  // --- 2. Shards nobody won: to their best member with room, in hash order ---
  const everyoneHolds = shards >= n
  const unplaced: Array<number> = []
  for (let s = 0; s < shards; s++) if (owner[s]! < 0) unplaced.push(s)
  unplaced.sort((a, b) => mix(a + 1) - mix(b + 1) || a - b)
  for (const s of unplaced) {
    let chosen = -1
    let chosenTier = -1
    let chosenScore = -1
    let chosenRaw = -1
    for (let m = 0; m < n; m++) {
      if (load[m]! >= limits[m]!) continue
      const tier = everyoneHolds && load[m] === 0 ? 1 : 0
      if (tier < chosenTier) continue
      const raw = score(hashes[m]!, s)
      const value = weights === undefined ? raw : weightedScore(weights[m]!, raw)
      if (
        tier > chosenTier || value > chosenScore ||
        (value === chosenScore && (raw > chosenRaw || (raw === chosenRaw && tieBreak(members, hashes, m, chosen) < 0)))
      ) {
        chosen = m
        chosenTier = tier
        chosenScore = value
        chosenRaw = raw
      }
    }
    owner[s] = chosen
    load[chosen]!++
  }

  // --- 3. Every member holds one (when shards >= members): the empty take from members holding more ---
  // A member's best shard is the same by raw or weighted score (its weight scales all its scores alike).
  if (everyoneHolds) {
    const empty: Array<number> = []
    for (let m = 0; m < n; m++) if (load[m] === 0) empty.push(m)
    empty.sort((a, b) => tieBreak(members, hashes, a, b))
    for (const m of empty) {
      let chosen = -1
      let chosenScore = -1
      for (let s = 0; s < shards; s++) {
        if (load[owner[s]!]! <= 1) continue
        const value = score(hashes[m]!, s)
        if (value > chosenScore) {
          chosen = s
          chosenScore = value
        }
      }
      load[owner[chosen]!]!--
      owner[chosen] = m
      load[m]!++
    }
  }

  // --- 4. Weighted only: every member with a share of 8 or more up to three quarters of it ---
  // A light member applies to few shards and loses those where a heavy member's weighted score beats it; a heavy one
  // applies to nearly all, so step 2 has little left to give back. Each member below ⌈0.75 · share⌉ takes, best
  // score first, shards of members above their share (and above one). Takers stay under their share, so a member
  // passed over as a donor never becomes one: one pass each. Not for smaller shares, where rounding would make it move
  // shards on every change; not unweighted, where the plan stays exactly as it was.
  if (weights !== undefined) {
    let total = 0
    for (const w of weights) total += w
    const share = (m: number) => (shards * weights[m]!) / total
    const short: Array<number> = []
    for (let m = 0; m < n; m++) if (share(m) >= floorFrom && load[m]! < Math.ceil(0.75 * share(m))) short.push(m)
    short.sort((a, b) => tieBreak(members, hashes, a, b))
    for (const m of short) {
      const floor = Math.ceil(0.75 * share(m))
      for (const s of ranked(hashes[m]!, shards)) {
        if (load[m]! >= floor) break
        const from = owner[s]!
        if (from === m || load[from]! <= Math.max(share(from), 1)) continue
        load[from]!--
        owner[s] = m
        load[m]!++
      }
    }
  }
  return owner
}

/**
 * The owners of `shards` shards among `members`, by weight, draining members left out (see `eligible`), with the
 * operator's `controls` applied last (see `Controls.apply`: pins, pauses, freeze against `previous`, the owners in
 * effect). Always `shards` long; every entry `undefined` when there are no members.
 *
 * Every member of weight 1 (or all of one weight) and no member draining: exactly `plan(ids, shards)`, so members
 * that set no weight see the plan they always saw. Member `m` gets at most `⌈1.25 · shards · w_m / W⌉` shards
 * before pins (`W` the sum of the eligible members' weights), and at least one when `shards` >= their number.
 */
export const weightedPlan = (
  members: ReadonlyArray<PlanMember>,
  shards: number,
  controls?: Controls.Controls,
  previous?: ControlledPlan
): ControlledPlan => {
  const live = eligible(members)
  if (live.length === 0) return Array.from({ length: shards }, () => undefined)
  const ids = live.map((m) => m.id)
  const weights = live.map(weightOf)
  const uniform = weights.every((w) => w === weights[0])
  const base = Array.from(assign(ids, uniform ? undefined : weights, shards), (m) => ids[m]!)
  return controls === undefined ? base : Controls.apply(base, live, controls, previous)
}

/** The smallest weighted share (in shards) that step 4 raises to three quarters. */
const floorFrom = 8

/** Orders two members by id hash, then id: a total order that does not depend on positions in the view. */
const tieBreak = (members: ReadonlyArray<string>, hashes: ReadonlyArray<number>, a: number, b: number): number =>
  b < 0
    ? -1
    : a < 0
    ? 1
    : hashes[a]! - hashes[b]! || (members[a]! < members[b]! ? -1 : members[a]! > members[b]! ? 1 : 0)

/** The shards of `member` in a plan, ascending. */
export const shardsOf = (owners: Plan, member: string): Array<number> => {
  const out: Array<number> = []
  for (let s = 0; s < owners.length; s++) if (owners[s] === member) out.push(s)
  return out
}
