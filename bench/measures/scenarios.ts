/**
 * The scenarios of one group size for one implementation, in one scope: join storm, steady state (heap, idle cost,
 * floor under load), alternating single joins and graceful leaves, and a crash. Every wait is bounded; a scenario
 * that does not finish within its bound is reported as such, with how far it got.
 */
import { Console, Duration, Effect, ExecutionStrategy, Exit, Fiber, Option, Scope } from "effect"
import type { Info } from "../src/index.js"
import { spawnCrashMember } from "./crash.js"
import type { ClientCounters, Driver, Joined, MemberHandle } from "./driver.js"
import { BenchError, diff, type EtcdCounters, scrapeOrUnreadable } from "./etcdMetrics.js"
import { measureFloor } from "./floor.js"
import { makeProbe, type Probe } from "./probe.js"
import { cpuMs, heapUsedAfterGc, nowMs } from "./runtime.js"
import type { Summary } from "./stats.js"
import type { Outcome } from "./tracker.js"

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

/** What a window of time cost: etcd's counters, the implementation's own, and this process's CPU. */
export interface Cost {
  readonly etcd: EtcdCounters
  readonly client: ClientCounters
  readonly cpuMs: number
  readonly wallMs: number
}

export interface Measured {
  readonly complete: boolean
  /** From the action's start to the last member's new Info (ms). */
  readonly ms: number
  readonly reached: number
  readonly expected: number
  /** Every member holds a distinct index in 0..count-1 and the expected count. */
  readonly consistent: boolean
  readonly stragglers: ReadonlyArray<string>
  readonly cost: Cost
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

interface Snapshot {
  readonly etcd: EtcdCounters
  readonly client: ClientCounters
  readonly cpuMs: number
  readonly at: number
}

const before = (driver: Driver, endpoint: string): Effect.Effect<Snapshot> =>
  Effect.gen(function*() {
    const etcd = yield* scrapeOrUnreadable(endpoint)
    const client = yield* driver.counters
    return { etcd, client, cpuMs: yield* cpuMs, at: yield* nowMs }
  })

const after = (driver: Driver, endpoint: string): Effect.Effect<Snapshot> =>
  Effect.gen(function*() {
    const at = yield* nowMs
    const cpu = yield* cpuMs
    const client = yield* driver.counters
    return { etcd: yield* scrapeOrUnreadable(endpoint), client, cpuMs: cpu, at }
  })

const costOf = (b: Snapshot, a: Snapshot): Cost => ({
  etcd: diff(a.etcd, b.etcd),
  client: {
    groupReads: a.client.groupReads - b.client.groupReads,
    watchResponses: a.client.watchResponses - b.client.watchResponses
  },
  cpuMs: a.cpuMs - b.cpuMs,
  wallMs: a.at - b.at
})

/** Every member in `slots` holds `count` and a distinct index in 0..count-1. */
const consistent = (infos: ReadonlyMap<number, Info>, slots: ReadonlyArray<number>, count: number): boolean => {
  const seen = new Set<number>()
  for (const slot of slots) {
    const info = infos.get(slot)
    if (info === undefined || info.count !== count || info.index < 0 || info.index >= count) return false
    seen.add(info.index)
  }
  return seen.size === slots.length && slots.length === count
}

/**
 * Runs `action` and waits until every member in `slots` holds `count`, bounded; then waits (bounded) for the action
 * itself, whose requests belong to the change. What etcd and this process spent in between is the change's cost.
 */
const measure = <A>(
  config: RunConfig,
  driver: Driver,
  action: Effect.Effect<A, BenchError>,
  slots: ReadonlyArray<number>,
  count: number,
  bound: Duration.Duration,
  hopeless: (result: A) => boolean = () => false
): Effect.Effect<
  { readonly measured: Measured; readonly result: Option.Option<A>; readonly outcome: Outcome },
  BenchError
> =>
  Effect.gen(function*() {
    const b = yield* before(driver, config.endpoint)
    const goal = yield* driver.tracker.expect(slots, (_, info) => info.count === count)
    const fiber = yield* Effect.fork(action)
    // Members whose join failed never report: once the action is done and says so, the goal cannot be reached.
    const outcome = yield* Effect.raceFirst(
      goal.await(bound),
      Fiber.join(fiber).pipe(
        Effect.flatMap((a) => (hopeless(a) ? goal.await(Duration.zero) : Effect.never)),
        Effect.catchAll(() => goal.await(Duration.zero))
      )
    )
    // The action's own result: awaited (bounded) when every member got there, else taken if it is done already.
    const result: Option.Option<A> = outcome.complete
      ? yield* Fiber.join(fiber).pipe(Effect.timeout(bound), Effect.option)
      : Option.flatMap(yield* Fiber.poll(fiber), (e) => (Exit.isSuccess(e) ? Option.some(e.value) : Option.none()))
    if (Option.isNone(result)) {
      yield* Fiber.interrupt(fiber).pipe(Effect.timeout(Duration.seconds(10)), Effect.ignore)
    }
    const a = yield* after(driver, config.endpoint)
    const infos = yield* driver.tracker.infos
    return {
      outcome,
      result,
      measured: {
        complete: outcome.complete && Option.isSome(result),
        ms: outcome.end - outcome.start,
        reached: outcome.reached,
        expected: outcome.expected,
        consistent: consistent(infos, slots, count),
        stragglers: outcome.stragglers,
        cost: costOf(b, a)
      }
    }
  })

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

/** The record of a run that could not be completed at all (its error is the note). */
export const failedRun = (config: RunConfig, message: string): GroupRun => {
  const cost: Cost = {
    etcd: { ...diff({ ...emptyCounters, readable: false }, emptyCounters) },
    client: { groupReads: 0, watchResponses: 0 },
    cpuMs: Number.NaN,
    wallMs: Number.NaN
  }
  return {
    impl: config.impl,
    label: config.label,
    size: config.size,
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
    heapPerMemberBytes: undefined,
    idle: undefined,
    bytesPerKeepalive: 0,
    floorUnderLoad: undefined,
    changes: [],
    crash: undefined,
    notes: [`the run failed: ${message}`],
    wallSeconds: Number.NaN
  }
}

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

export const runGroup = (config: RunConfig): Effect.Effect<GroupRun, BenchError> =>
  Effect.scoped(Effect.gen(function*() {
    const startedAt = yield* nowMs
    const notes: Array<string> = []
    const log = (line: string) => Console.log(`  [${config.label} ${config.size}] ${line}`)
    const heapBefore = yield* heapUsedAfterGc
    const outer = yield* Effect.scope
    const slots = range(0, config.size)
    const closeAllNoting = (d: Driver) =>
      Effect.flatMap(d.closeAll, (closed) =>
        closed
          ? Effect.void
          : Effect.sync(() => notes.push("closing the members did not finish within its bound; some kept running")))

    // --- join storm: all members start at once
    const stormScope = yield* Scope.fork(outer, ExecutionStrategy.sequential)
    const stormDriver = yield* config.makeDriver(groupName(config, "storm")).pipe(Scope.extend(stormScope))
    const storm = yield* measure(
      config,
      stormDriver,
      stormDriver.joinAll(slots),
      slots,
      config.size,
      config.stormWithin,
      anyFailed
    )
    const stormJoined = Option.getOrUndefined(storm.result)
    const stormFailures = stormJoined?.failures ?? []
    const stormProgress = `${progressOf(yield* stormDriver.tracker.infos, slots, config.size)}${
      stormJoined === undefined ? "; joins still running at the bound" : `; ${stormFailures.length} joins failed`
    }${stormFailures.length === 0 ? "" : ` (first: ${stormFailures[0]})`}`
    yield* log(
      storm.measured.complete
        ? `join storm: every member at count ${config.size} after ${ms(storm.measured.ms)}`
        : `join storm: not done within ${Duration.format(config.stormWithin)} (${stormProgress})`
    )

    let driver = stormDriver
    let probe: Probe
    const members = new Map<number, MemberHandle>()
    let rebuilt = false
    if (stormJoined !== undefined && storm.measured.complete && stormFailures.length === 0) {
      for (const handle of stormJoined.handles) members.set(handle.slot, handle)
      probe = yield* makeProbe([config.endpoint], driver.membersPrefix)
    } else {
      // Single changes in a full group can still be measured: build the group without a storm.
      notes.push(`join storm not done within ${Duration.format(config.stormWithin)}: ${stormProgress}`)
      yield* closeAllNoting(stormDriver)
      yield* Scope.close(stormScope, Exit.void).pipe(Effect.timeout(Duration.seconds(30)), Effect.ignore)
      if (!config.rebuild) {
        notes.push(
          `no steady group of ${config.size} without a storm was attempted; single changes and crash not measured`
        )
        return {
          impl: config.impl,
          label: config.label,
          size: config.size,
          storm: { ...storm.measured, progress: stormProgress },
          rebuilt: false,
          heapPerMemberBytes: undefined,
          idle: undefined,
          bytesPerKeepalive: 0,
          floorUnderLoad: undefined,
          changes: [],
          crash: undefined,
          notes,
          wallSeconds: ((yield* nowMs) - startedAt) / 1000
        } satisfies GroupRun
      }
      rebuilt = true
      driver = yield* config.makeDriver(groupName(config, "steady"))
      probe = yield* makeProbe([config.endpoint], driver.membersPrefix)
      const built = yield* measure(
        config,
        driver,
        driver.prefill(slots),
        slots,
        config.size,
        config.rebuildWithin,
        anyFailed
      )
      const builtJoined = Option.getOrUndefined(built.result)
      if (!(built.measured.complete && builtJoined !== undefined && builtJoined.failures.length === 0)) {
        const progress = `${progressOf(yield* driver.tracker.infos, slots, config.size)}${
          builtJoined === undefined ? "" : `; ${builtJoined.failures.length} joins failed`
        }${builtJoined?.failures[0] === undefined ? "" : ` (first: ${builtJoined.failures[0]})`}`
        notes.push(
          `a steady group of ${config.size} could not be built without a storm within ${
            Duration.format(config.rebuildWithin)
          } (${progress}); single changes and crash not measured`
        )
        yield* log(`steady group not built in time (${progress}); skipping the remaining scenarios`)
        yield* closeAllNoting(driver)
        return {
          impl: config.impl,
          label: config.label,
          size: config.size,
          storm: { ...storm.measured, progress: stormProgress },
          rebuilt,
          heapPerMemberBytes: undefined,
          idle: undefined,
          bytesPerKeepalive: 0,
          floorUnderLoad: undefined,
          changes: [],
          crash: undefined,
          notes,
          wallSeconds: ((yield* nowMs) - startedAt) / 1000
        } satisfies GroupRun
      }
      for (const handle of builtJoined.handles) members.set(handle.slot, handle)
      yield* log(`steady group built without a storm in ${ms(built.measured.ms)}`)
    }
    yield* Effect.sleep(config.settle)

    // --- steady state: heap, idle cost, the floor with the group in place
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
    yield* log(
      `steady: heap ${(heapPerMemberBytes / 1024).toFixed(1)} KiB/member; idle ${
        idle.keepalivesPerSecond.toFixed(0)
      } keepalives/s (${idle.keepaliveStreamsPerSecond.toFixed(0)} new streams/s), ${
        idle.cpuMsPerSecond.toFixed(1)
      } ms CPU/s; floor under load p50 ${ms(floorUnderLoad.median)} p99 ${ms(floorUnderLoad.p99)}`
    )
    yield* Effect.sleep(config.settle)

    // --- single changes in the full group: a join, then a leave of the oldest member (every index moves)
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
        notes.push(`a join did not converge within ${Duration.format(config.changeWithin)}`)
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
        notes.push(`a leave did not converge within ${Duration.format(config.changeWithin)}`)
        break
      }
    }
    const median = (kind: "join" | "leave") => {
      const xs = changes.filter((c) => c.kind === kind).map((c) => c.ms).sort((a, b) => a - b)
      return xs.length === 0 ? "n/a" : ms(xs[Math.floor((xs.length - 1) / 2)]!)
    }
    yield* log(`single changes: join median ${median("join")}, leave median ${median("leave")}`)

    // --- crash: a member in another process is SIGKILLed; its lease expires after the TTL
    const crash = yield* Effect.scoped(Effect.gen(function*() {
      if (changes.some((c) => !c.complete)) return undefined
      const current = [...members.keys()]
      const spawnedAt = yield* nowMs
      const joinedGoal = yield* driver.tracker.expect(current, (_, info) => info.count === current.length + 1)
      const child = yield* spawnCrashMember(config.impl, config.endpoint, driver.group, config.crashTtlSeconds)
      const joined = yield* joinedGoal.await(config.changeWithin)
      const put = yield* probe.next("put", spawnedAt, Duration.seconds(5))
      if (!joined.complete || Option.isNone(put)) {
        notes.push("crash: the crash member's join was not seen by every member; crash skipped")
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
    })).pipe(
      Effect.catchAll((error) => Effect.as(Effect.sync(() => notes.push(`crash: ${error.message}`)), undefined))
    )
    if (crash !== undefined) {
      yield* log(
        `crash: expiry ${crash.expiryAfterKillMs?.toFixed(0) ?? "?"} ms after SIGKILL; every member knew ${
          crash.afterExpiryMs === undefined ? "?" : ms(crash.afterExpiryMs)
        } after the delete event`
      )
    }

    yield* closeAllNoting(driver)
    return {
      impl: config.impl,
      label: config.label,
      size: config.size,
      storm: { ...storm.measured, progress: stormProgress },
      rebuilt,
      heapPerMemberBytes,
      idle,
      bytesPerKeepalive,
      floorUnderLoad,
      changes,
      crash,
      notes,
      wallSeconds: ((yield* nowMs) - startedAt) / 1000
    } satisfies GroupRun
  }))
