/**
 * One process of a fleet: M members of one group on one client (the library) or on one raw client (the Go original's
 * algorithm), driven by the fleet benchmark over stdin, reporting on stdout. Spawned as the real node process:
 *
 *   node --import tsx bench/children/fleetMember.ts <library|baseline> <endpoint> <group> <members> <ttl seconds>
 *
 * stdin, one command per line:
 *   go <n>       join every member at once, and report when all of them hold count n
 *   target <n>   report when every live member holds count n
 *   leave        one member leaves gracefully (reports `leaving` before, `left` after)
 *   stats        report the counters
 *   exit         every member leaves; the process ends
 * stdout, one JSON object per line: `ready`, `all` (`count`, `at`), `leaving`/`left` (`at`), `stats`. Times are
 * `Date.now()`: every process of the machine reads the same clock.
 */
import { NodeRuntime } from "@effect/platform-node"
import {
  Cause,
  Deferred,
  Duration,
  Effect,
  Exit,
  Logger,
  LogLevel,
  Metric,
  Runtime,
  Schedule,
  Scope,
  Stream
} from "effect"
import * as fs from "node:fs"
import * as inspector from "node:inspector"
import { monitorEventLoopDelay } from "node:perf_hooks"
import * as readline from "node:readline"
import { Etcd, EtcdSeq, Info } from "../../src/index.js"
import * as Metrics from "../../src/internal/metrics.js"
import * as Baseline from "../drivers/baseline.js"

const [impl = "library", endpoint = "", group = "", membersText = "0", ttlText = "10"] = process.argv.slice(2)
const size = Number(membersText)
const ttlSeconds = Number(ttlText)

const print = (line: Record<string, unknown>) => process.stdout.write(JSON.stringify(line) + "\n")

interface Member {
  readonly slot: number
  scope: Scope.CloseableScope | undefined
  last: Info
  changes: number
  /** `Info.invalid` seen after a valid Info, while the member was not leaving: a spurious fence. */
  invalid: number
  leaving: boolean
}

const members: Array<Member> = Array.from({ length: size }, (_, slot) => ({
  slot,
  scope: undefined,
  last: Info.invalid,
  changes: 0,
  invalid: 0,
  leaving: false
}))
let failedJoins = 0
/** Why joins failed: the error's tag (and, for a request, its operation), counted. */
const failedBy: Record<string, number> = {}
let target: number | undefined
/** CPU time used by this process (ms) when "go" arrived: the storm's share is measured from it. */
let cpuAtGo = 0
/** How late the event loop ran timers, from "go" on: a starved process, not a slow etcd. */
const loopDelay = monitorEventLoopDelay({ resolution: 20 })
loopDelay.enable()
const cpuMs = () => {
  const used = process.cpuUsage()
  return (used.user + used.system) / 1000
}
let reported: number | undefined

/**
 * Members before it held the target when last checked: each check resumes there, so a view costs the check O(M)
 * in all, not O(M) per member (500 members would cost 125,000 steps per view, measured as the library's).
 */
let checkedUpTo = 0

/** Reports `all` once per target, when every live member holds it. */
const check = () => {
  if (target === undefined || reported === target) return
  for (; checkedUpTo < members.length; checkedUpTo++) {
    const m = members[checkedUpTo]!
    if (!m.leaving && m.scope !== undefined && m.last.count !== target) return
  }
  if (members.every((m) => m.leaving || m.scope === undefined)) return
  reported = target
  print({ e: "all", count: target, at: Date.now() })
}

const observe = (m: Member) => (info: Info) =>
  Effect.sync(() => {
    m.changes++
    if (!Info.isValid(info) && Info.isValid(m.last) && !m.leaving) m.invalid++
    m.last = info
    // A member behind the cursor moved off the target: look again from the start.
    if (info.count !== target) checkedUpTo = 0
    check()
  })

/** The library: one client for the process's members, each joined until it succeeds (a failed join is counted). */
const library = Effect.gen(function*() {
  const etcd = yield* Etcd.make({ endpoints: [endpoint] })
  return (m: Member) =>
    Effect.gen(function*() {
      while (true) {
        const scope = yield* Scope.make()
        const joined = yield* EtcdSeq.make({ key: group, ttl: Duration.seconds(ttlSeconds) }).pipe(
          Effect.provideService(Etcd, etcd),
          Scope.extend(scope),
          Effect.exit
        )
        if (Exit.isSuccess(joined)) {
          m.scope = scope
          checkedUpTo = 0
          yield* joined.value.changes.pipe(Stream.runForEach(observe(m)), Effect.ignore, Effect.forkIn(scope))
          return
        }
        failedJoins++
        const error = Exit.isFailure(joined) ? Cause.squash(joined.cause) : undefined
        // The tag, and what tells a request's timeout (the request timeout) from the wait to be seen (the TTL).
        const why = error instanceof Error && "_tag" in error
          ? `${String(error._tag)}${"operation" in error ? ` ${String(error.operation)}` : ""}${
            "timeout" in error && Duration.isDuration(error.timeout) ? ` after ${Duration.format(error.timeout)}` : ""
          }`
          : "other"
        failedBy[why] = (failedBy[why] ?? 0) + 1
        yield* Scope.close(scope, Exit.void)
        yield* Effect.sleep(Duration.millis(100 + Math.random() * 400))
      }
    })
})

