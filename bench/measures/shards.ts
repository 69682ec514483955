/**
 * Sticky shards beside the assignment modes: `runShards` and `runAssigned` (`"group"`, `"index"`) with S shards at n
 * members, one join and one graceful leave per round, in one run against one etcd.
 *
 * For `runAssigned` the user shards by `shard % count === index` (`Assignment.owns`), so a shard's owner is the member
 * at that index; for `runShards` it is the plan's. Per change we record which shards moved (and the ideal, S/(n+1)),
 * which members' work was touched, whether a shard that did not move was restarted, the time from the change until
 * every moved shard runs at its new owner, the gap per moved shard from its old owner's stop to its new owner's start
 * (the handover), and etcd requests (keepalives aside, see `etcdMetrics.requests`).
 *
 * Members are hosted in this process, 100 per client (a client is one gRPC connection, as one process would have);
 * the member that joins and leaves has a client of its own, like a new process.
 */
import { Console, Duration, Effect, Exit, Scope } from "effect"
import { Etcd, EtcdSeq, type EtcdSeqService, type Exclusive, type Shard } from "../../src/index.js"
import * as ShardPlan from "../../src/internal/shardPlan.js"
import { diff, requests, scrapeOrUnreadable } from "./etcdMetrics.js"
import { nowMs, unsafeNowMs } from "./runtime.js"
import { round, summarize } from "./stats.js"

type Runner = "runShards" | `runAssigned ${Exclude<Exclusive, "none">}`

export interface ShardsRow {
  readonly runner: Runner
  readonly size: number
  readonly shards: number
  readonly change: "join" | "leave"
  /** Medians over the rounds, except where a max is named. */
  readonly moved: number
  readonly ideal: number
  readonly membersTouched: number
  readonly unmovedRestartedMax: number
  readonly running: { readonly median: number; readonly max: number }
  readonly gap: { readonly median: number; readonly max: number }
  readonly requests: number
  readonly samples: number
  readonly failed?: string
}

/** One run of work: a shard (runShards) or an assignment covering `index`'s shards of `count` (runAssigned). */
interface Run {
  readonly member: string
  readonly shard: number
  readonly index: number
  readonly count: number
  readonly start: number
  end: number
}

interface Member {
  readonly label: string
  readonly id: string
  readonly leave: Effect.Effect<void>
}

const formWithin = Duration.minutes(2)
const changeWithin = Duration.seconds(30)

const until = (done: () => boolean, what: string, within: Duration.Duration) =>
  Effect.gen(function*() {
    const deadline = (yield* nowMs) + Duration.toMillis(within)
    while (!done()) {
      if ((yield* nowMs) > deadline) {
        return yield* Effect.fail(`${what} did not happen within ${Duration.format(within)}`)
      }
      yield* Effect.sleep("5 millis")
    }
  })

/** The runs of one group, and who runs each shard now. */
const makeRecorder = () => {
  const runs: Array<Run> = []
  const open = new Map<string, Set<Run>>()
  const started = (run: Run) => {
    runs.push(run)
    let set = open.get(run.member)
    if (set === undefined) open.set(run.member, set = new Set())
    set.add(run)
    return run
  }
  const stopped = (run: Run) => {
    run.end = unsafeNowMs()
    open.get(run.member)?.delete(run)
  }
  const shardWork = (label: string) => (shard: Shard) =>
    Effect.acquireRelease(
      Effect.sync(() =>
        started({ member: label, shard: shard.id, index: -1, count: -1, start: unsafeNowMs(), end: Infinity })
      ),
      (run) => Effect.sync(() => stopped(run))
    ).pipe(Effect.zipRight(Effect.never))
  const assignedWork = (label: string) => (a: { readonly info: { readonly index: number; readonly count: number } }) =>
    Effect.acquireRelease(
      Effect.sync(() =>
        started({
          member: label,
          shard: -1,
          index: a.info.index,
          count: a.info.count,
          start: unsafeNowMs(),
          end: Infinity
        })
      ),
      (run) => Effect.sync(() => stopped(run))
    ).pipe(Effect.zipRight(Effect.never), Effect.scoped)
  return { runs, open, shardWork, assignedWork, joinsRetried: 0 }
}
type Recorder = ReturnType<typeof makeRecorder>

