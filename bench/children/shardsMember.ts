/**
 * One process of a `runShards` fleet: members of one group on one client, each running `EtcdSeq.runShards` with a
 * work that reports every start and stop of a shard. Driven by `bench/measures/fleetShards.ts` over stdin, reporting
 * on stdout; spawned as the real node process (bundled first):
 *
 *   node shardsMember.mjs <endpoint> <group> <shards> <ttl seconds> <epoch ns> <work stop ms>
 *
 * stdin, one command per line:
 *   join <w,...>   join one member per weight given (`-` for none: the option is not passed), each running runShards
 *   leave          the first live member leaves gracefully (`leaving` before, `left` after)
 *   drain          the first live member drains (`EtcdSeq.drain`): `draining` before, `drained` after, or `drain-na`
 *   weigh <w,...>  every live member leaves and joins again with the weight given, in order
 *   exit           every member leaves; the process ends
 *   profile-start  starts the CPU profiler (at once, not after the commands queued before it)
 *   profile-stop <file>  stops it and writes the profile to <file> (`.cpuprofile`)
 * stdout, one JSON object per line: `ready`; `joining` (`m`, `at`) and `joined` (`m`, `id`, `weight`, `at`);
 * `start` (`m`, `s`, `id` of the claim's member, `fence`, `at`), `stopping` and `stop` (`m`, `s`, `at`) of every
 * shard; `failed` (`why`).
 *
 * Times (`at`) are milliseconds since `<epoch ns>`, read from `process.hrtime.bigint()`: CLOCK_MONOTONIC on Linux,
 * one clock for every process of the machine (unlike `Date.now()`, which NTP may step or slew between two readings),
 * so a stop in one process and a start in another compare directly.
 */
import { NodeRuntime } from "@effect/platform-node"
import { Cause, Deferred, Duration, Effect, Exit, Logger, LogLevel, Runtime, Schedule, Scope } from "effect"
import * as fs from "node:fs"
import * as inspector from "node:inspector"
import * as readline from "node:readline"
import { Etcd, EtcdSeq, type EtcdSeqOptions, type Shard } from "../../src/index.js"

const [endpoint = "", group = "", shardsText = "0", ttlText = "10", epochText = "0", stopText = "0"] = process.argv
  .slice(2)
const shards = Number(shardsText)
const ttl = Duration.seconds(Number(ttlText))
const epoch = BigInt(epochText)
const workStop = Duration.millis(Number(stopText))

const at = () => Number(process.hrtime.bigint() - epoch) / 1e6
const print = (line: Record<string, unknown>) => process.stdout.write(JSON.stringify(line) + "\n")

interface Member {
  /** The member's number in this process, in join order: a member that joins again (with a weight) is another. */
  readonly label: string
  readonly scope: Scope.CloseableScope
  readonly seq: EtcdSeq["Type"]
}

const live: Array<Member> = []
let joins = 0

/**
 * The member id whose claim holds the shard, from the claim's key (`<group>/claims/<shard>/<member id>.<run>`): what
 * the group's view names as the shard's holder. (`members[current.index]` may be of another view than `current`.)
 */
const claimant = (shard: Shard) => {
  const last = shard.claimKey.slice(shard.claimKey.lastIndexOf("/") + 1)
  return last.slice(0, last.lastIndexOf("."))
}

/** The shard's work: reports its start, and on interruption its stop, which takes `workStop` (a finalizer sleeping). */
const work = (label: string) => (shard: Shard) =>
  Effect.acquireRelease(
    Effect.sync(() => print({ e: "start", m: label, s: shard.id, id: claimant(shard), fence: shard.fence, at: at() })),
    () =>
      Effect.sync(() => print({ e: "stopping", m: label, s: shard.id, at: at() })).pipe(
        Effect.zipRight(Effect.sleep(workStop)),
        Effect.zipRight(Effect.sync(() => print({ e: "stop", m: label, s: shard.id, at: at() })))
      )
  ).pipe(Effect.zipRight(Effect.never))

/**
 * `weight` is passed only when given: the benchmark passes it only once the installed `EtcdSeq` is seen to accept it
 * (`bench/measures/fleetShards.ts`).
 */
const join = (etcd: Etcd["Type"], weight: number | undefined) =>
  Effect.gen(function*() {
    const label = String(joins)
    joins++
    const options: EtcdSeqOptions & { readonly weight?: number } = weight === undefined
      ? { key: group, ttl }
      : { key: group, ttl, weight }
    print({ e: "joining", m: label, at: at() })
    const scope = yield* Scope.make()
    const joined = yield* EtcdSeq.make(options).pipe(
      Effect.provideService(Etcd, etcd),
      Scope.extend(scope),
      // A join that times out in a loaded machine is tried again, as a restarted pod would be.
      Effect.retry({ times: 3 }),
      Effect.exit
    )
    if (Exit.isFailure(joined)) {
      print({ e: "failed", m: label, why: String(joined.cause) })
      yield* Scope.close(scope, Exit.void)
      return
    }
    const seq = joined.value
    const info = yield* seq.current
    const id = (yield* seq.members)[info.index]?.id ?? ""
    print({ e: "joined", m: label, id, weight: weight ?? null, at: at() })
    yield* EtcdSeq.runShards({ shards }, work(label)).pipe(
      Effect.provideService(EtcdSeq, seq),
      Effect.catchAllCause((cause) => Effect.sync(() => print({ e: "failed", m: label, why: String(cause) }))),
      Effect.forkIn(scope)
    )
    live.push({ label, scope, seq })
  })

