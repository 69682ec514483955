/**
 * The assignment checker: records, for every run of work, the member, its Info, its shares of a fixed number of
 * shards and the interval it ran (monotonic clock), and finds the overlaps a guarantee forbids.
 */
import { Effect, type Scope } from "effect"
import { performance } from "node:perf_hooks"
import type { Assignment } from "../../src/index.js"

/** Enough shards that every member of a churning group of a few dozen has some: no share, no overlap to find. */
export const SHARDS = 64

export interface Run {
  readonly member: string
  readonly index: number
  readonly count: number
  readonly revision: number
  readonly fence: number
  readonly shares: ReadonlyArray<number>
  readonly start: number
  end: number
}

export interface Checker {
  /**
   * Work that records its run and holds it until interrupted. Stopping takes `stopMillis` (a service draining), which
   * widens the window in which a broken handover would let two runs overlap.
   */
  readonly work: (
    member: string,
    stopMillis?: number
  ) => (assignment: Assignment) => Effect.Effect<void, never, Scope.Scope>
  readonly runs: ReadonlyArray<Run>
}

export const makeChecker = (): Checker => {
  const runs: Array<Run> = []
  return {
    runs,
    work: (member, stopMillis = 0) => (a) =>
      Effect.acquireRelease(
        Effect.sync(() => {
          const run: Run = {
            member,
            index: a.info.index,
            count: a.info.count,
            revision: a.info.revision,
            fence: a.fence,
            shares: a.shares(SHARDS),
            start: performance.now(),
            end: Number.POSITIVE_INFINITY
          }
          runs.push(run)
          return run
        }),
        (run) =>
          Effect.sleep(stopMillis).pipe(Effect.zipRight(Effect.sync(() => {
            run.end = performance.now()
          })))
      ).pipe(Effect.zipRight(Effect.never))
  }
}

const overlap = (a: Run, b: Run): boolean => a.start < b.end && b.start < a.end

const pairs = (runs: ReadonlyArray<Run>, conflict: (a: Run, b: Run) => boolean): Array<string> => {
  const found: Array<string> = []
  for (let i = 0; i < runs.length; i++) {
    for (let j = i + 1; j < runs.length; j++) {
      const a = runs[i]!
      const b = runs[j]!
      if (conflict(a, b) && overlap(a, b)) {
        found.push(
          `${a.member} ${a.index}/${a.count}@${a.revision} and ${b.member} ${b.index}/${b.count}@${b.revision}`
        )
      }
    }
  }
  return found
}

/**
 * Fences that do not grow across the holders of a share, in every exclusive mode: the runs of each share (`keys` of a
 * run: its index, or its shares) in start order. A run of another member than the share's last holder must have a
 * fence above every fence the share had; a run of the same member, one at least its last (a member that takes its
 * place back after a self-fence resumes with its fence). A store that keeps the highest fence it saw can then refuse
 * every write of an older holder.
 */
const shareFenceRegressions = (
  runs: ReadonlyArray<Run>,
  keys: (run: Run) => ReadonlyArray<number>
): Array<string> => {
  const found: Array<string> = []
  const last = new Map<number, { readonly member: string; readonly fence: number; readonly highest: number }>()
  for (const run of [...runs].sort((a, b) => a.start - b.start)) {
    for (const key of keys(run)) {
      const before = last.get(key)
      const ok = before === undefined ||
        (before.member === run.member ? run.fence >= before.fence : run.fence > before.highest)
      if (!ok) {
        found.push(`share ${key}: ${run.member} fence ${run.fence} after ${before!.member} fence ${before!.fence}`)
      }
      last.set(key, { member: run.member, fence: run.fence, highest: Math.max(run.fence, before?.highest ?? 0) })
    }
  }
  return found
}

/**
 * What "index" forbids: runs of different members for the same index at the same time, and fences of an index that
 * do not grow from one holder to the next.
 */
export const indexOverlaps = (runs: ReadonlyArray<Run>) => [
  ...pairs(runs, (a, b) => a.member !== b.member && a.index === b.index),
  ...shareFenceRegressions(runs, (run) => [run.index])
]

/**
 * What "group" forbids: runs of different members with a common share at the same time, and fences of a share that
 * do not grow from one holder to the next.
 */
export const shareOverlaps = (runs: ReadonlyArray<Run>) => [
  ...pairs(runs, (a, b) => a.member !== b.member && a.shares.some((s) => b.shares.includes(s))),
  ...shareFenceRegressions(runs, (run) => run.shares)
]

/** Runs of one member that ran at the same time (every mode forbids them: stop before the next starts). */
export const selfOverlaps = (runs: ReadonlyArray<Run>) => pairs(runs, (a, b) => a.member === b.member)

/** Runs of one member whose fence is not above the fence of its run before: a fence must only grow. */
export const fenceRegressions = (runs: ReadonlyArray<Run>): Array<string> => {
  const found: Array<string> = []
  const last = new Map<string, Run>()
  for (const run of [...runs].sort((a, b) => a.start - b.start)) {
    const before = last.get(run.member)
    if (before !== undefined && run.fence <= before.fence) {
      found.push(`${run.member}: fence ${run.fence} after ${before.fence}`)
    }
    last.set(run.member, run)
  }
  return found
}