/** Each shard's owner by label, as the runs show it now; undefined where not exactly one runs it. */
const currentOwners = (recorder: Recorder, shards: number, assigned: boolean): Array<string | undefined> => {
  const owners: Array<string | undefined> = new Array(shards).fill(undefined)
  const seen = new Array<number>(shards).fill(0)
  for (const [label, set] of recorder.open) {
    for (const run of set) {
      if (assigned) {
        for (let s = run.index; s < shards; s += run.count) {
          seen[s]!++
          owners[s] = label
        }
      } else {
        seen[run.shard]!++
        owners[run.shard] = label
      }
    }
  }
  return owners.map((o, s) => (seen[s] === 1 ? o : undefined))
}

/** What the runs show once the owners are `expected` (polled), for the change made at `t0`. */
const measureChange = (
  recorder: Recorder,
  before: ReadonlyArray<string | undefined>,
  expected: () => ReadonlyArray<string> | undefined,
  options: { readonly shards: number; readonly assigned: boolean; readonly t0: number; readonly mover: string }
) =>
  Effect.gen(function*() {
    const { assigned, mover, shards, t0 } = options
    let after: ReadonlyArray<string> | undefined
    yield* until(
      () => {
        const want = expected()
        if (want === undefined) return false
        const now = currentOwners(recorder, shards, assigned)
        if (!now.every((o, s) => o === want[s])) return false
        // runAssigned: the new assignments, not the old ones still running with the same owners.
        if (assigned && [...recorder.open.values()].some((set) => [...set].some((r) => r.start < t0))) return false
        after = want
        return true
      },
      "every shard at its new owner",
      changeWithin
    )
    const owners = after!
    const newRuns = recorder.runs.filter((r) => r.start >= t0)
    const startOf = (s: number, member: string) =>
      newRuns.find((r) => r.member === member && (assigned ? r.end === Infinity : r.shard === s))?.start ?? Number.NaN
    const stopOf = (s: number, member: string) =>
      recorder.runs.find((r) =>
        r.member === member && r.start < t0 && r.end >= t0 && (assigned ? s % r.count === r.index : r.shard === s)
      )?.end ?? t0
    let moved = 0
    let lastRunning = 0
    let gap = 0
    for (let s = 0; s < shards; s++) {
      if (owners[s] === before[s]) continue
      moved++
      const start = startOf(s, owners[s]!)
      lastRunning = Math.max(lastRunning, start - t0)
      // A shard that had no owner waits for nobody's stop: its gap counts from the change.
      gap = Math.max(gap, start - (before[s] === undefined ? t0 : stopOf(s, before[s]!)))
    }
    const touched = new Set(
      recorder.runs.filter((r) => r.member !== mover && (r.start >= t0 || (r.end >= t0 && r.end !== Infinity)))
        .map((r) => r.member)
    )
    // runAssigned restarts every member's work: each shard that kept its owner was restarted with it.
    const unmovedRestarted = assigned
      ? shards - moved
      : newRuns.filter((r) => owners[r.shard] === before[r.shard]).length
    return { moved, lastRunning, gap, touched: touched.size, unmovedRestarted, after: owners }
  })

/** Joins one member of `group` on `etcd` running `runner`; its id as the view names it. */
const join = (
  etcd: Etcd["Type"],
  group: string,
  runner: Runner,
  shards: number,
  recorder: Recorder,
  label: string
) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    // A join that times out in a loaded process is tried again (as a restarted pod would be), and counted.
    const seq: EtcdSeqService = yield* EtcdSeq.make({ key: group, ttl: "10 seconds" }).pipe(
      Effect.provideService(Etcd, etcd),
      Scope.extend(scope),
      Effect.tapError(() => Effect.sync(() => recorder.joinsRetried++)),
      Effect.retry({ times: 3 })
    )
    const info = yield* seq.current
    const id = (yield* seq.members)[info.index]?.id ?? ""
    const run = runner === "runShards"
      ? EtcdSeq.runShards(recorder.shardWork(label), { shards })
      : EtcdSeq.runAssigned(recorder.assignedWork(label), {
        exclusive: runner === "runAssigned group" ? "group" : "index"
      })
    yield* run.pipe(Effect.provideService(EtcdSeq, seq), Effect.ignore, Effect.forkIn(scope))
    return { label, id, leave: Scope.close(scope, Exit.void) } satisfies Member
  })

