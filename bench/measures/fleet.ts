/**
 * `npm run bench -- --fleet`: a fleet of members spread over P processes (M members each, one client per process)
 * against one etcd this benchmark starts, per configuration P x M. Each process is the real node process running
 * `bench/children/fleetMember.ts` (bundled to JavaScript first), so the pid held is the process. Not a test:
 * figures, not assertions.
 *
 * Per configuration: the join storm from "go" (processes already started, clients connected) until every member holds
 * the full count; failed joins; `Info.invalid` seen by members that never lost etcd; Info changes per member during
 * the storm; five graceful leaves (from the leave's start until every member holds the new count); one crash (SIGKILL
 * of a process, until every member holds the count without it); etcd CPU and bytes sent per join; the members' CPU
 * in the storm and their worst event-loop delay; RSS per process.
 *
 * Options: `--fleet=10x100,50x20,100x10,20x500` (configurations), `--fleet-baseline=10x100` (the Go original's
 * algorithm, in the same run), `--ttl=10`, `--nice=0` (the member processes' niceness), `--out=bench/results`.
 * Environment: `FLEET_LOG=<dir>` (each process's warnings), `FLEET_PROFILE=<dir>` (CPU profiles of the first process;
 * starting the inspector's profiler at "go" costs that process about 2 s of CPU).
 */
import { NodeRuntime } from "@effect/platform-node"
import { Console, Duration, Effect, Option } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import { fileURLToPath } from "node:url"
import { startEtcd } from "../../test/support/etcd.js"
import { BenchError, diff, scrapeOrUnreadable } from "./etcdMetrics.js"
import { measureFloor } from "./floor.js"
import { allOf, bundle, type Proc, spawnChild, stopAll } from "./processes.js"
import { summarize } from "./stats.js"

const arg = (name: string): string | undefined =>
  process.argv.slice(2).find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3)

const parseConfigs = (text: string) =>
  text.split(",").filter((c) => c !== "").map((c) => {
    const [p, m] = c.split("x").map(Number)
    return { processes: p!, members: m! }
  })

const configs = parseConfigs(arg("fleet") ?? "10x100,50x20,100x10,20x500")
const baselines = parseConfigs(arg("fleet-baseline") ?? "10x100")
const ttlSeconds = Number(arg("ttl") ?? "10")
const outDir = arg("out") ?? "bench/results"
/**
 * `--nice=N`: member processes run at this niceness, etcd at the bench's own. In production etcd has machines of its
 * own; here a hundred busy Node processes share two cores with it, and at equal priority they starve it of CPU.
 */
const niceness = Number(arg("nice") ?? "0")
const memberScript = fileURLToPath(new URL("../children/fleetMember.ts", import.meta.url))

/**
 * `FLEET_PROFILE=<dir>`: the first process of each configuration writes CPU profiles there: its whole life
 * (`--cpu-prof`), and the storm alone (`storm-<group>.cpuprofile`).
 */
const profileDir = process.env["FLEET_PROFILE"]
/** `FLEET_LOG=<dir>`: each process logs warnings and errors to `<dir>/<group>-<n>.log` (otherwise errors only). */
const logDir = process.env["FLEET_LOG"]

const spawnProc = (file: string, impl: string, endpoint: string, group: string, members: number, n: number): Proc => {
  const profile = n === 0 && profileDir !== undefined
  return spawnChild({
    file,
    args: [impl, endpoint, group, String(members), String(ttlSeconds)],
    nodeArgs: profile ? ["--cpu-prof", "--cpu-prof-dir", profileDir] : [],
    stderrFile: logDir === undefined ? undefined : `${logDir}/${group.replace(/\//g, "_")}-${n}.log`,
    env: {
      ...(logDir === undefined ? {} : { FLEET_LOG_LEVEL: "Warning" }),
      ...(profile ? { FLEET_STORM_PROFILE: `${profileDir}/storm-${group.replace(/\//g, "_")}.cpuprofile` } : {})
    },
    niceness
  })
}

interface Result {
  readonly impl: string
  readonly config: string
  readonly members: number
  readonly formed: boolean
  readonly stormMs: number
  readonly failedJoins: number
  /** Why joins failed, by error. */
  readonly failedBy: Readonly<Record<string, number>>
  readonly reregistrations: number
  readonly spuriousInvalid: number
  readonly changesPerMember: { readonly mean: number; readonly max: number }
  readonly leaveMs: { readonly median: number; readonly max: number; readonly samples: number }
  readonly crashMs: number
  readonly etcdCpuMsPerJoin: number
  readonly etcdBytesPerJoin: number
  readonly rssMb: { readonly mean: number; readonly max: number }
  /** CPU the member processes used from "go" until the group formed, all of them together. */
  readonly membersCpuSeconds: number
  /** How late member processes ran their timers in the storm (the worst process's p99 and max). */
  readonly loopDelayMs: { readonly p99: number; readonly max: number }
}

