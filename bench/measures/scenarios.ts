/**
 * The scenarios of one group size for one implementation, in one scope: join storm, steady state (heap, idle cost,
 * floor under load), alternating single joins and graceful leaves, and a crash. Every wait is bounded; a scenario
 * that does not finish within its bound is reported as such, with how far it got.
 */
import { Console, Duration, Effect, ExecutionStrategy, Exit, Option, Scope } from "effect"
import type { Info } from "../../src/index.js"
import type { Driver, Joined, MemberHandle } from "../drivers/driver.js"
import type { Outcome } from "../drivers/tracker.js"
import { spawnCrashMember } from "./crash.js"
import type { BenchError } from "./etcdMetrics.js"
import { measureFloor } from "./floor.js"
import {
  type ChangeSample,
  type CrashSample,
  type GroupRun,
  groupRun,
  type Idle,
  type RunConfig,
  type SteadyFigures
} from "./groupRun.js"
import { after, before, consistent, costOf, measure, type Measured } from "./measure.js"
import { makeProbe, type Probe } from "./probe.js"
import { heapUsedAfterGc, nowMs } from "./runtime.js"

/** What every step of one run shares: its config, the notes it collects, its log. */
interface Run {
  readonly config: RunConfig
  readonly notes: Array<string>
  readonly log: (line: string) => Effect.Effect<void>
  /** Closes every member of `driver`; a close that does not finish in its bound is noted. */
  readonly closeAllNoting: (driver: Driver) => Effect.Effect<void>
}

/** A full group in place: its driver, a raw watcher of its members' keys, and its members by slot. */
interface Steady {
  readonly driver: Driver
  readonly probe: Probe
  readonly members: Map<number, MemberHandle>
}

const makeRun = (config: RunConfig): Run => {
  const notes: Array<string> = []
  return {
    config,
    notes,
    log: (line) => Console.log(`  [${config.label} ${config.size}] ${line}`),
    closeAllNoting: (d) =>
      Effect.flatMap(d.closeAll, (closed) =>
        closed
          ? Effect.void
          : Effect.sync(() => notes.push("closing the members did not finish within its bound; some kept running")))
  }
}

const anyFailed = (joined: Joined): boolean => joined.failures.length > 0

const progressOf = (infos: ReadonlyMap<number, Info>, slots: ReadonlyArray<number>, count: number): string => {
  const counts = slots.map((slot) => infos.get(slot)?.count ?? 0)
  const at = counts.filter((c) => c === count).length
  const reporting = slots.filter((slot) => infos.has(slot)).length
  return `${at}/${slots.length} members at count ${count}; ${reporting} had an Info; lowest count held ${
    Math.min(...counts)
  }`
}

const range = (from: number, until: number): ReadonlyArray<number> =>
  Array.from({ length: Math.max(0, until - from) }, (_, i) => from + i)

const groupName = (config: RunConfig, phase: string) =>
  `bench/${config.impl}-${config.size}-${phase}-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`

const ms = (x: number) => `${x.toFixed(1)} ms`

// --- Join storm: all members start at once ---

interface Storm {
  readonly measured: Measured & { readonly progress: string }
  readonly driver: Driver
  /** The storm's own scope: closed when its group is given up for one built without a storm. */
  readonly scope: Scope.CloseableScope
  /** Every member's handle when the storm formed the full group with no failed join. */
  readonly handles: ReadonlyArray<MemberHandle> | undefined
}

const joinStorm = (run: Run, slots: ReadonlyArray<number>): Effect.Effect<Storm, BenchError, Scope.Scope> =>
  Effect.gen(function*() {
    const { config } = run
    const scope = yield* Scope.fork(yield* Effect.scope, ExecutionStrategy.sequential)
    const driver = yield* config.makeDriver(groupName(config, "storm")).pipe(Scope.extend(scope))
    const storm = yield* measure(
      config,
      driver,
      driver.joinAll(slots),
      slots,
      config.size,
      config.stormWithin,
      anyFailed
    )
    const joined = Option.getOrUndefined(storm.result)
    const failures = joined?.failures ?? []
    const progress = `${progressOf(yield* driver.tracker.infos, slots, config.size)}${
      joined === undefined ? "; joins still running at the bound" : `; ${failures.length} joins failed`
    }${failures.length === 0 ? "" : ` (first: ${failures[0]})`}`
    yield* run.log(
      storm.measured.complete
        ? `join storm: every member at count ${config.size} after ${ms(storm.measured.ms)}`
        : `join storm: not done within ${Duration.format(config.stormWithin)} (${progress})`
    )
    const formed = joined !== undefined && storm.measured.complete && failures.length === 0
    return { measured: { ...storm.measured, progress }, driver, scope, handles: formed ? joined.handles : undefined }
  })

