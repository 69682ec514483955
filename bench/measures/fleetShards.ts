/**
 * `npm run bench -- --fleet-shards=50x1,20x50`: `EtcdSeq.runShards` across processes. Per configuration P x M, a
 * fleet of P node processes running `bench/children/shardsMember.ts` (bundled first), M members each on one client,
 * every member running `runShards` over S shards with a work that reports each shard's start and stop (its stop takes
 * `--work-stop`: a finalizer that sleeps). One etcd per configuration, started here, and its floor (put to watch
 * event, the bare etcd3 client) measured on it before the fleet starts. Not a test: figures, not assertions.
 *
 * The group forms ten processes at a time (spawned, then joined). Changes measured, in order: `--fleet-rounds` times
 * a join (a spare process with one member, as a new pod) and a graceful leave (one member of a fleet process); a crash
 * (SIGKILL of the last spare process, one member); a drain of one fleet member (`EtcdSeq.drain`), then that member's
 * leave; and with weights 1, 2 and 4 mixed (the membership option `weight`), each member's shards against its weight
 * share. Per change: the shards that moved (and the ideal), shards started twice, the longest a moved shard was
 * unowned (its old owner's stop began, to its new owner's start; a crash counts from the kill), every moved shard
 * running at its new owner, etcd requests (keepalives aside, as `etcdMetrics.requests` counts), and the CPU time the
 * member processes spent (on a machine of few cores, what bounds the times above when every process works on each
 * change). Drain and weights are "n/a" with an installed `EtcdSeq` that lacks them.
 *
 * A change has converged when the group's view (`EtcdSeq.observe`, from this process) has the members expected and
 * waits for nothing, and every shard runs at exactly one member, the one whose claim holds it, with no stop pending.
 *
 * Clock: every process reports `process.hrtime.bigint()` less the epoch this process passes it, so all times are on
 * CLOCK_MONOTONIC, which every process of the machine shares (`Date.now()` may be stepped or slewed by NTP).
 *
 * Options: `--fleet-shards=50x1,20x50`, `--shards=1024`, `--work-stop=50ms`, `--fleet-rounds=2`, `--ttl=10`,
 * `--weights=auto` (`force`: pass `weight` even if not accepted, to try the scenario; `off`), `--within=10m` (the whole
 * run; processes and etcds are stopped either way), `--nice=0` (the member processes' niceness),
 * `--out=bench/results` (`fleet-shards.md` and `.json`). `FLEET_LOG=<dir>`: each process's warnings to a file of its
 * own; `FLEET_DEBUG=1`: at each change's convergence, the view and the ledger as seen, and etcd's requests by method.
 * `FLEET_PROFILE=<dir>`: each member process profiles each change, from before it to 300 ms after it converged, and
 * writes `<dir>/<P>x<M>-<change>-<n>-<process>.cpuprofile`.
 */
import { Cause, Console, Duration, Effect, Exit, Option, Stream } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import { fileURLToPath } from "node:url"
import { Etcd, EtcdSeq, type EtcdSeqOptions, type GroupView } from "../../src/index.js"
import { startEtcd } from "../../test/support/etcd.js"
import { BenchError, diff, requests, scrapeOrUnreadable } from "./etcdMetrics.js"
import { measureFloor } from "./floor.js"
import { allOf, bundle, type Line, type Proc, spawnChild, stopAll } from "./processes.js"
import { round, summarize } from "./stats.js"

// --- Options ---

const arg = (name: string): string | undefined =>
  process.argv.slice(2).find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3)

/** `50ms`, `2s`, `10m`, or a bare number of milliseconds. */
const millisOf = (text: string): number => {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(text.trim())
  if (match === null) throw new Error(`not a duration: ${text} (e.g. 50ms, 2s, 10m)`)
  return Number(match[1]) * (match[2] === "m" ? 60_000 : match[2] === "s" ? 1_000 : 1)
}

const configs = (arg("fleet-shards") ?? "50x1,20x50").split(",").filter((c) => c !== "").map((c) => {
  const [p, m] = c.split("x").map(Number)
  return { processes: p!, perProcess: m! }
})
const shards = Number(arg("shards") ?? "1024")
const workStopMs = millisOf(arg("work-stop") ?? "50ms")
const rounds = Math.max(1, Number(arg("fleet-rounds") ?? "2"))
const ttlSeconds = Number(arg("ttl") ?? "10")
const weightsMode = arg("weights") ?? "auto"
const withinMs = millisOf(arg("within") ?? "10m")
const niceness = Number(arg("nice") ?? "0")
const outDir = arg("out") ?? "bench/results"
const logDir = process.env["FLEET_LOG"]
const profileDir = process.env["FLEET_PROFILE"]
const memberScript = fileURLToPath(new URL("../children/shardsMember.ts", import.meta.url))

