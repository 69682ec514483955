/**
 * Moving shards without a gap, a few at a time: from the owners in effect towards a target plan, as a pure step the
 * runtime (runShards.ts) repeats whenever the view or the claims change. Pure: no etcd, no effects, no clock (the
 * settle window's rule takes the time as an argument).
 *
 * A move is a handover between two live members, read from the shard's claims (`fromClaims`), which every member
 * follows: the move is in flight from when the new owner's claim waits behind the previous owner's until the previous
 * owner, which runs the shard until then, has stopped it and released its claim. What is not a move, and so happens at
 * once whatever the policy:
 *
 * - a shard whose owner is gone (not in the group) or that had none goes straight to its target owner: there is
 *   nobody to hand over from, and holding it back would leave it unrun;
 * - a shard whose target is no owner (paused) stops at once, in flight or not.
 *
 * The policy's `maxMoves` bounds the moves in flight that touch a member, counting both directions: each move counts
 * once against the member it leaves and once against the member it joins. So a member never stops more than
 * `maxMoves` shards for handover at once, and never starts more than that many taken from others (a member that
 * joins does not pull in all its shards at once, even though each comes from a different member). Any `maxMoves`
 * >= 1 lets the moves converge: with none in flight, every pending move can start.
 *
 * A move always goes to the shard's target owner, never to a stop on the way, and a shard in flight waits for its
 * move to complete before it moves again: while the target holds, no shard moves twice (a drain moves each of the
 * draining member's shards once, straight to its final owner). But a move whose target became its old owner again
 * is off: the holder keeps the shard and the claimant withdraws its claim (every member reads it so from the same
 * claims), rather than a handover there and back.
 *
 * The settle window (`settle`) merges a burst of joins and leaves into one change of the target: the plan a member
 * acts on changes only once the member set has been unchanged for the window. A member gone meanwhile is not waited
 * for (`targetOf`): its shards go to their owners in the newest plan at once.
 */
import type { ControlledPlan } from "./shardPlan.js"

/** A shard's handover in flight. */
interface Move {
  /** The member that ran the shard, and stops it. */
  readonly from: string
  /** The member that runs it now (the shard's owner in the step's `owners`). */
  readonly to: string
}

/** The moves in flight, by shard number. */
export type InFlight = ReadonlyMap<number, Move>

/** The group-wide policy for moves. */
export interface MovePolicy {
  /** The most moves in flight touching one member (leaving it or joining it): an integer >= 1, or `Infinity`. */
  readonly maxMoves: number
  /** How long the member set must stay unchanged before the plan acted on follows it, in milliseconds (`settle`). */
  readonly settleMillis: number
}

/** What `step` reads. */
export interface StepInput {
  /** The owners in effect: the previous step's `owners` (all `undefined`, or empty, at the start). */
  readonly current: ControlledPlan
  /** Where the shards should end up: `weightedPlan` for the current view and controls. Its length is the shards'. */
  readonly target: ControlledPlan
  /** The moves in flight: as the previous step left them less those complete, or as the claims show them. */
  readonly inFlight: InFlight
  /** The members in the group, draining ones included: a shard whose owner is not among them is orphaned. */
  readonly live: ReadonlySet<string>
  readonly policy: Pick<MovePolicy, "maxMoves">
}

/** What `step` decides. */
export interface Step {
  /** The owners to run the shards now. */
  readonly owners: ControlledPlan
  /** The moves in flight now: those still under way, and those started by this step. */
  readonly inFlight: InFlight
  /** The shards whose move this step started, ascending. */
  readonly started: ReadonlyArray<number>
}

/** Why `maxMoves` is not a policy's bound, or `undefined` when it is (for the options' validation). */
export const invalidMaxMoves = (maxMoves: unknown): string | undefined =>
  typeof maxMoves === "number" && (maxMoves === Infinity || (Number.isInteger(maxMoves) && maxMoves >= 1))
    ? undefined
    : `must be an integer >= 1 or Infinity, got ${String(maxMoves)}`

/**
 * The next owners, from the owners in effect towards the target, with at most `maxMoves` moves in flight touching a
 * member (an invalid bound counts as 1, so that the moves still converge). Pending moves start in shard order, so
 * that every member computing the step from the same input gets the same result.
 */