/** The owners each runner should show: the plan's for runShards, `shard % count`'s member for runAssigned. */
const expectedOwners = (runner: Runner, members: ReadonlyArray<Member>, shards: number, recorder: Recorder) => {
  if (runner === "runShards") {
    const plan = ShardPlan.plan(members.map((m) => m.id), shards)
    const labelOf = new Map(members.map((m) => [m.id, m.label]))
    return () => plan.map((id) => labelOf.get(id)!)
  }
  // runAssigned: indices follow join order; read them off the runs for the new count.
  return () => {
    const byIndex = new Map<number, string>()
    for (const [label, set] of recorder.open) {
      for (const r of set) if (r.count === members.length) byIndex.set(r.index, label)
    }
    if (byIndex.size !== members.length) return undefined
    return Array.from({ length: shards }, (_, s) => byIndex.get(s % members.length)!)
  }
}

const measureOne = (options: {
  readonly endpoint: string
  readonly runner: Runner
  readonly size: number
  readonly shards: number
  readonly rounds: number
}) =>
  Effect.gen(function*() {
    const { endpoint, runner, shards, size } = options
    const assigned = runner !== "runShards"
    const recorder = makeRecorder()
    const group = `bench/shards-${runner.replace(" ", "-")}-${size}-${Date.now().toString(36)}`
    const clients = yield* Effect.forEach(
      Array.from({ length: Math.ceil(size / 100) }),
      () => Etcd.make({ endpoints: [endpoint] })
    )

    // --- The group forms (25 joins at a time) and settles on its owners ---
    const members = yield* Effect.forEach(
      Array.from({ length: size }, (_, i) => i),
      (i) => join(clients[i % clients.length]!, group, runner, shards, recorder, `m${i}`),
      { concurrency: 25 }
    )
    yield* Effect.addFinalizer(() =>
      Effect.forEach(members, (m) => m.leave, { concurrency: "unbounded", discard: true })
    )
    yield* until(
      () => {
        const want = expectedOwners(runner, members, shards, recorder)()
        return want !== undefined && currentOwners(recorder, shards, assigned).every((o, s) => o === want[s])
      },
      `${size} members at work`,
      formWithin
    )

    if (recorder.joinsRetried > 0) yield* Console.log(`  ${recorder.joinsRetried} joins timed out and were retried`)

    // --- Rounds: one member joins on a client of its own, then leaves ---
    const samples = { join: [] as Array<Sample>, leave: [] as Array<Sample> }
    for (let r = 0; r < options.rounds; r++) {
      yield* Effect.sleep("300 millis")
      const own = yield* Etcd.make({ endpoints: [endpoint] })
      let before: ReadonlyArray<string | undefined> = currentOwners(recorder, shards, assigned)
      let counters = yield* scrapeOrUnreadable(endpoint)
      let t0 = yield* nowMs
      const extra = yield* join(own, group, runner, shards, recorder, `x${r}`)
      const joined = yield* measureChange(
        recorder,
        before,
        expectedOwners(runner, [...members, extra], shards, recorder),
        { shards, assigned, t0, mover: extra.label }
      )
      yield* Effect.sleep("300 millis")
      samples.join.push({ ...joined, requests: requests(diff(yield* scrapeOrUnreadable(endpoint), counters)) })

      before = joined.after
      counters = yield* scrapeOrUnreadable(endpoint)
      t0 = yield* nowMs
      yield* extra.leave
      const left = yield* measureChange(
        recorder,
        before,
        expectedOwners(runner, members, shards, recorder),
        { shards, assigned, t0, mover: extra.label }
      )
      yield* Effect.sleep("300 millis")
      samples.leave.push({ ...left, requests: requests(diff(yield* scrapeOrUnreadable(endpoint), counters)) })
    }
    return (["join", "leave"] as const).map((change) => toRow(runner, size, shards, change, samples[change]))
  }).pipe(Effect.scoped)