/** The weights of the weighted scenario, by a member's number in the fleet. */
const weightCycle = [1, 2, 4] as const
const pause = Duration.millis(500)
const settleAfter = Duration.millis(300)
const stormWithin = Duration.minutes(3)
/** Processes spawned, and joined, at a time. */
const wave = 10
const changeWithin = Duration.seconds(60)

// --- The shared clock ---

/** CLOCK_MONOTONIC at the start: every child gets it and reports milliseconds since. */
const epoch = process.hrtime.bigint()
const now = () => Number(process.hrtime.bigint() - epoch) / 1e6

// --- The ledger: every shard's runs, from every process's reports ---

interface Run {
  readonly owner: string
  /** The member id of the claim it runs under: the holder the group's view names. */
  readonly id: string
  readonly shard: number
  readonly start: number
  /** When its owner began stopping it (the work's interruption), or when its process was killed. */
  stopping: number
  /** When its work's stop ended (the finalizer returned): the claim is released after it. */
  stop: number
}

interface MemberRecord {
  readonly owner: string
  readonly proc: number
  readonly id: string
  readonly weight: number | undefined
  gone: boolean
}

const makeLedger = () => {
  const runs: Array<Run> = []
  /** Per shard, the runs not stopping, by owner: exactly one once the group has converged. */
  const holding = Array.from({ length: shards }, () => new Map<string, Run>())
  const stopping = new Map<string, Run>()
  const members = new Map<string, MemberRecord>()
  const failures: Array<string> = []
  const ownerOf = (proc: number, line: Line) => `${proc}:${String(line["m"])}`
  const onLine = (proc: number) => (line: Line) => {
    const owner = ownerOf(proc, line)
    const at = Number(line["at"])
    const s = Number(line["s"])
    if (line.e === "joined") {
      const weight = line["weight"] === null ? undefined : Number(line["weight"])
      members.set(owner, { owner, proc, id: String(line["id"]), weight, gone: false })
    } else if (line.e === "left") {
      const m = members.get(owner)
      if (m !== undefined) m.gone = true
    } else if (line.e === "start") {
      const run: Run = { owner, id: String(line["id"]), shard: s, start: at, stopping: Infinity, stop: Infinity }
      runs.push(run)
      holding[s]!.set(owner, run)
    } else if (line.e === "stopping") {
      const run = holding[s]!.get(owner)
      if (run === undefined) return
      run.stopping = at
      holding[s]!.delete(owner)
      stopping.set(`${owner}/${s}`, run)
    } else if (line.e === "stop") {
      const run = stopping.get(`${owner}/${s}`)
      if (run === undefined) return
      run.stop = at
      stopping.delete(`${owner}/${s}`)
    } else if (line.e === "failed") failures.push(`${owner}: ${String(line["why"])}`)
  }
  /** A SIGKILLed process: its runs end at `at`, its members are gone (their claims go with the lease, later). */
  const killed = (proc: number, at: number) => {
    const prefix = `${proc}:`
    for (const byOwner of holding) {
      for (const [owner, run] of byOwner) {
        if (!owner.startsWith(prefix)) continue
        run.stopping = at
        run.stop = at
        byOwner.delete(owner)
      }
    }
    for (const [key, run] of stopping) {
      if (!key.startsWith(prefix)) continue
      run.stop = at
      stopping.delete(key)
    }
    for (const m of members.values()) if (m.proc === proc) m.gone = true
  }
  /** Each shard's run now: the one run holding it, `undefined` where none or several do. */
  const current = (): Array<Run | undefined> => holding.map((m) => (m.size === 1 ? [...m.values()][0] : undefined))
  const live = () => [...members.values()].filter((m) => !m.gone)
  return { runs, holding, stopping, members, failures, onLine, killed, current, live }
}

// --- Results ---

type Kind = "join" | "leave" | "crash" | "drain" | "leave after drain"

interface Change {
  readonly kind: Kind
  readonly sizeBefore: number
  readonly sizeAfter: number
  readonly moved: number
  readonly ideal: number
  /** Shards started more than once during the change (moved, then moved again). */
  readonly twice: number
  /** Moved shards whose new owner started before the old owner's stop ended: never, if claims hold. */
  readonly overlaps: number
  /** Per moved shard: its old owner's stop began (or the kill), to its new owner's start. */
  readonly unowned: ReadonlyArray<number>
  /** Per moved shard: its old owner's stop ended, to its new owner's start (the protocol's part). */
  readonly afterStop: ReadonlyArray<number>
  /** Per moved shard: the change, to its new owner's start. */
  readonly running: ReadonlyArray<number>
  readonly convergedMs: number
  readonly requests: number
  /** CPU time (user + system) of the member processes alive before and after, from the change to 300 ms after. */
  readonly cpuMs: number
}

