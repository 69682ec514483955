/**
 * The shard checker: records every run of a shard's work (member, shard, fence, interval on a clock every process of
 * the machine shares) and finds what `runShards` forbids.
 */
import { Clock, Effect, type Scope } from "effect"
import type { Shard } from "../../src/index.js"

export interface ShardRun {
  readonly member: string
  readonly shard: number
  readonly fence: number
  readonly start: number
  end: number
  /** When its stop began (its finalizer ran), on the same clock; absent while it runs (and for runs of a process). */
  stopping?: number
  /** The same three on Effect's clock (the TestClock in tests that use it): absent for runs of a process. */
  readonly clockStart?: number
  clockStopping?: number
  clockEnd?: number
}

/** Milliseconds on the machine's monotonic clock (CLOCK_MONOTONIC): comparable across processes. */
export const now = (): number => Number(process.hrtime.bigint()) / 1e6

export interface ShardChecker {
  readonly runs: Array<ShardRun>
  /** Work that records its run and holds it until interrupted; its stop takes `stopMillis`. */
  readonly work: (member: string, stopMillis?: number) => (shard: Shard) => Effect.Effect<void, never, Scope.Scope>
}

export const makeShardChecker = (): ShardChecker => {
  const runs: Array<ShardRun> = []
  return {
    runs,
    work: (member, stopMillis = 0) => (shard) =>
      Effect.acquireRelease(
        Effect.map(Clock.currentTimeMillis, (clockStart) => {
          const run: ShardRun = { member, shard: shard.id, fence: shard.fence, start: now(), end: Infinity, clockStart }
          runs.push(run)
          return run
        }),
        (run) =>
          Effect.gen(function*() {
            run.stopping = now()
            run.clockStopping = yield* Clock.currentTimeMillis
            yield* Effect.sleep(stopMillis)
            run.clockEnd = yield* Clock.currentTimeMillis
            run.end = now()
          })
      ).pipe(Effect.zipRight(Effect.never))
  }
}

/**
 * What `runShards` forbids: pairs of runs of one shard, by different members or not, whose intervals overlap, and a
 * shard's fence that does not grow from one acquisition to the next.
 */
export const shardOverlaps = (runs: ReadonlyArray<ShardRun>): Array<string> => [
  ...intervalOverlaps(runs),
  ...fenceRegressions(runs)
]

const intervalOverlaps = (runs: ReadonlyArray<ShardRun>): Array<string> => {
  const byShard = new Map<number, Array<ShardRun>>()
  for (const run of runs) byShard.set(run.shard, [...(byShard.get(run.shard) ?? []), run])
  const found: Array<string> = []
  for (const [shard, list] of byShard) {
    const sorted = [...list].sort((a, b) => a.start - b.start)
    for (let i = 1; i < sorted.length; i++) {
      const before = sorted.slice(0, i).find((r) => r.end > sorted[i]!.start)
      if (before !== undefined) found.push(`shard ${shard}: ${before.member} and ${sorted[i]!.member}`)
    }
  }
  return found
}

/** Runs of one shard whose fence did not grow with the acquisition after it. */
export const fenceRegressions = (runs: ReadonlyArray<ShardRun>): Array<string> => {
  const found: Array<string> = []
  const last = new Map<number, ShardRun>()
  for (const run of [...runs].sort((a, b) => a.start - b.start)) {
    const before = last.get(run.shard)
    if (before !== undefined && run.fence <= before.fence) {
      found.push(`shard ${run.shard}: ${run.fence} after ${before.fence}`)
    }
    last.set(run.shard, run)
  }
  return found
}

/** The shards with exactly one running worker now, and the workers of the others (none, or several). */
export const running = (runs: ReadonlyArray<ShardRun>, shards: number) => {
  const owners = Array.from({ length: shards }, (): Array<string> => [])
  for (const run of runs) if (!Number.isFinite(run.end)) owners[run.shard]!.push(run.member)
  return owners
}

/**
 * The runs a member process printed (its `shard` lines), as the checker's: a run with no stop line ends when the
 * process was seen to end (`endedAt`, a SIGKILL), or is still running.
 */
export const runsOfProcess = (
  member: string,
  events: ReadonlyArray<
    {
      readonly event: string
      readonly phase?: string
      readonly shard?: number
      readonly fence?: number
      readonly mono?: number
    }
  >,
  endedAt: number = Infinity
): Array<ShardRun> => {
  const runs: Array<ShardRun> = []
  const open = new Map<string, ShardRun>()
  for (const e of events) {
    if (e.event !== "shard") continue
    const key = `${e.shard}/${e.fence}`
    if (e.phase === "start") {
      const run: ShardRun = { member, shard: e.shard!, fence: e.fence!, start: e.mono!, end: endedAt }
      open.set(key, run)
      runs.push(run)
    } else {
      const run = open.get(key)
      if (run !== undefined) run.end = e.mono!
      open.delete(key)
    }
  }
  return runs
}
