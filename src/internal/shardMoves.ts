/**
 * Moving shards without a gap, a few at a time: from the owners in effect towards a target plan (`weightedPlan`'s),
 * as a pure step the runtime repeats whenever the view, the controls or the moves in flight change. Pure: no etcd, no
 * effects, no clock (the settle window's rule takes the time as an argument).
 *
 * A move is a handover between two live members: the previous owner stops the shard, the new one starts it once the
 * previous owner's claim is gone, and the move stays in flight until the runtime says it is complete (the new owner
 * ran the shard for the settle window: `settled`). What is not a move, and so happens at once whatever the policy:
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
 * draining member's shards once, straight to its final owner).
 */
import type { ControlledPlan } from "./shardPlan.js"

/** A shard's handover in flight. */
export interface Move {
  /** The member that ran the shard, and stops it. */
  readonly from: string
  /** The member that runs it now (the shard's owner in the step's `owners`). */
  readonly to: string
  /**
   * When `to` started running the shard, in the runtime's monotonic milliseconds; absent until it has. The settle
   * window counts from here (`settled`).
   */
  readonly runningSince?: number | undefined
}

/** The moves in flight, by shard number. */
export type InFlight = ReadonlyMap<number, Move>

/** The group-wide policy for moves. */
export interface MovePolicy {
  /** The most moves in flight touching one member (leaving it or joining it): an integer >= 1, or `Infinity`. */
  readonly maxMoves: number
  /** How long a move's new owner runs the shard before the move is complete, in milliseconds (see `settled`). */
  readonly settleMillis: number
}

/** What `step` reads. */
export interface StepInput {
  /** The owners in effect: the previous step's `owners` (all `undefined`, or empty, at the start). */
  readonly current: ControlledPlan
  /** Where the shards should end up: `weightedPlan` for the current view and controls. Its length is the shards'. */
  readonly target: ControlledPlan
  /** The moves in flight, as the previous step left them less those the runtime saw complete. */
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

  // --- Moves in flight: kept unless the shard is paused or its new owner is gone ---
  for (let s = 0; s < target.length; s++) {
    const now = current[s]
    const want = target[s]
    const move = inFlight.get(s)
    if (want === undefined || now === undefined || !live.has(now)) {
      // Paused, or orphaned: at once, whatever was in flight.
      owners[s] = want
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

// --- The settle window: when a move is complete ---

/** The moves still in flight at `now`: those whose new owner has not run the shard for `settleMillis` yet. */
export const settled = (inFlight: InFlight, now: number, settleMillis: number): InFlight => {
  const out = new Map<number, Move>()
  for (const [s, move] of inFlight) {
    if (move.runningSince === undefined || move.runningSince + settleMillis > now) out.set(s, move)
  }
  return out
}

/** When the next move in flight completes, or `undefined` if none has started running: the runtime's next wake-up. */
export const nextSettle = (inFlight: InFlight, settleMillis: number): number | undefined => {
  let next: number | undefined
  for (const move of inFlight.values()) {
    if (move.runningSince !== undefined && (next === undefined || move.runningSince + settleMillis < next)) {
      next = move.runningSince + settleMillis
    }
  }
  return next
}