interface WeightClass {
  readonly weight: number
  readonly members: number
  /** The shards a member of this weight should own: S · w / Σw. */
  readonly share: number
  readonly ownedMean: number
  readonly ownedMin: number
  readonly ownedMax: number
}

interface Weights {
  readonly classes: ReadonlyArray<WeightClass>
  /** The largest |owned / share - 1| of any member. */
  readonly worstDeviation: number
  /**
   * Members whose shards are within 25% of their share, in whole shards: from ⌊0.75 · share⌋ to ⌈1.25 · share⌉ (a
   * share of 0.44 shards cannot be met closer than 0 or 1).
   */
  readonly within25: number
  readonly members: number
  /** True when the installed EtcdSeq did not accept `weight` and the scenario ran anyway (`--weights=force`). */
  readonly forced: boolean
}

interface ConfigResult {
  readonly config: string
  readonly processes: number
  readonly perProcess: number
  readonly members: number
  readonly floor: { readonly median: number; readonly p99: number }
  stormMs: number
  readonly changes: Array<Change>
  drain: "n/a" | "ran"
  weights: Weights | "n/a"
  /** Whether the scenario with weights was to run (`weight` read by this build, or forced). */
  readonly weightsRead: boolean
  readonly notes: Array<string>
  loadAfter: ReadonlyArray<number>
}

// --- Feature checks: drain and weight, which an older installed build lacks ---

/** `EtcdSeq.drain`, an `Effect<void, EtcdSeqError, EtcdSeq>` (or a function returning one): there or not. */
const drainAvailable = (): boolean => {
  const api: unknown = (EtcdSeq as unknown as Record<string, unknown>)["drain"]
  return Effect.isEffect(api) || typeof api === "function"
}

/**
 * Whether `EtcdSeq.make` reads the option `weight`: an invalid weight is refused (`InvalidOptions` naming `weight`,
 * before any I/O) once it does; an EtcdSeq that ignores it joins (and leaves at once, from a group of its own).
 */
const weightAccepted = (endpoint: string) =>
  Effect.gen(function*() {
    const etcd = yield* Etcd.make({ endpoints: [endpoint] })
    const options: EtcdSeqOptions & { readonly weight: number } = { key: "bench-probe/weight", weight: -1 }
    const exit = yield* EtcdSeq.make(options).pipe(Effect.provideService(Etcd, etcd), Effect.scoped, Effect.exit)
    if (Exit.isSuccess(exit)) return false
    return Option.match(Cause.failureOption(exit.cause), {
      onNone: () => false,
      onSome: (e) => e._tag === "InvalidOptions" && e.field === "weight"
    })
  }).pipe(Effect.scoped, Effect.orElseSucceed(() => false))

// --- One configuration ---

/** Clock ticks per second of `/proc/<pid>/stat` (USER_HZ: 100 on Linux, whatever the kernel's own HZ). */
const userHz = 100

/** CPU time (user + system) of each process, in ms, by pid: those whose `/proc/<pid>/stat` is readable. */
const cpuTimes = (pids: ReadonlyArray<number>): Map<number, number> => {
  const times = new Map<number, number>()
  for (const pid of pids) {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
      // After the command name (which may hold spaces): state is field 3, utime 14, stime 15.
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
      times.set(pid, (Number(fields[11]) + Number(fields[12])) * 1000 / userHz)
    } catch {
      // Gone: its time is not counted.
    }
  }
  return times
}

/** The CPU time the processes alive at both readings spent between them, in ms. */
const cpuBetween = (before: ReadonlyMap<number, number>, after: ReadonlyMap<number, number>): number => {
  let total = 0
  for (const [pid, t] of after) {
    const t0 = before.get(pid)
    if (t0 !== undefined) total += t - t0
  }
  return total
}

const until = (done: () => boolean, within: Duration.DurationInput, what: () => string) =>
  Effect.gen(function*() {
    const deadline = now() + Duration.toMillis(Duration.decode(within))
    while (!done()) {
      if (now() > deadline) {
        return yield* new BenchError({ message: `${what()}: not within ${Duration.format(Duration.decode(within))}` })
      }
      yield* Effect.sleep("10 millis")
    }
  })

