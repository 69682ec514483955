/**
 * `npm run bench`: starts its own etcd (as the tests do), measures the floor, then the library and the baseline (the
 * Go original's algorithm) with groups of 10, 100 and 1000 members hosted in this process, prints the tables and
 * writes them to `bench/results/latest.{json,md}`. Every etcd it started is stopped with its scope.
 *
 * Options: `--sizes=10,100,300,1000` (300 is not in the issue: it shows the trend where 1000 cannot be measured),
 * `--impls=library,library10,baseline,assignments,shards`, `--shard-sizes=10,100,1000` (the shards section: `runShards`
 * beside `runAssigned` with 1024 shards), `--out=bench/results`, `--log=warning` (the library's warnings; by default
 * errors only), `--fleet` (the fleet benchmark instead: bench/measures/fleet.ts).
 */
import { FileSystem, Path } from "@effect/platform"
import { NodeContext, NodeRuntime } from "@effect/platform-node"
import { defaultTeardown } from "@effect/platform/Runtime"
import { Console, Duration, Effect, Logger, LogLevel } from "effect"
import { execFileSync } from "node:child_process"
import * as os from "node:os"
import { etcdStatus, startEtcd } from "../test/support/etcd.js"
import * as Baseline from "./drivers/baseline.js"
import * as Library from "./drivers/library.js"
import { assignmentsMarkdown, measureAssignments } from "./measures/assignments.js"
import { BenchError } from "./measures/etcdMetrics.js"
import { runFleet } from "./measures/fleet.js"
import { runFleetShards } from "./measures/fleetShards.js"
import { measureFloor } from "./measures/floor.js"
import { failedRun, type GroupRun, type RunConfig } from "./measures/groupRun.js"
import { nowMs } from "./measures/runtime.js"
import { runGroup } from "./measures/scenarios.js"
import { measureShards, shardsMarkdown } from "./measures/shards.js"
import { markdown, type Report, row, targets } from "./reports/report.js"

const arg = (name: string): string | undefined =>
  process.argv.slice(2).find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3)

const sizes = (arg("sizes") ?? "10,100,300,1000").split(",").map(Number).filter((n) => Number.isInteger(n) && n > 0)
const impls = new Set((arg("impls") ?? "library,library10,baseline,assignments,shards").split(","))
const shardSizes = (arg("shard-sizes") ?? "10,100,1000").split(",").map(Number).filter((n) =>
  Number.isInteger(n) && n > 0
)
const outDir = arg("out") ?? "bench/results"
/** The library's own log lines (thousands of warnings when a large group breaks down); `--log=warning` shows them. */
const logLevel = arg("log") === "warning" ? LogLevel.Warning : arg("log") === "info" ? LogLevel.Info : LogLevel.Error

/** The whole run is bounded, so that a bug cannot hang it; the etcd is stopped either way. */
const totalWithin = Duration.minutes(14)
const memberTtl = Duration.seconds(10)
const crashTtlSeconds = 2

type Plan = Omit<RunConfig, "endpoint">

const libraryPlan = (size: number, clients: number): Plan => ({
  impl: "library",
  label: clients === 1 ? "library" : `library ×${clients} clients`,
  size,
  rounds: 7,
  stormWithin: Duration.seconds(30),
  rebuildWithin: Duration.seconds(45),
  // A group that cannot form in a storm of 1000 does not form a few at a time either (every join still reaches
  // every member); trying costs a minute and a flood of failed keepalives, so it is not attempted.
  rebuild: size < 1000,
  changeWithin: Duration.seconds(10),
  settle: Duration.millis(300),
  idleWindow: Duration.seconds(4),
  crashTtlSeconds,
  floorSamples: 300,
  makeDriver: () => Effect.die("replaced below")
})

const baselinePlan = (size: number): Plan => ({
  impl: "baseline",
  label: "baseline",
  size,
  rounds: size >= 1000 ? 1 : size >= 100 ? 5 : 7,
  // The bound for the baseline: a scenario that takes longer is reported as "> bound".
  stormWithin: Duration.seconds(60),
  rebuildWithin: Duration.seconds(90),
  rebuild: true,
  changeWithin: Duration.seconds(60),
  settle: Duration.seconds(1),
  idleWindow: Duration.seconds(4),
  crashTtlSeconds,
  floorSamples: 300,
  makeDriver: () => Effect.die("replaced below")
})

const plans = (endpoint: string): ReadonlyArray<RunConfig> => {
  const out: Array<RunConfig> = []
  const closeWithin = Duration.seconds(30)
  const prefillConcurrency = 10
  for (const size of sizes) {
    if (impls.has("library")) {
      out.push({
        ...libraryPlan(size, 1),
        endpoint,
        makeDriver: (group) =>
          Library.make({ endpoints: [endpoint], group, ttl: memberTtl, clients: 1, closeWithin, prefillConcurrency })
      })
    }
  }
  for (const size of sizes) {
    // Ten clients of 10 members each: the per-client sharing at work (10 watches, 10 reads); at 100 only, for time.
    if (impls.has("library10") && size === 100) {
      out.push({
        ...libraryPlan(size, 10),
        endpoint,
        makeDriver: (group) =>
          Library.make({ endpoints: [endpoint], group, ttl: memberTtl, clients: 10, closeWithin, prefillConcurrency })
      })
    }
  }
  for (const size of sizes) {
    if (impls.has("baseline")) {
      out.push({
        ...baselinePlan(size),
        endpoint,
        makeDriver: (group) =>
          Baseline.make({
            endpoints: [endpoint],
            group,
            ttlSeconds: Duration.toSeconds(memberTtl),
            requestWithin: Duration.seconds(30),
            closeWithin
          })
      })
    }
  }
  return out
}