const stats = (procs: ReadonlyArray<Proc>) =>
  Effect.forEach(procs, (p) => {
    p.send("stats")
    return p.next((l) => l.e === "stats", "20 seconds")
  }, { concurrency: "unbounded" }).pipe(Effect.map((all) => all.flatMap((o) => Option.isSome(o) ? [o.value] : [])))

const runConfig = (file: string, impl: string, processes: number, perProcess: number) =>
  Effect.scoped(Effect.gen(function*() {
    const etcd = yield* startEtcd({ name: `fleet-${impl}-${processes}x${perProcess}` })
    const group = `fleet/${impl}-${processes}x${perProcess}`
    const total = processes * perProcess
    const config = `${processes} x ${perProcess}`
    yield* Console.log(`fleet ${impl} ${config} = ${total}: starting ${processes} processes`)
    const procs = yield* Effect.acquireRelease(
      Effect.sync(() =>
        Array.from({ length: processes }, (_, i) => spawnProc(file, impl, etcd.clientUrl, group, perProcess, i))
      ),
      (ps) =>
        Effect.flatMap(
          Effect.promise(() => stopAll(ps, "30 seconds")),
          (left) => left.length === 0 ? Effect.void : Console.log(`  processes not gone: ${left.join(", ")}`)
        )
    )
    const ready = yield* allOf(procs, (l) => l.e === "ready", "120 seconds")
    if (ready.answered < processes) return yield* new BenchError({ message: `${ready.answered} processes ready` })

    // --- The storm ---
    const before = yield* scrapeOrUnreadable(etcd.clientUrl)
    const go = Date.now()
    const stormWithin = Duration.seconds(total >= 10_000 ? 240 : 120)
    const formedWait = allOf(procs, (l) => l.e === "all" && l["count"] === total, stormWithin)
    for (const p of procs) p.send(`go ${total}`)
    const formed = yield* formedWait
    const stormMs = formed.last - go
    const after = yield* scrapeOrUnreadable(etcd.clientUrl)
    const cost = diff(after, before)
    const storm = yield* stats(procs)
    const sum = (key: string) => storm.reduce((a, l) => a + Number(l[key] ?? 0), 0)
    const changesTotal = sum("changesTotal")
    yield* Console.log(
      `  storm ${formed.answered === processes ? `${Math.round(stormMs)} ms` : "did not form"}; failed joins ${
        sum("failedJoins")
      }, re-registrations ${sum("reregistrations")}, invalid ${sum("invalid")}`
    )

    // --- Five graceful leaves, then a crash ---
    let live = total
    const leaves: Array<number> = []
    const leftBy = procs.map(() => 0)
    for (let i = 0; i < 5 && formed.answered === processes; i++) {
      live--
      const at = (i * 7) % processes
      leftBy[at]!++
      const leaver = procs[at]!
      const seen = allOf(procs, (l) => l.e === "all" && l["count"] === live, "30 seconds")
      for (const p of procs) p.send(`target ${live}`)
      const leaving = leaver.next((l) => l.e === "leaving", "30 seconds")
      leaver.send("leave")
      const started = yield* leaving
      const reached = yield* seen
      if (Option.isSome(started) && reached.answered === processes) {
        leaves.push(reached.last - Number(started.value["at"]))
      }
    }
    let crashMs = NaN
    if (formed.answered === processes && processes > 1) {
      const victim = procs[processes - 1]!
      const others = procs.slice(0, -1)
      live -= perProcess - leftBy[processes - 1]!
      const seen = allOf(others, (l) => l.e === "all" && l["count"] === live, `${ttlSeconds + 30} seconds`)
      for (const p of others) p.send(`target ${live}`)
      const killedAt = Date.now()
      victim.kill()
      const reached = yield* seen
      if (reached.answered === others.length) crashMs = reached.last - killedAt
    }
    const end = yield* stats(procs.slice(0, -1))
    const rss = end.map((l) => Number(l["rss"]) / 1e6)
    const leaveSummary = summarize(leaves.length === 0 ? [NaN] : leaves)
    const result: Result = {
      impl,
      config,
      members: total,
      formed: formed.answered === processes,
      stormMs,
      failedJoins: sum("failedJoins"),
      failedBy: storm.reduce<Record<string, number>>((all, l) => {
        for (const [why, n] of Object.entries((l["failedBy"] ?? {}) as Record<string, number>)) {
          all[why] = (all[why] ?? 0) + n
        }
        return all
      }, {}),
      reregistrations: sum("reregistrations"),
      spuriousInvalid: end.reduce((a, l) => a + Number(l["invalid"] ?? 0), 0),
      changesPerMember: { mean: changesTotal / total, max: Math.max(...storm.map((l) => Number(l["changesMax"]))) },
      leaveMs: { median: leaveSummary.median, max: leaveSummary.max, samples: leaves.length },
      crashMs,
      etcdCpuMsPerJoin: (cost.cpuSeconds * 1000) / total,
      etcdBytesPerJoin: cost.sentBytes / total,
      membersCpuSeconds: sum("cpuSinceGoMs") / 1000,
      loopDelayMs: {
        p99: Math.max(...storm.map((l) => Number(l["loopDelayP99Ms"] ?? 0))),
        max: Math.max(...storm.map((l) => Number(l["loopDelayMaxMs"] ?? 0)))
      },
      rssMb: { mean: rss.reduce((a, b) => a + b, 0) / Math.max(1, rss.length), max: Math.max(...rss) }
    }
    yield* Console.log(`  ${JSON.stringify(result)}`)
    return result
  }))