// --- Steady group: the storm's, or one built without a storm ---

const membersOf = (handles: ReadonlyArray<MemberHandle>): Map<number, MemberHandle> =>
  new Map(handles.map((handle) => [handle.slot, handle]))

/** Every member registered, then all started following (`prefill`); `undefined`, noted, if it does not form. */
const buildWithoutStorm = (
  run: Run,
  slots: ReadonlyArray<number>
): Effect.Effect<Steady | undefined, BenchError, Scope.Scope> =>
  Effect.gen(function*() {
    const { config } = run
    const driver = yield* config.makeDriver(groupName(config, "steady"))
    const probe = yield* makeProbe([config.endpoint], driver.membersPrefix)
    const built = yield* measure(
      config,
      driver,
      driver.prefill(slots),
      slots,
      config.size,
      config.rebuildWithin,
      anyFailed
    )
    const joined = Option.getOrUndefined(built.result)
    if (!(built.measured.complete && joined !== undefined && joined.failures.length === 0)) {
      const progress = `${progressOf(yield* driver.tracker.infos, slots, config.size)}${
        joined === undefined ? "" : `; ${joined.failures.length} joins failed`
      }${joined?.failures[0] === undefined ? "" : ` (first: ${joined.failures[0]})`}`
      run.notes.push(
        `a steady group of ${config.size} could not be built without a storm within ${
          Duration.format(config.rebuildWithin)
        } (${progress}); single changes and crash not measured`
      )
      yield* run.log(`steady group not built in time (${progress}); skipping the remaining scenarios`)
      yield* run.closeAllNoting(driver)
      return undefined
    }
    yield* run.log(`steady group built without a storm in ${ms(built.measured.ms)}`)
    return { driver, probe, members: membersOf(joined.handles) }
  })

/** The full group for the remaining scenarios; `steady` is `undefined` when there is none. */
const steadyGroup = (
  run: Run,
  slots: ReadonlyArray<number>,
  storm: Storm
): Effect.Effect<{ readonly steady: Steady | undefined; readonly rebuilt: boolean }, BenchError, Scope.Scope> =>
  Effect.gen(function*() {
    const { config } = run
    if (storm.handles !== undefined) {
      const members = membersOf(storm.handles)
      const probe = yield* makeProbe([config.endpoint], storm.driver.membersPrefix)
      return { steady: { driver: storm.driver, probe, members }, rebuilt: false }
    }
    // Single changes in a full group can still be measured: build the group without a storm.
    run.notes.push(`join storm not done within ${Duration.format(config.stormWithin)}: ${storm.measured.progress}`)
    yield* run.closeAllNoting(storm.driver)
    yield* Scope.close(storm.scope, Exit.void).pipe(Effect.timeout(Duration.seconds(30)), Effect.ignore)
    if (!config.rebuild) {
      run.notes.push(
        `no steady group of ${config.size} without a storm was attempted; single changes and crash not measured`
      )
      return { steady: undefined, rebuilt: false }
    }
    return { steady: yield* buildWithoutStorm(run, slots), rebuilt: true }
  })

// --- Steady state: heap, idle cost, the floor with the group in place ---