const runConfig = (file: string, processes: number, perProcess: number, weights: boolean, result: ConfigResult) =>
  Effect.scoped(
    Effect.gen(function*() {
      const config = `${processes}x${perProcess}`
      const etcd = yield* startEtcd({ name: `fleet-shards-${config}` })
      const floor = yield* measureFloor({ endpoints: [etcd.clientUrl], key: "fleet/floor", samples: 200, warmup: 20 })
      Object.assign(result.floor, { median: floor.median, p99: floor.p99 })
      yield* Console.log(
        `fleet shards ${config}: floor p99 ${floor.p99.toFixed(1)} ms; starting ${processes} + ${rounds} processes`
      )
      const group = `fleet-shards/${config}`
      const ledger = makeLedger()

      // --- The processes: the fleet, and one spare per round (each joins once, as a new pod) ---
      // Spawned (and the group formed) ten processes at a time: fifty node processes loading at once, then joining at
      // once, starve a loaded two-core machine (etcd with it) for minutes, and members fence themselves.
      const procs: Array<Proc> = []
      yield* Effect.addFinalizer(() =>
        Effect.flatMap(
          Effect.promise(() => stopAll(procs, "30 seconds")),
          (left) => left.length === 0 ? Effect.void : Console.log(`  processes not gone: ${left.join(", ")}`)
        )
      )
      for (let from = 0; from < processes + rounds; from += wave) {
        const batch = Array.from({ length: Math.min(wave, processes + rounds - from) }, (_, k) => {
          const i = from + k
          const proc = spawnChild({
            file,
            args: [etcd.clientUrl, group, String(shards), String(ttlSeconds), String(epoch), String(workStopMs)],
            stderrFile: logDir === undefined ? undefined : `${logDir}/fleet-shards-${config}-${i}.log`,
            env: logDir === undefined ? {} : { FLEET_LOG_LEVEL: "Warning" },
            niceness
          })
          proc.onLine(ledger.onLine(i))
          procs.push(proc)
          return proc
        })
        const ready = yield* allOf(batch, (l) => l.e === "ready", "120 seconds")
        if (ready.answered < batch.length) {
          return yield* new BenchError({ message: `${ready.answered} of ${batch.length} processes ready` })
        }
      }
      const fleet = procs.slice(0, processes)
      const spares = procs.slice(processes)

      // --- The group's view, from outside ---
      let view: GroupView | undefined
      const observer = yield* Etcd.make({ endpoints: [etcd.clientUrl] })
      yield* EtcdSeq.observe(group).pipe(
        Stream.runForEach((v) => Effect.sync(() => view = v)),
        Effect.provideService(Etcd, observer),
        Effect.ignore,
        Effect.forkScoped
      )

      /**
       * Converged: the view has `members` and waits for nothing; every shard runs at its claim's holder alone.
       * `exempt`: a member that may own nothing (a draining one), or `"all"` (weighted: a light member may own none).
       */
      const converged = (members: number, extra: () => boolean, exempt?: string) => () => {
        const v = view
        if (v === undefined || v.members.length !== members || v.shards === undefined || v.waiting.length > 0) {
          return false
        }
        // Every member's own report of its join is in, and no stop is pending.
        if (ledger.live().length !== members || ledger.stopping.size > 0) return false
        const runs = ledger.current()
        if (!v.shards.owners.every((o) => o.holder !== undefined && runs[o.shard]?.id === o.holder)) return false
        // Until a newcomer's declaration of the shards is in the view the plan leaves it out (and the view waits for
        // nothing): with S >= n every member owns a shard once the plan counts it (a draining one aside, see `extra`).
        const owning = new Set(runs.map((r) => r?.owner))
        return extra() && (shards < members || exempt === "all" ||
          ledger.live().every((m) => m.owner === exempt || owning.has(m.owner)))
      }
      const why = (members: number) => () => {
        const runs = ledger.current()
        const owning = new Set(runs.map((r) => r?.owner))
        return `view: ${view?.members.length ?? "?"} of ${members} members, waiting for ${
          view?.waiting.slice(0, 3).join("; ") ?? "?"
        }; reports: ${ledger.live().length} members (${
          ledger.live().filter((m) => !owning.has(m.owner)).length
        } owning nothing), ${ledger.stopping.size} stops pending, ${
          ledger.holding.filter((h) => h.size !== 1).length
        } shards not at exactly one member, ${
          runs.filter((r, s) => r !== undefined && view?.shards?.owners[s]?.holder !== r.id).length
        } at another than the claim's holder; failures: ${ledger.failures.slice(0, 2).join("; ")}`
      }

      // --- The group forms, ten processes joining at a time ---
      const stormStart = now()
      let size = 0
      for (let from = 0; from < processes; from += wave) {
        const batch = fleet.slice(from, from + wave)
        for (const p of batch) p.send(`join ${Array.from({ length: perProcess }, () => "-").join(",")}`)
        size += batch.length * perProcess
        yield* until(converged(size, () => true), stormWithin, why(size))
      }
      result.stormMs = now() - stormStart
      yield* Console.log(`  formed: ${size} members in ${Math.round(result.stormMs)} ms`)

      /** One change: `act` makes it and returns its moment; measured once the group converged on `members`. */
      const change = (
        kind: Kind,
        members: number,
        ideal: number,
        act: Effect.Effect<number, BenchError>,
        extra: () => boolean = () => true,
        exempt?: string
      ) =>
        Effect.gen(function*() {
          yield* Effect.sleep(pause)
          const before = ledger.current()
          const mark = ledger.runs.length
          const counters = yield* scrapeOrUnreadable(etcd.clientUrl)
          const cpuBefore = cpuTimes(procs.map((p) => p.pid))
          if (profileDir !== undefined) { for (const p of procs) p.send("profile-start") }
          const t0 = yield* act
          const within = kind === "crash" ? Duration.sum(changeWithin, Duration.seconds(ttlSeconds)) : changeWithin
          yield* until(converged(members, extra, exempt), within, () => `${kind}: ${why(members)()}`)
          const convergedMs = now() - t0
          if (process.env["FLEET_DEBUG"] !== undefined) {
            const runs = ledger.current()
            console.log(JSON.stringify({
              kind,
              members: view?.members.length,
              waiting: view?.waiting.length,
              noRun: runs.filter((r) => r === undefined).length,
              holders: [...new Set(view?.shards?.owners.map((o) => o.holder))],
              planned: [...new Set(view?.shards?.owners.map((o) => o.planned))],
              live: ledger.live().map((m) => [m.owner, m.id])
            }))
          }
          yield* Effect.sleep(settleAfter)
          const delta = diff(yield* scrapeOrUnreadable(etcd.clientUrl), counters)
          const cost = requests(delta)
          const cpuMs = cpuBetween(cpuBefore, cpuTimes(procs.map((p) => p.pid)))
          if (profileDir !== undefined) {
            const n = result.changes.filter((c) => c.kind === kind).length
            procs.forEach((p, i) =>
              p.send(`profile-stop ${profileDir}/${config}-${kind.replaceAll(" ", "-")}-${n}-${i}.cpuprofile`)
            )
          }
          if (process.env["FLEET_DEBUG"] !== undefined) {
            console.log(JSON.stringify({ started: delta.started, received: delta.received }))
          }
          const after = ledger.current()
          const starts = new Map<number, number>()
          for (const run of ledger.runs.slice(mark)) starts.set(run.shard, (starts.get(run.shard) ?? 0) + 1)
          const unowned: Array<number> = []
          const afterStop: Array<number> = []
          const running: Array<number> = []
          let overlaps = 0
          let unsettled = 0
          for (let s = 0; s < shards; s++) {
            const old = before[s]
            const next = after[s]
            if (next === undefined) {
              unsettled++
              continue
            }
            if (old?.owner === next.owner) continue
            running.push(next.start - t0)
            // A shard nobody ran waits for nobody's stop: it counts from the change.
            unowned.push(next.start - (old === undefined ? t0 : old.stopping))
            afterStop.push(next.start - (old === undefined ? t0 : old.stop))
            if (old !== undefined && next.start < old.stop) overlaps++
          }
          const sample: Change = {
            kind,
            sizeBefore: size,
            sizeAfter: members,
            moved: running.length,
            ideal,
            twice: [...starts.values()].filter((n) => n > 1).length,
            overlaps,
            unowned,
            afterStop,
            running,
            convergedMs,
            requests: cost,
            cpuMs
          }
          size = members
          result.changes.push(sample)
          if (unsettled > 0) {
            result.notes.push(`${kind}: ${unsettled} shards without exactly one owner after the settle`)
          }
          yield* Console.log(
            `  ${kind}: moved ${sample.moved} (ideal ${round(ideal)}), twice ${sample.twice}, unowned max ${
              round(Math.max(0, ...unowned))
            } ms, all running ${round(Math.max(0, ...running))} ms, ${cost} requests, members' CPU ${round(cpuMs)} ms`
          )
        })

      /** Sends `command` to `proc` and returns the `at` of its answer `e` (the change's moment, on the shared clock). */
      const announced = (proc: Proc, command: string, e: string) =>
        Effect.gen(function*() {
          const from = proc.seen()
          proc.send(command)
          const line = yield* proc.next((l) => l.e === e || l.e === "drain-na" || l.e === "failed", "60 seconds", from)
          if (Option.isNone(line) || line.value.e !== e) {
            return yield* new BenchError({ message: `${command}: ${Option.isNone(line) ? "no answer" : line.value.e}` })
          }
          return Number(line.value["at"])
        })

      // --- Joins and leaves ---
      for (let r = 0; r < rounds; r++) {
        yield* change("join", size + 1, shards / (size + 1), announced(spares[r]!, "join -", "joining"))
        yield* change("leave", size - 1, shards / size, announced(fleet[(r * 7) % processes]!, "leave", "leaving"))
      }

      // --- A crash: the last spare, one member, SIGKILLed; its claims go with its lease ---
      const victim = processes + rounds - 1
      yield* change(
        "crash",
        size - 1,
        shards / size,
        Effect.sync(() => {
          const at = now()
          procs[victim]!.kill()
          ledger.killed(victim, at)
          return at
        })
      )

      // --- A drain, then the drained member's leave (which should move nothing) ---
      if (drainAvailable()) {
        result.drain = "ran"
        // The last fleet process with a member left (the leaves above took the first members of some), or, when the
        // leaves took them all (as many rounds as processes), a spare that joined.
        const withMember = (among: ReadonlyArray<number>) => among.reduce((a, b) => Math.max(a, b), -1)
        const liveProcs = ledger.live().map((m) => m.proc)
        const fromFleet = withMember(liveProcs.filter((p) => p < processes))
        const at = fromFleet >= 0 ? fromFleet : withMember(liveProcs)
        if (at < 0) return yield* new BenchError({ message: "drain: no live member left to drain" })
        const target = procs[at]!
        // The process drains its first live member, in join order: the member with the smallest number.
        const owner = ledger.live().filter((m) => m.proc === at).sort((a, b) =>
          Number(a.owner.split(":")[1]) - Number(b.owner.split(":")[1])
        )[0]?.owner
        const owns = () => ledger.current().some((r) => r?.owner === owner)
        yield* change("drain", size, shards / size, announced(target, "drain", "draining"), () => !owns(), owner)
        yield* change("leave after drain", size - 1, 0, announced(target, "leave", "leaving"))
      }

      // --- Weights 1, 2 and 4 mixed: every member joins again with its weight ---
      if (weights) {
        let n = 0
        const live = procs.filter((_, i) => i !== victim && ledger.live().some((m) => m.proc === i))
        const expected = new Map<number, Array<number>>()
        for (const p of live) {
          const count = ledger.live().filter((m) => m.proc === procs.indexOf(p)).length
          expected.set(procs.indexOf(p), Array.from({ length: count }, () => weightCycle[n++ % weightCycle.length]!))
        }
        yield* Effect.sleep(pause)
        for (const [i, ws] of expected) procs[i]!.send(`weigh ${ws.join(",")}`)
        const weighed = () => ledger.live().length === size && ledger.live().every((m) => m.weight !== undefined)
        // A light member may own no shard, so a newcomer whose declaration the plan does not count yet cannot be told
        // from one the plan gives nothing: converged, and no shard started for a second, twice in a row.
        const quiet = converged(size, weighed, "all")
        let settled = 0
        while (settled < 2) {
          yield* until(quiet, stormWithin, why(size))
          const runs = ledger.runs.length
          yield* Effect.sleep("1 second")
          settled = quiet() && ledger.runs.length === runs ? settled + 1 : 0
        }
        const owned = new Map<string, number>()
        for (const run of ledger.current()) if (run !== undefined) owned.set(run.owner, (owned.get(run.owner) ?? 0) + 1)
        const members = ledger.live()
        const total = members.reduce((a, m) => a + m.weight!, 0)
        const shareOf = (m: MemberRecord) => shards * m.weight! / total
        const deviation = (m: MemberRecord) => (owned.get(m.owner) ?? 0) / shareOf(m) - 1
        const within = (m: MemberRecord) => {
          const n = owned.get(m.owner) ?? 0
          return n >= Math.floor(0.75 * shareOf(m)) && n <= Math.ceil(1.25 * shareOf(m))
        }
        result.weights = {
          classes: weightCycle.map((w) => {
            const of = members.filter((m) => m.weight === w).map((m) => owned.get(m.owner) ?? 0)
            return {
              weight: w,
              members: of.length,
              share: shards * w / total,
              ownedMean: of.reduce((a, b) => a + b, 0) / Math.max(1, of.length),
              ownedMin: Math.min(...of),
              ownedMax: Math.max(...of)
            }
          }),
          worstDeviation: Math.max(...members.map((m) => Math.abs(deviation(m)))),
          within25: members.filter(within).length,
          members: members.length,
          forced: weightsMode === "force"
        }
        yield* Console.log(`  weights: ${JSON.stringify(result.weights)}`)
      }
    }).pipe(
      Effect.ensuring(Effect.sync(() => {
        result.loadAfter = os.loadavg()
      }))
    )
  )

