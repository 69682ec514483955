/**
 * What one run of the scenarios configures and records: `RunConfig` in, `GroupRun` out, built in one place
 * (`groupRun`), also for a run that stopped early or failed outright.
 */
import type { Duration, Effect, Scope } from "effect"
import type { Driver } from "../drivers/driver.js"
import { type BenchError, diff, type EtcdCounters } from "./etcdMetrics.js"
import type { Cost, Measured } from "./measure.js"
import type { Summary } from "./stats.js"

export interface RunConfig {
  readonly impl: "library" | "baseline"
  /** Name in the tables. */
  readonly label: string
  readonly size: number
  /** Join-then-leave rounds in the full group. */
  readonly rounds: number
  readonly endpoint: string
  readonly stormWithin: Duration.Duration
  /** Bound on building the steady group without a storm, when the storm did not finish. */
  readonly rebuildWithin: Duration.Duration
  /** Whether to try building the steady group without a storm at all. */
  readonly rebuild: boolean
  readonly changeWithin: Duration.Duration
  /** Pause after each change, so that one change's tail is not counted in the next. */
  readonly settle: Duration.Duration
  /** Length of the quiet window that measures the idle cost (keepalives). */
  readonly idleWindow: Duration.Duration
  readonly crashTtlSeconds: number
  readonly floorSamples: number
  readonly makeDriver: (group: string) => Effect.Effect<Driver, BenchError, Scope.Scope>
}

export interface ChangeSample extends Measured {
  readonly kind: "join" | "leave"
  /** From the change's event reaching a raw watcher to the last member's new Info (ms). */
  readonly afterEventMs: number | undefined
}

export interface CrashSample {
  readonly complete: boolean
  /** From the expired member's delete event reaching a raw watcher to the last member knowing (ms). */
  readonly afterExpiryMs: number | undefined
  /** From SIGKILL to the last member knowing (ms): the TTL plus etcd's expiry check plus the above. */
  readonly afterKillMs: number
  /** From SIGKILL to the delete event (ms): when etcd expired the lease. */
  readonly expiryAfterKillMs: number | undefined
  readonly consistent: boolean
  readonly stragglers: ReadonlyArray<string>
}

export interface Idle {
  readonly seconds: number
  readonly keepalivesPerSecond: number
  /** Keepalive streams opened per second (one per keepalive when each opens its own stream). */
  readonly keepaliveStreamsPerSecond: number
  readonly bytesPerSecond: number
  readonly cpuMsPerSecond: number
  readonly etcdCpuMsPerSecond: number
}

export interface GroupRun {
  readonly impl: "library" | "baseline"
  readonly label: string
  readonly size: number
  readonly storm: Measured & { readonly progress: string }
  /** The steady group was built by `prefill` (every member registered, then all started following). */
  readonly rebuilt: boolean
  readonly heapPerMemberBytes: number | undefined
  readonly idle: Idle | undefined
  /** Bytes etcd sends per keepalive response, from the idle window: subtracted from changes' bytes. */
  readonly bytesPerKeepalive: number
  readonly floorUnderLoad: Summary | undefined
  readonly changes: ReadonlyArray<ChangeSample>
  readonly crash: CrashSample | undefined
  readonly notes: ReadonlyArray<string>
  readonly wallSeconds: number
}

/** What the steady group cost at rest: measured only when a full group was in place. */
export interface SteadyFigures {
  readonly heapPerMemberBytes: number
  readonly idle: Idle
  readonly bytesPerKeepalive: number
  readonly floorUnderLoad: Summary
}

/** The parts of a run; those of the scenarios that did not run are absent. */
export interface RunParts {
  readonly storm: GroupRun["storm"]
  readonly rebuilt: boolean
  readonly steady?: SteadyFigures | undefined
  readonly changes?: ReadonlyArray<ChangeSample> | undefined
  readonly crash?: CrashSample | undefined
  readonly notes: ReadonlyArray<string>
  readonly wallSeconds: number
}

/** The record of a run, from the parts it got to. */
export const groupRun = (config: RunConfig, parts: RunParts): GroupRun => ({
  impl: config.impl,
  label: config.label,
  size: config.size,
  storm: parts.storm,
  rebuilt: parts.rebuilt,
  heapPerMemberBytes: parts.steady?.heapPerMemberBytes,
  idle: parts.steady?.idle,
  bytesPerKeepalive: parts.steady?.bytesPerKeepalive ?? 0,
  floorUnderLoad: parts.steady?.floorUnderLoad,
  changes: parts.changes ?? [],
  crash: parts.crash,
  notes: parts.notes,
  wallSeconds: parts.wallSeconds
})

const emptyCounters: EtcdCounters = {
  readable: true,
  started: {},
  received: {},
  sent: {},
  sentBytes: 0,
  receivedBytes: 0,
  mvccRanges: 0,
  cpuSeconds: 0
}

/** The record of a run that could not be completed at all (its error is the note). */
export const failedRun = (config: RunConfig, message: string): GroupRun => {
  const cost: Cost = {
    etcd: { ...diff({ ...emptyCounters, readable: false }, emptyCounters) },
    client: { groupReads: 0, watchResponses: 0 },
    cpuMs: Number.NaN,
    wallMs: Number.NaN
  }
  return groupRun(config, {
    storm: {
      complete: false,
      ms: Number.NaN,
      reached: 0,
      expected: config.size,
      consistent: false,
      stragglers: [],
      cost,
      progress: "the run failed"
    },
    rebuilt: false,
    notes: [`the run failed: ${message}`],
    wallSeconds: Number.NaN
  })
}