const steadyState = (run: Run, driver: Driver, heapBefore: number): Effect.Effect<SteadyFigures, BenchError> =>
  Effect.gen(function*() {
    const { config } = run
    const heapAfter = yield* heapUsedAfterGc
    const heapPerMemberBytes = (heapAfter - heapBefore) / config.size
    const idleBefore = yield* before(driver, config.endpoint)
    yield* Effect.sleep(config.idleWindow)
    const idleCost = costOf(idleBefore, yield* after(driver, config.endpoint))
    const seconds = idleCost.wallMs / 1000
    const keepalives = idleCost.etcd.sent["LeaseKeepAlive"] ?? 0
    const idle: Idle = {
      seconds,
      keepalivesPerSecond: keepalives / seconds,
      keepaliveStreamsPerSecond: (idleCost.etcd.started["LeaseKeepAlive"] ?? 0) / seconds,
      bytesPerSecond: idleCost.etcd.sentBytes / seconds,
      cpuMsPerSecond: idleCost.cpuMs / seconds,
      etcdCpuMsPerSecond: (idleCost.etcd.cpuSeconds * 1000) / seconds
    }
    const bytesPerKeepalive = keepalives > 0 ? idleCost.etcd.sentBytes / keepalives : 0
    const floorUnderLoad = yield* measureFloor({
      endpoints: [config.endpoint],
      key: `${groupName(config, "floor")}/k`,
      samples: config.floorSamples,
      warmup: 20
    })
    yield* run.log(
      `steady: heap ${(heapPerMemberBytes / 1024).toFixed(1)} KiB/member; idle ${
        idle.keepalivesPerSecond.toFixed(0)
      } keepalives/s (${idle.keepaliveStreamsPerSecond.toFixed(0)} new streams/s), ${
        idle.cpuMsPerSecond.toFixed(1)
      } ms CPU/s; floor under load p50 ${ms(floorUnderLoad.median)} p99 ${ms(floorUnderLoad.p99)}`
    )
    return { heapPerMemberBytes, idle, bytesPerKeepalive, floorUnderLoad }
  })

// --- Single changes in the full group: a join, then a leave of the oldest member (every index moves) ---

const singleChanges = (run: Run, steady: Steady): Effect.Effect<ReadonlyArray<ChangeSample>, BenchError> =>
  Effect.gen(function*() {
    const { config } = run
    const { driver, members, probe } = steady
    const changes: Array<ChangeSample> = []
    let nextSlot = config.size
    const afterEvent = (type: "put" | "delete", outcome: Outcome) =>
      probe.next(type, outcome.start, Duration.seconds(2)).pipe(
        Effect.map(Option.map((event) => outcome.end - event.at)),
        Effect.map(Option.getOrUndefined)
      )
    for (let round = 0; round < config.rounds; round++) {
      const slot = nextSlot++
      const joined = [...members.keys(), slot]
      const join = yield* measure(config, driver, driver.join(slot), joined, joined.length, config.changeWithin)
      if (Option.isSome(join.result)) members.set(slot, join.result.value)
      changes.push({ kind: "join", ...join.measured, afterEventMs: yield* afterEvent("put", join.outcome) })
      yield* Effect.sleep(config.settle)
      if (!join.measured.complete) {
        run.notes.push(`a join did not converge within ${Duration.format(config.changeWithin)}`)
        break
      }

      const infos = yield* driver.tracker.infos
      const oldest = [...members.keys()].find((s) => infos.get(s)?.index === 0) ?? [...members.keys()][0]!
      const leaver = members.get(oldest)!
      members.delete(oldest)
      const remaining = [...members.keys()]
      const leave = yield* measure(config, driver, leaver.leave, remaining, remaining.length, config.changeWithin)
      changes.push({ kind: "leave", ...leave.measured, afterEventMs: yield* afterEvent("delete", leave.outcome) })
      yield* Effect.sleep(config.settle)
      if (!leave.measured.complete) {
        run.notes.push(`a leave did not converge within ${Duration.format(config.changeWithin)}`)
        break
      }
    }
    const median = (kind: "join" | "leave") => {
      const xs = changes.filter((c) => c.kind === kind).map((c) => c.ms).sort((a, b) => a - b)
      return xs.length === 0 ? "n/a" : ms(xs[Math.floor((xs.length - 1) / 2)]!)
    }
    yield* run.log(`single changes: join median ${median("join")}, leave median ${median("leave")}`)
    return changes
  })