const leave = (m: Member) =>
  Effect.gen(function*() {
    live.splice(live.indexOf(m), 1)
    print({ e: "leaving", m: m.label, at: at() })
    yield* Scope.close(m.scope, Exit.void)
    print({ e: "left", m: m.label, at: at() })
  })

/**
 * `EtcdSeq.drain`: an `Effect<void, EtcdSeqError, EtcdSeq>`, run when the installed `EtcdSeq` has it (accepted as a
 * function returning one, too); `drain-na` otherwise.
 */
const drain = (m: Member) =>
  Effect.gen(function*() {
    const api: unknown = (EtcdSeq as unknown as Record<string, unknown>)["drain"]
    const effect: unknown = typeof api === "function" ? (api as () => unknown)() : api
    if (!Effect.isEffect(effect)) return print({ e: "drain-na", m: m.label })
    print({ e: "draining", m: m.label, at: at() })
    const exit = yield* (effect as Effect.Effect<void, unknown, EtcdSeq>).pipe(
      Effect.provideService(EtcdSeq, m.seq),
      Effect.exit
    )
    print({ e: "drained", m: m.label, ok: Exit.isSuccess(exit), at: at() })
  })

/** The CPU profiler of this process, for the benchmark's windows around one change (`FLEET_PROFILE`). */
const profiler = (() => {
  const session = new inspector.Session()
  let connected = false
  return {
    start: () => {
      if (!connected) {
        session.connect()
        connected = true
        session.post("Profiler.enable")
      }
      session.post("Profiler.start")
    },
    stop: (file: string) =>
      session.post("Profiler.stop", (error, result) => {
        if (error === null) fs.writeFileSync(file, JSON.stringify(result.profile))
      })
  }
})()

const weightsOf = (text: string | undefined) =>
  (text ?? "").split(",").filter((w) => w !== "").map((w) => (w === "-" ? undefined : Number(w)))

const program = Effect.scoped(Effect.gen(function*() {
  // Fifty processes starting at once on a loaded machine: the first request may wait long for CPU (a failed connect
  // would end the process before it is ready).
  const etcd = yield* Etcd.make({ endpoints: [endpoint], connectTimeout: "30 seconds" }).pipe(
    Effect.retry({ times: 3, schedule: Schedule.spaced("1 second") })
  )
  const done = yield* Deferred.make<void>()
  const lines = readline.createInterface({ input: process.stdin })
  const runtime = yield* Effect.runtime<never>()
  // Commands run one after the other, in the order they came.
  let queue: Promise<unknown> = Promise.resolve()
  const run = (effect: Effect.Effect<unknown>) => {
    queue = queue.then(() => Runtime.runPromise(runtime)(effect)).catch(() => {})
  }
  lines.on("line", (line) => {
    const [command, value] = line.trim().split(" ")
    if (command === "join") {
      run(Effect.forEach(weightsOf(value), (w) => join(etcd, w), { concurrency: "unbounded", discard: true }))
    } else if (command === "leave") {
      run(Effect.suspend(() => live[0] === undefined ? Effect.void : leave(live[0])))
    } else if (command === "drain") {
      run(Effect.suspend(() => live[0] === undefined ? Effect.void : drain(live[0])))
    } else if (command === "weigh") {
      run(Effect.gen(function*() {
        const weights = weightsOf(value)
        yield* Effect.forEach([...live], leave, { concurrency: "unbounded", discard: true })
        yield* Effect.forEach(weights, (w) => join(etcd, w), { concurrency: "unbounded", discard: true })
      }))
    } else if (command === "profile-start") profiler.start()
    else if (command === "profile-stop" && value !== undefined) profiler.stop(value)
    else if (command === "exit") Deferred.unsafeDone(done, Exit.void)
  })
  lines.on("close", () => Deferred.unsafeDone(done, Exit.void))
  print({ e: "ready", at: at() })
  yield* Deferred.await(done)
  lines.close()
  yield* Effect.forEach([...live], (m) => Scope.close(m.scope, Exit.void), {
    concurrency: "unbounded",
    discard: true
  }).pipe(Effect.timeout("30 seconds"), Effect.ignore)
}))

NodeRuntime.runMain(
  program.pipe(
    // Why a process ended early, on its stderr (error reporting is off: it would print interruptions too).
    Effect.tapErrorCause((cause) => Effect.sync(() => process.stderr.write(`shardsMember: ${Cause.pretty(cause)}\n`))),
    Effect.provide(Logger.replace(Logger.defaultLogger, Logger.withConsoleError(Logger.logfmtLogger))),
    Logger.withMinimumLogLevel(process.env["FLEET_LOG_LEVEL"] === "Warning" ? LogLevel.Warning : LogLevel.Error)
  ),
  { disableErrorReporting: true }
)