// --- The tables ---

const ms = (x: number) => (Number.isFinite(x) ? `${round(x).toLocaleString("en-US")} ms` : "-")
const times = (x: number, floorP99: number) => (Number.isFinite(x) ? `${round(x / floorP99, 2)}×` : "-")
const kinds: ReadonlyArray<Kind> = ["join", "leave", "crash", "drain", "leave after drain"]

const changeRows = (r: ConfigResult): Array<string> =>
  kinds.flatMap((kind) => {
    const samples = r.changes.filter((c) => c.kind === kind)
    const head = `| ${r.processes} x ${r.perProcess} | ${kind} |`
    if (samples.length === 0) {
      const why = (kind === "drain" || kind === "leave after drain") && !drainAvailable()
        ? "n/a (no `EtcdSeq.drain` in this build)"
        : "not measured"
      return [`${head} 0 | ${why} | | | | | | | |`]
    }
    const all = (f: (c: Change) => ReadonlyArray<number>) => samples.flatMap(f)
    const unowned = Math.max(0, ...all((c) => c.unowned))
    const afterStop = Math.max(0, ...all((c) => c.afterStop))
    const running = summarize(all((c) => c.running))
    const moved = summarize(samples.map((c) => c.moved)).median
    const ideal = summarize(samples.map((c) => c.ideal)).median
    const twice = Math.max(...samples.map((c) => c.twice))
    const overlaps = samples.reduce((a, c) => a + c.overlaps, 0)
    const req = summarize(samples.map((c) => c.requests))
    const cpu = summarize(samples.map((c) => c.cpuMs))
    return [
      `${head} ${samples.length} | ${round(moved)} (${round(ideal)}) | ${twice}${
        overlaps > 0 ? ` (${overlaps} overlapped!)` : ""
      } | ${ms(unowned)} (${times(unowned - workStopMs, r.floor.p99)} + stop) | ${ms(afterStop)} | ${
        ms(running.median)
      } / ${ms(running.max)} | ${times(running.median, r.floor.p99)} / ${times(running.max, r.floor.p99)} | ${
        Number.isNaN(req.median) ? "-" : `${round(req.median)}${req.max !== req.min ? ` (${req.min}-${req.max})` : ""}`
      } | ${ms(cpu.median)} (${
        ms(cpu.median / os.availableParallelism())
      } of wall time on ${os.availableParallelism()} cores) |`
    ]
  })