// --- Crash: a member in another process is SIGKILLed; its lease expires after the TTL ---

const crashSample = (run: Run, steady: Steady): Effect.Effect<CrashSample | undefined, BenchError, Scope.Scope> =>
  Effect.gen(function*() {
    const { config } = run
    const { driver, members, probe } = steady
    const current = [...members.keys()]
    const spawnedAt = yield* nowMs
    const joinedGoal = yield* driver.tracker.expect(current, (_, info) => info.count === current.length + 1)
    const child = yield* spawnCrashMember(config.impl, config.endpoint, driver.group, config.crashTtlSeconds)
    const joined = yield* joinedGoal.await(config.changeWithin)
    const put = yield* probe.next("put", spawnedAt, Duration.seconds(5))
    if (!joined.complete || Option.isNone(put)) {
      run.notes.push("crash: the crash member's join was not seen by every member; crash skipped")
      return undefined
    }
    yield* Effect.sleep(config.settle)
    const killedAt = yield* nowMs
    const goal = yield* driver.tracker.expect(current, (_, info) => info.count === current.length, killedAt)
    yield* child.kill
    const outcome = yield* goal.await(Duration.sum(Duration.seconds(config.crashTtlSeconds), config.changeWithin))
    const deleted = yield* probe.next("delete", killedAt, Duration.seconds(5), put.value.key)
    const infos = yield* driver.tracker.infos
    return {
      complete: outcome.complete,
      afterExpiryMs: Option.getOrUndefined(Option.map(deleted, (event) => outcome.end - event.at)),
      afterKillMs: outcome.end - killedAt,
      expiryAfterKillMs: Option.getOrUndefined(Option.map(deleted, (event) => event.at - killedAt)),
      consistent: consistent(infos, current, current.length),
      stragglers: outcome.stragglers
    } satisfies CrashSample
  })

/** The crash, only after every single change converged; its failure is a note, not the run's. */
const crash = (
  run: Run,
  steady: Steady,
  changes: ReadonlyArray<ChangeSample>
): Effect.Effect<CrashSample | undefined> =>
  Effect.gen(function*() {
    if (changes.some((c) => !c.complete)) return undefined
    const sample = yield* Effect.scoped(crashSample(run, steady)).pipe(
      Effect.catchAll((error) => Effect.as(Effect.sync(() => run.notes.push(`crash: ${error.message}`)), undefined))
    )
    if (sample !== undefined) {
      yield* run.log(
        `crash: expiry ${sample.expiryAfterKillMs?.toFixed(0) ?? "?"} ms after SIGKILL; every member knew ${
          sample.afterExpiryMs === undefined ? "?" : ms(sample.afterExpiryMs)
        } after the delete event`
      )
    }
    return sample
  })

// --- The run ---

/** Steady state, single changes and the crash, in a full group; its members are closed at the end. */
const inFullGroup = (run: Run, steady: Steady, heapBefore: number) =>
  Effect.gen(function*() {
    yield* Effect.sleep(run.config.settle)
    const figures = yield* steadyState(run, steady.driver, heapBefore)
    yield* Effect.sleep(run.config.settle)
    const changes = yield* singleChanges(run, steady)
    const crashed = yield* crash(run, steady, changes)
    yield* run.closeAllNoting(steady.driver)
    return { steady: figures, changes, crash: crashed }
  })

export const runGroup = (config: RunConfig): Effect.Effect<GroupRun, BenchError> =>
  Effect.scoped(Effect.gen(function*() {
    const startedAt = yield* nowMs
    const run = makeRun(config)
    const heapBefore = yield* heapUsedAfterGc
    const slots = range(0, config.size)

    const storm = yield* joinStorm(run, slots)
    const { rebuilt, steady } = yield* steadyGroup(run, slots, storm)
    const measured = steady === undefined ? {} : yield* inFullGroup(run, steady, heapBefore)

    return groupRun(config, {
      storm: storm.measured,
      rebuilt,
      ...measured,
      notes: run.notes,
      wallSeconds: ((yield* nowMs) - startedAt) / 1000
    })
  }))