export const step = (input: StepInput): Step => {
  const { current, inFlight, live, target } = input
  const max = invalidMaxMoves(input.policy.maxMoves) === undefined ? input.policy.maxMoves : 1
  const owners: Array<string | undefined> = new Array(target.length)
  const kept = new Map<number, Move>()
  const busy = new Map<string, number>()
  const touch = (member: string) => busy.set(member, (busy.get(member) ?? 0) + 1)
  const pending: Array<number> = []

  // --- Moves in flight: kept unless the shard is paused, its new owner is gone, or the target is its old owner ---
  for (let s = 0; s < target.length; s++) {
    const now = current[s]
    const want = target[s]
    const move = inFlight.get(s)
    if (want === undefined || now === undefined || !live.has(now)) {
      // Paused, or orphaned: at once, whatever was in flight.
      owners[s] = want
    } else if (move !== undefined && want === move.from && live.has(move.from)) {
      // The target went back to the member still holding the shard (a plan that changed before the move completed,
      // or a claim etcd applied late): the move is off, the holder keeps the shard and the claimant withdraws.
      owners[s] = move.from
    } else if (move !== undefined) {
      // Even if the target changed meanwhile: the shard moves again once this move is complete, not halfway.
      owners[s] = now
      kept.set(s, move)
      if (live.has(move.from)) touch(move.from)
      touch(now)
    } else {
      owners[s] = now
      if (now !== want) pending.push(s)
    }
  }

  // --- New moves, while both ends have room ---
  const started: Array<number> = []
  for (const s of pending) {
    const from = owners[s]!
    const to = target[s]!
    if ((busy.get(from) ?? 0) >= max || (busy.get(to) ?? 0) >= max) continue
    touch(from)
    touch(to)
    owners[s] = to
    kept.set(s, { from, to })
    started.push(s)
  }
  return { owners, inFlight: kept, started }
}

// --- The runtime's inputs: the claims, the settle window ---

/** A shard's claims as `fromClaims` reads them: oldest (the holder) first. */
export interface ClaimOf {
  /** The claiming member's id. */
  readonly owner: string
}

/**
 * The owners in effect and the moves in flight, as the claims show them, in the shape `step` reads: a shard held by a
 * live member with a live other member's claim next in line is in flight from the holder to that member (whose it is
 * now, for `step`); a shard held by a live member otherwise is the holder's; a shard with no claim, or whose holder
 * is not live (dead: its claims go with its lease), has no owner in effect. `nameOf` gives a live member's name from
 * its id (`undefined`: not live); plans name members by name.
 */
export const fromClaims = (
  shards: number,
  claims: ReadonlyMap<number, ReadonlyArray<ClaimOf>>,
  nameOf: (id: string) => string | undefined
): { readonly current: ControlledPlan; readonly inFlight: InFlight } => {
  const current: Array<string | undefined> = new Array(shards).fill(undefined)
  const inFlight = new Map<number, Move>()
  for (const [s, list] of claims) {
    if (s < 0 || s >= shards || list.length === 0) continue
    const holder = nameOf(list[0]!.owner)
    const next = list.length > 1 ? nameOf(list[1]!.owner) : undefined
    if (holder !== undefined && next !== undefined && next !== holder) {
      current[s] = next
      inFlight.set(s, { from: holder, to: next })
    } else {
      current[s] = holder
    }
  }
  return { current, inFlight }
}

/**
 * The target: the plan of the member set acted on (`acted`), but for the shards it gives to members no longer in the
 * group, which take their owner in the newest plan (`latest`) at once: a gone member is never waited for.
 */
export const targetOf = (acted: ControlledPlan, latest: ControlledPlan, live: ReadonlySet<string>): ControlledPlan =>
  acted === latest ? acted : latest.map((owner, s) => {
    const planned = acted[s]
    return planned !== undefined && live.has(planned) ? planned : owner
  })

/** The settle window's state: the member set acted on, and the newest with when it was first seen. */
export interface Settling<A> {
  /** What the member acts on (its plan), `undefined` until a member set stayed unchanged for the window. */
  readonly acting: A | undefined
  readonly actingKey: string | undefined
  readonly seen: A
  readonly seenKey: string
  /** When the newest member set was first seen, in the runtime's milliseconds. */
  readonly since: number
}

/**
 * The settle window: the member set (`key`, and what to act on for it) seen at `now`. What the member acts on follows
 * the newest member set once that has been unchanged for `settleMillis` (at once when it is 0); `wakeAt` is when to
 * look again, while the newest is not yet acted on. A first look counts as a change: a member starting waits the
 * window too, as the others do for its join.
 */
export const settle = <A>(
  state: Settling<A> | undefined,
  key: string,
  value: A,
  now: number,
  settleMillis: number
): { readonly state: Settling<A>; readonly wakeAt: number | undefined } => {
  const since = state === undefined || state.seenKey !== key ? now : state.since
  const due = now - since >= settleMillis
  const next: Settling<A> = {
    acting: due || state?.actingKey === key ? value : state?.acting,
    actingKey: due ? key : state?.actingKey,
    seen: value,
    seenKey: key,
    since
  }
  return { state: next, wakeAt: next.actingKey === key ? undefined : since + settleMillis }
}