const weightRows = (r: ConfigResult): Array<string> =>
  r.weights === "n/a"
    ? [
      `| ${r.processes} x ${r.perProcess} | ${
        r.weightsRead ? "not measured" : "n/a (this build's `EtcdSeq.make` does not read `weight`)"
      } | | | | |`
    ]
    : r.weights.classes.map((c) =>
      `| ${r.processes} x ${r.perProcess}${
        (r.weights as Weights).forced ? " (forced: weight ignored)" : ""
      } | ${c.weight} | ${c.members} | ${round(c.share)} | ${round(c.ownedMean)} (${c.ownedMin}-${c.ownedMax}) | ${
        round(c.ownedMean / c.share, 2)
      }× |`
    ).concat([
      `| | all | ${r.weights.members} | | worst member ${
        round(r.weights.worstDeviation * 100)
      }% off its share | ${r.weights.within25} of ${r.weights.members} within 25% (in whole shards) |`
    ])

/** Each issue target, with the figures it is judged on. */
const targetLines = (results: ReadonlyArray<ConfigResult>): Array<string> => {
  const lines: Array<string> = []
  for (const r of results) {
    const bound = workStopMs + 5 * r.floor.p99
    const graceful = r.changes.filter((c) => c.kind !== "crash")
    const worst = Math.max(0, ...graceful.flatMap((c) => c.unowned))
    const crash = Math.max(0, ...r.changes.filter((c) => c.kind === "crash").flatMap((c) => c.unowned))
    lines.push(
      `- ${r.processes} x ${r.perProcess}: a moved shard unowned at most its stop + 5× the floor's p99 (${
        ms(bound)
      }): ${
        graceful.length === 0 ? "not measured" : `${worst <= bound ? "met" : "not met"}, worst ${ms(worst)}`
      } on joins, leaves${
        r.drain === "ran" ? " and the drain" : ""
      }; a crash waits for the lease (TTL ${ttlSeconds} s): ${ms(crash)}.`
    )
    const drains = r.changes.filter((c) => c.kind === "drain")
    lines.push(
      `- ${r.processes} x ${r.perProcess}: a drain moves no shard twice: ${
        drains.length === 0
          ? drainAvailable() ? "not measured" : "n/a (no `EtcdSeq.drain` in this build)"
          : drains.every((c) => c.twice === 0)
          ? "met"
          : `not met (${Math.max(...drains.map((c) => c.twice))} shards twice)`
      }.`
    )
    lines.push(
      `- ${r.processes} x ${r.perProcess}: owned shards within 25% of the weight share (in whole shards): ${
        r.weights === "n/a"
          ? r.weightsRead ? "not measured" : "n/a (no `weight` option in this build)"
          : `${
            r.weights.within25 === r.weights.members ? "met" : "not met"
          } (${r.weights.within25} of ${r.weights.members} members${
            r.weights.forced ? "; forced, the option ignored" : ""
          })`
      }.`
    )
  }
  if (results.length > 1) {
    const perKind = kinds.flatMap((kind) => {
      const medians = results.map((r) =>
        summarize(r.changes.filter((c) => c.kind === kind).map((c) => c.requests)).median
      )
      return medians.every(Number.isNaN)
        ? []
        : [`${kind} ${medians.map((m, i) => `${round(m)} at ${results[i]!.members}`).join(" vs ")}`]
    })
    lines.push(`- etcd requests per change independent of the group's size (medians): ${perKind.join("; ")}.`)
  }
  return lines
}