/** The Go original's algorithm: a lease and a watcher per member, a full read of the group on every event. */
const baseline = Effect.gen(function*() {
  const driver = yield* Baseline.make({
    endpoints: [endpoint],
    group,
    ttlSeconds,
    requestWithin: Duration.seconds(10),
    closeWithin: Duration.seconds(20)
  })
  // Its tracker holds each member's latest Info; the process polls it (a storm of a thousand takes seconds).
  yield* Effect.gen(function*() {
    const infos = yield* driver.tracker.infos
    for (const m of members) {
      const info = infos.get(m.slot)
      if (info !== undefined && (info.count !== m.last.count || info.index !== m.last.index)) yield* observe(m)(info)
    }
  }).pipe(Effect.repeat(Schedule.spaced("5 millis")), Effect.forkScoped)
  return (m: Member) =>
    Effect.gen(function*() {
      while (true) {
        const joined = yield* Effect.either(driver.join(m.slot))
        if (joined._tag === "Right") {
          const handle = joined.right
          const scope = yield* Scope.make()
          yield* Scope.addFinalizer(scope, handle.leave)
          m.scope = scope
          checkedUpTo = 0
          return
        }
        failedJoins++
        yield* Effect.sleep(Duration.millis(100 + Math.random() * 400))
      }
    })
})

/**
 * `FLEET_STORM_PROFILE=<file>`: a CPU profile of the storm alone, from "go" to the first `stats` (the process's start,
 * its module loading above all, is left out).
 */
const stormProfile = process.env["FLEET_STORM_PROFILE"]
const session = stormProfile === undefined ? undefined : new inspector.Session()
let profiling = false
const startProfile = () => {
  if (session === undefined || profiling) return
  profiling = true
  session.connect()
  session.post(
    "Profiler.enable",
    () => session.post("Profiler.setSamplingInterval", { interval: 200 }, () => session.post("Profiler.start"))
  )
}
const stopProfile = () => {
  // The first "stats" ends the storm's profile; later ones find the session gone.
  if (session === undefined || stormProfile === undefined || !profiling) return
  profiling = false
  session.post("Profiler.stop", (error, result) => {
    if (error === null) fs.writeFileSync(stormProfile, JSON.stringify(result.profile))
    session.disconnect()
  })
}

const leaveOne = Effect.gen(function*() {
  const m = members.find((x) => x.scope !== undefined && !x.leaving)
  if (m === undefined) return
  m.leaving = true
  print({ e: "leaving", at: Date.now() })
  yield* Scope.close(m.scope!, Exit.void)
  print({ e: "left", at: Date.now() })
  check()
})

const stats = Effect.gen(function*() {
  const changes = members.map((m) => m.changes)
  print({
    e: "stats",
    changesTotal: changes.reduce((a, b) => a + b, 0),
    changesMax: Math.max(0, ...changes),
    invalid: members.reduce((a, m) => a + m.invalid, 0),
    failedJoins,
    failedBy,
    reregistrations: (yield* Metric.value(Metrics.reregistrations)).count,
    leaseLosses: (yield* Metric.value(Metrics.leaseLosses)).count,
    rss: process.memoryUsage().rss,
    cpuSinceGoMs: cpuMs() - cpuAtGo,
    loopDelayP99Ms: loopDelay.percentile(99) / 1e6,
    loopDelayMaxMs: loopDelay.max / 1e6
  })
})

const program = Effect.scoped(Effect.gen(function*() {
  const join = impl === "baseline" ? yield* baseline : yield* library
  const done = yield* Deferred.make<void>()
  const lines = readline.createInterface({ input: process.stdin })
  const commands = yield* Effect.runtime<never>()
  lines.on("line", (line) => {
    const [command, value] = line.trim().split(" ")
    const run = <A>(effect: Effect.Effect<A>) => void Runtime.runFork(commands)(effect)
    if (command === "go") {
      target = Number(value)
      checkedUpTo = 0
      cpuAtGo = cpuMs()
      loopDelay.reset()
      startProfile()
      run(Effect.forEach(members, join, { concurrency: "unbounded", discard: true }))
    } else if (command === "target") {
      target = Number(value)
      checkedUpTo = 0
      check()
    } else if (command === "leave") run(leaveOne)
    else if (command === "stats") {
      stopProfile()
      run(stats)
    } else if (command === "exit") Deferred.unsafeDone(done, Exit.void)
  })
  lines.on("close", () => Deferred.unsafeDone(done, Exit.void))
  print({ e: "ready" })
  yield* Deferred.await(done)
  lines.close()
  yield* Effect.forEach(members, (m) => m.scope === undefined ? Effect.void : Scope.close(m.scope, Exit.void), {
    concurrency: "unbounded",
    discard: true
  }).pipe(Effect.timeout("30 seconds"), Effect.ignore)
}))

NodeRuntime.runMain(
  program.pipe(
    Effect.provide(Logger.replace(Logger.defaultLogger, Logger.withConsoleError(Logger.logfmtLogger))),
    Logger.withMinimumLogLevel(process.env["FLEET_LOG_LEVEL"] === "Warning" ? LogLevel.Warning : LogLevel.Error)
  ),
  { disableErrorReporting: true }
)