const fmt = (x: number, unit = "") => Number.isFinite(x) ? `${Math.round(x).toLocaleString("en-US")}${unit}` : "-"

const markdown = (results: ReadonlyArray<Result>, floorP99: number, load: string): string =>
  [
    `Fleet (${new Date().toISOString().slice(0, 10)}; ${load}; TTL ${ttlSeconds} s; floor p99 ${
      floorP99.toFixed(1)
    } ms${niceness === 0 ? "" : `; member processes at niceness ${niceness}, etcd at 0`})`,
    "",
    "| impl | P x M | members | join storm | failed joins (re-registrations) | spurious invalid | Info changes per member (mean / max) | one leave, to all (median / max of 5) | one crash, to all | etcd CPU per join | etcd bytes sent per join | members' CPU in the storm | RSS per process (mean / max) |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ...results.map((r) =>
      `| ${r.impl} | ${r.config} | ${r.members.toLocaleString("en-US")} | ${
        r.formed ? fmt(r.stormMs, " ms") : "did not form"
      } | ${r.failedJoins} (${r.reregistrations}) | ${r.spuriousInvalid} | ${r.changesPerMember.mean.toFixed(1)} / ${
        fmt(r.changesPerMember.max)
      } | ${fmt(r.leaveMs.median)} / ${fmt(r.leaveMs.max, " ms")} | ${fmt(r.crashMs, " ms")} | ${
        r.etcdCpuMsPerJoin.toFixed(2)
      } ms | ${fmt(r.etcdBytesPerJoin, " B")} | ${r.membersCpuSeconds.toFixed(1)} s | ${fmt(r.rssMb.mean)} / ${
        fmt(r.rssMb.max, " MB")
      } |`
    )
  ].join("\n")

export const runFleet = Effect.gen(function*() {
  const file = yield* bundle(memberScript, "fleetMember")
  const load = `load average ${os.loadavg().map((x) => x.toFixed(2)).join(" ")} at start, ${os.cpus().length} cores`
  const floor = yield* Effect.scoped(Effect.gen(function*() {
    const etcd = yield* startEtcd({ name: "fleet-floor" })
    return yield* measureFloor({ endpoints: [etcd.clientUrl], key: "fleet/floor", samples: 200, warmup: 20 })
  }))
  const results: Array<Result> = []
  for (const c of baselines) results.push(yield* runConfig(file, "baseline", c.processes, c.members))
  for (const c of configs) results.push(yield* runConfig(file, "library", c.processes, c.members))
  const text = markdown(results, floor.p99, load)
  yield* Console.log(text)
  fs.mkdirSync(outDir, { recursive: true })
  fs.writeFileSync(`${outDir}/fleet.md`, text + "\n")
  fs.writeFileSync(`${outDir}/fleet.json`, JSON.stringify({ load, floorP99: floor.p99, results }, null, 2) + "\n")
})

if (process.argv[1] === fileURLToPath(import.meta.url)) NodeRuntime.runMain(runFleet)