const markdown = (results: ReadonlyArray<ConfigResult>, header: string): string =>
  [
    header,
    "",
    `| P x M | change | samples | shards moved (ideal) | shards started twice (max) | unowned, max | after the old owner's stop ended, max | every moved shard running, median / max | / floor p99 | etcd requests per change | members' CPU per change |`,
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ...results.flatMap(changeRows),
    "",
    `Weights 1, 2 and 4 mixed (every member joins again with its weight; ${shards} shards):`,
    "",
    "| P x M | weight | members | share (S · w / Σw) | shards owned, mean (min-max) | owned / share |",
    "| --- | ---: | ---: | ---: | ---: | ---: |",
    ...results.flatMap(weightRows),
    "",
    "Targets:",
    "",
    ...targetLines(results),
    ...results.flatMap((r) => r.notes.map((n) => `- ${r.processes} x ${r.perProcess}: ${n}`))
  ].join("\n")

// --- The run ---

const fmtLoad = (l: ReadonlyArray<number>) => l.map((x) => x.toFixed(2)).join(" ")

export const runFleetShards = Effect.gen(function*() {
  const file = yield* bundle(memberScript, "shardsMember")
  const loadStart = os.loadavg()
  // The highest one-minute load average seen during the run, sampled every 5 s.
  let loadMax = loadStart[0]!
  const sampler = setInterval(() => loadMax = Math.max(loadMax, os.loadavg()[0]!), 5_000)
  const results: Array<ConfigResult> = []
  const weightsProbe = weightsMode === "off" ? false : yield* Effect.scoped(Effect.gen(function*() {
    const etcd = yield* startEtcd({ name: "fleet-shards-probe" })
    return yield* weightAccepted(etcd.clientUrl)
  }))
  const weights = weightsMode === "force" || weightsProbe
  yield* Console.log(
    `fleet shards: S = ${shards}, work stop ${workStopMs} ms, ${rounds} rounds, TTL ${ttlSeconds} s; drain ${
      drainAvailable() ? "available" : "n/a"
    }; weight ${weightsProbe ? "accepted" : weightsMode === "force" ? "not accepted, forced" : "n/a"}`
  )
  const all = Effect.forEach(configs, (c) =>
    Effect.suspend(() => {
      const result: ConfigResult = {
        config: `${c.processes}x${c.perProcess}`,
        processes: c.processes,
        perProcess: c.perProcess,
        members: c.processes * c.perProcess,
        floor: { median: Number.NaN, p99: Number.NaN },
        stormMs: Number.NaN,
        changes: [],
        drain: "n/a",
        weights: "n/a",
        weightsRead: weights,
        notes: [],
        loadAfter: []
      }
      results.push(result)
      return runConfig(file, c.processes, c.perProcess, weights, result).pipe(
        Effect.catchAll((e) =>
          Effect.sync(() => result.notes.push(`stopped early: ${e.message}`)).pipe(
            Effect.zipRight(Console.log(`  stopped early: ${e.message}`))
          )
        )
      )
    }), { discard: true })
  yield* all.pipe(
    Effect.timeoutFail({
      duration: Duration.millis(withinMs),
      onTimeout: () => new BenchError({ message: `the run did not finish within ${withinMs / 60_000} minutes` })
    }),
    Effect.catchAll((e) =>
      Effect.sync(() => results.at(-1)?.notes.push(e.message)).pipe(Effect.zipRight(Console.log(e.message)))
    ),
    Effect.ensuring(Effect.sync(() => clearInterval(sampler)))
  )
  const header = `Fleet shards (${new Date().toISOString().slice(0, 10)}; ${os.cpus().length} cores; load average ${
    fmtLoad(loadStart)
  } at the start, ${loadMax.toFixed(2)} at most during the run (1 min), ${
    fmtLoad(os.loadavg())
  } at the end; S = ${shards}; work stop ${workStopMs} ms; TTL ${ttlSeconds} s; floor p99 ${
    results.map((r) => `${r.floor.p99.toFixed(1)} ms at ${r.processes} x ${r.perProcess}`).join(", ")
  }${niceness === 0 ? "" : `; member processes at niceness ${niceness}`})`
  const text = markdown(results, header)
  yield* Console.log(`\n${text}`)
  fs.mkdirSync(outDir, { recursive: true })
  fs.writeFileSync(`${outDir}/fleet-shards.md`, text + "\n")
  fs.writeFileSync(
    `${outDir}/fleet-shards.json`,
    JSON.stringify({ loadStart, loadMax, shards, workStopMs, ttlSeconds, results }, null, 2) + "\n"
  )
})