interface Sample {
  readonly moved: number
  readonly lastRunning: number
  readonly gap: number
  readonly touched: number
  readonly unmovedRestarted: number
  readonly requests: number
}

const toRow = (
  runner: Runner,
  size: number,
  shards: number,
  change: "join" | "leave",
  samples: ReadonlyArray<Sample>
): ShardsRow => {
  const med = (f: (s: Sample) => number) => round(summarize(samples.map(f)).median)
  const running = summarize(samples.map((s) => s.lastRunning))
  const gap = summarize(samples.map((s) => s.gap))
  return {
    runner,
    size,
    shards,
    change,
    moved: med((s) => s.moved),
    ideal: round(shards / (size + 1)),
    membersTouched: med((s) => s.touched),
    unmovedRestartedMax: Math.max(0, ...samples.map((s) => s.unmovedRestarted)),
    running: { median: round(running.median), max: round(running.max) },
    gap: { median: round(gap.median), max: round(gap.max) },
    requests: med((s) => s.requests),
    samples: samples.length
  }
}

const failedRows = (runner: Runner, size: number, shards: number, reason: string): ReadonlyArray<ShardsRow> =>
  (["join", "leave"] as const).map((change) => ({
    runner,
    size,
    shards,
    change,
    moved: Number.NaN,
    ideal: round(shards / (size + 1)),
    membersTouched: Number.NaN,
    unmovedRestartedMax: Number.NaN,
    running: { median: Number.NaN, max: Number.NaN },
    gap: { median: Number.NaN, max: Number.NaN },
    requests: Number.NaN,
    samples: 0,
    failed: reason
  }))

/**
 * Every runner at every size; a runner that cannot form or converge at a size is reported as failed there and the
 * others still run.
 */
export const measureShards = (options: {
  readonly endpoint: string
  readonly sizes: ReadonlyArray<number>
  readonly shards: number
  readonly rounds: (size: number) => number
  readonly log: (line: string) => Effect.Effect<void>
}): Effect.Effect<ReadonlyArray<ShardsRow>> =>
  Effect.gen(function*() {
    const rows: Array<ShardsRow> = []
    for (const size of options.sizes) {
      for (const runner of ["runShards", "runAssigned index", "runAssigned group"] as const) {
        yield* options.log(`${runner}, ${size} members, ${options.shards} shards`)
        const measured = yield* measureOne({ ...options, runner, size, rounds: options.rounds(size) }).pipe(
          Effect.catchAllCause((cause) =>
            Effect.as(options.log(`  failed: ${String(cause)}`), failedRows(runner, size, options.shards, "failed"))
          )
        )
        rows.push(...measured)
      }
    }
    return rows
  })

const cell = (x: number) => (Number.isNaN(x) ? "-" : `${x}`)

export const shardsMarkdown = (rows: ReadonlyArray<ShardsRow>, floorP99: number): string =>
  [
    `| runner | members | change | shards moved (ideal) | members touched | unmoved shards restarted (max) | every moved shard running, median / max (ms) | handover gap, median / max (ms) | gap max / floor p99 | etcd requests |`,
    "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ...rows.map((r) =>
      r.failed !== undefined
        ? `| ${r.runner} | ${r.size} | ${r.change} | ${r.failed} | | | | | | |`
        : `| ${r.runner} | ${r.size} | ${r.change} | ${cell(r.moved)} (${r.ideal}) | ${cell(r.membersTouched)} | ${
          cell(r.unmovedRestartedMax)
        } | ${cell(r.running.median)} / ${cell(r.running.max)} | ${cell(r.gap.median)} / ${cell(r.gap.max)} | ${
          round(r.gap.max / floorP99, 2)
        }× | ${cell(r.requests)} |`
    )
  ].join("\n")