/** The library's source the run measured: the commit, and whether `src/` had uncommitted changes. */
const source = Effect.try(() => {
  const git = (...args: Array<string>) => execFileSync("git", args, { encoding: "utf8", timeout: 5_000 }).trim()
  return { commit: git("rev-parse", "--short", "HEAD"), srcChanged: git("status", "--porcelain", "--", "src") !== "" }
}).pipe(Effect.orElseSucceed(() => ({ commit: "unknown", srcChanged: false })))

const command = process.argv.slice(2).length === 0
  ? "npm run bench"
  : `npm run bench -- ${process.argv.slice(2).join(" ")}`

const main = Effect.gen(function*() {
  const startedAt = yield* nowMs
  const loadBefore = os.loadavg()
  const measured = yield* source
  const node = yield* startEtcd({ name: "bench" })
  const status = yield* etcdStatus(node.clientUrl)
  yield* Console.log(`etcd ${status.version} at ${node.clientUrl} (pid ${node.pid ?? "?"}), ${os.cpus().length} cores`)

  const floor = yield* measureFloor({
    endpoints: [node.clientUrl],
    key: "bench/floor/idle",
    samples: 1000,
    warmup: 100
  })
  yield* Console.log(
    `floor (put → watch event, idle): median ${floor.median.toFixed(2)} ms, p99 ${floor.p99.toFixed(2)} ms`
  )

  const runs: Array<GroupRun> = []
  for (const plan of plans(node.clientUrl)) {
    yield* Console.log(`${plan.label}, ${plan.size} members`)
    // One run's failure is recorded and the others still run.
    const run = yield* runGroup(plan).pipe(
      Effect.catchAll((error) =>
        Effect.as(Console.log(`  failed: ${error.message}`, error.cause ?? ""), failedRun(plan, error.message))
      )
    )
    runs.push(run)
  }

  // Issue 3: from a membership change to every member running its new work, per runAssigned mode, beside the plain
  // `changes` convergence of the same change.
  const assignments = impls.has("assignments")
    ? yield* Effect.suspend(() => Console.log("runAssigned handover, 10 and 100 members")).pipe(
      Effect.zipRight(measureAssignments({ endpoint: node.clientUrl, sizes: [10, 100], rounds: 5 })),
      Effect.catchAllCause((cause) => Effect.as(Console.log("  failed", cause), []))
    )
    : []

  // Issue 13: sticky shards beside the assignment modes, 1024 shards, one join and one leave per round.
  const shards = impls.has("shards")
    ? yield* measureShards({
      endpoint: node.clientUrl,
      sizes: shardSizes,
      shards: 1024,
      rounds: (size) => (size >= 1000 ? 3 : 5),
      log: (line) => Console.log(line)
    })
    : []

  const rows = runs.map(row)
  const report: Report = {
    generatedAt: new Date().toISOString(),
    command,
    source: measured,
    machine: {
      cpus: os.cpus().length,
      node: process.versions.node,
      etcd: status.version,
      platform: process.platform,
      loadBefore: loadBefore.map((x) => Math.round(x * 100) / 100),
      loadAfter: os.loadavg().map((x) => Math.round(x * 100) / 100)
    },
    totalSeconds: ((yield* nowMs) - startedAt) / 1000,
    floor,
    rows,
    targets: targets(floor, rows, runs),
    runs,
    assignments,
    shards
  }
  const text = [
    markdown(report),
    ...(assignments.length === 0 ? [] : [
      `### Assignment handover (\`runAssigned\`, ms from the change)\n\n${assignmentsMarkdown(assignments)}`
    ]),
    ...(shards.length === 0 ? [] : [
      `### Sticky shards (\`runShards\` beside \`runAssigned\`, 1024 shards, ms from the change)\n\n${
        shardsMarkdown(shards, floor.p99)
      }`
    ])
  ].join("\n\n")
  yield* Console.log(`\n${text}`)

  const fs = yield* FileSystem.FileSystem
  const path = yield* Path.Path
  yield* fs.makeDirectory(outDir, { recursive: true })
  yield* fs.writeFileString(path.join(outDir, "latest.json"), `${JSON.stringify(report, null, 2)}\n`)
  yield* fs.writeFileString(path.join(outDir, "latest.md"), `${text}\n`)
  yield* Console.log(`\nwritten: ${path.join(outDir, "latest.md")}, ${path.join(outDir, "latest.json")}`)
}).pipe(
  Effect.scoped,
  Effect.timeoutFail({
    duration: totalWithin,
    onTimeout: () => new BenchError({ message: `the benchmark did not finish within ${Duration.format(totalWithin)}` })
  })
)

// The etcd is stopped when `main`'s scope closes. Members whose closing outlived its bound (a group that broke down)
// may still be retrying registrations against it; the benchmark ends regardless.
// `--fleet` (alone, or `--fleet=10x100,...`): the fleet benchmark instead, members in processes of their own.
const fleet = process.argv.slice(2).some((a) => a === "--fleet" || a.startsWith("--fleet="))
// `--fleet-shards` (alone, or `--fleet-shards=50x1,20x50`): runShards across processes (bench/measures/fleetShards.ts).
const fleetShards = process.argv.slice(2).some((a) => a === "--fleet-shards" || a.startsWith("--fleet-shards="))

NodeRuntime.runMain(
  (fleetShards ? runFleetShards : fleet ? runFleet : main).pipe(
    Effect.provide(NodeContext.layer),
    Logger.withMinimumLogLevel(logLevel)
  ),
  {
    teardown: (exit, onExit) =>
      defaultTeardown(exit, (code) => {
        onExit(code)
        process.exit(code)
      })
  }
)
