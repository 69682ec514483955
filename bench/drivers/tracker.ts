/**
 * Follows the Info of every member of a group, event-driven: each member's stream reports to `observe`, and a goal
 * ("every member in these slots holds an Info like this") completes when the last of them gets there. The time of
 * convergence is the time the last member reached the goal.
 */
import { Deferred, type Duration, Effect, Option } from "effect"
import type { Info } from "../../src/index.js"
import { nowMs } from "../measures/runtime.js"

export interface Outcome {
  /** Every member reached the goal within the bound. */
  readonly complete: boolean
  readonly expected: number
  readonly reached: number
  /** When the goal was set (ms on the benchmark clock). */
  readonly start: number
  /** When the last member reached the goal, or the bound passed (ms on the benchmark clock). */
  readonly end: number
  /** Infos of some members that had not reached the goal when the bound passed: what they held instead. */
  readonly stragglers: ReadonlyArray<string>
}

interface Goal {
  /** Waits until every member reached the goal, or the bound passed. */
  readonly await: (bound: Duration.DurationInput) => Effect.Effect<Outcome>
}

export interface Tracker {
  /** A member's stream saw this Info. */
  readonly observe: (slot: number, info: Info) => Effect.Effect<void>
  /** The member in this slot is leaving: its last Infos no longer count. */
  readonly forget: (slot: number) => Effect.Effect<void>
  /** The latest Info of every member. */
  readonly infos: Effect.Effect<ReadonlyMap<number, Info>>
  /** Sets a goal over these slots; members already there count at once, as of `start` (default: now). */
  readonly expect: (
    slots: ReadonlyArray<number>,
    goal: (slot: number, info: Info) => boolean,
    start?: number
  ) => Effect.Effect<Goal>
}

interface Pending {
  readonly goal: (slot: number, info: Info) => boolean
  readonly waiting: Set<number>
  readonly expected: number
  readonly start: number
  end: number
  readonly done: Deferred.Deferred<void>
}

export const make: Effect.Effect<Tracker> = Effect.sync(() => {
  const latest = new Map<number, Info>()
  const forgotten = new Set<number>()
  let pending: Pending | undefined

  const reach = (p: Pending, slot: number, at: number) => {
    p.waiting.delete(slot)
    p.end = Math.max(p.end, at)
    if (p.waiting.size === 0) Deferred.unsafeDone(p.done, Effect.void)
  }

  const observe = (slot: number, info: Info): Effect.Effect<void> =>
    Effect.flatMap(nowMs, (at) =>
      Effect.sync(() => {
        if (forgotten.has(slot)) return
        latest.set(slot, info)
        const p = pending
        if (p !== undefined && p.waiting.has(slot) && p.goal(slot, info)) reach(p, slot, at)
      }))

  const expect = (
    slots: ReadonlyArray<number>,
    goal: (slot: number, info: Info) => boolean,
    startAt?: number
  ): Effect.Effect<Goal> =>
    Effect.gen(function*() {
      const start = startAt ?? (yield* nowMs)
      const done = yield* Deferred.make<void>()
      const p: Pending = { goal, waiting: new Set(slots), expected: slots.length, start, end: start, done }
      pending = p
      for (const slot of slots) {
        const info = latest.get(slot)
        if (info !== undefined && goal(slot, info)) reach(p, slot, start)
      }
      if (p.waiting.size === 0) yield* Deferred.succeed(done, undefined)
      const awaitGoal = (bound: Duration.DurationInput): Effect.Effect<Outcome> =>
        Deferred.await(done).pipe(
          Effect.timeoutOption(bound),
          Effect.flatMap((result) =>
            Effect.map(nowMs, (now): Outcome => {
              const complete = Option.isSome(result)
              return {
                complete,
                expected: p.expected,
                reached: p.expected - p.waiting.size,
                start: p.start,
                end: complete ? p.end : now,
                stragglers: [...p.waiting].slice(0, 5).map((slot) => `#${slot}: ${String(latest.get(slot) ?? "none")}`)
              }
            })
          )
        )
      return { await: awaitGoal }
    })

  return {
    observe,
    forget: (slot) =>
      Effect.sync(() => {
        forgotten.add(slot)
        latest.delete(slot)
        const p = pending
        if (p !== undefined && p.waiting.delete(slot) && p.waiting.size === 0) Deferred.unsafeDone(p.done, Effect.void)
      }),
    infos: Effect.sync(() => new Map(latest)),
    expect
  }
})
