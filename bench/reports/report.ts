/**
 * Turns the runs into the summary rows, the verdict on the issue's targets, and the Markdown that is printed and
 * written to `bench/results/`.
 */
import type { AssignmentRow } from "../measures/assignments.js"
import type { GroupRun } from "../measures/groupRun.js"
import type { ShardsRow } from "../measures/shards.js"
import { round, summarize, type Summary } from "../measures/stats.js"

/** A latency that may not have been reached within its bound: then `ms` is the bound, a lower limit. */
interface Latency {
  readonly ms: number
  readonly complete: boolean
}

export interface Row {
  readonly impl: string
  readonly label: string
  readonly size: number
  readonly storm: Latency
  readonly stormProgress: string
  readonly join: Summary | undefined
  readonly leave: Summary | undefined
  readonly joinAfterEvent: Summary | undefined
  readonly leaveAfterEvent: Summary | undefined
  readonly crashAfterExpiryMs: number | undefined
  readonly crashExpiryAfterKillMs: number | undefined
  readonly changesMeasured: number
  /** Undefined when no scenario of the run converged (nothing to check). */
  readonly allConsistent: boolean | undefined
  /** Per membership change (joins and leaves of the rounds, averaged). */
  readonly perChange: {
    readonly requests: number
    readonly ranges: number
    readonly watchResponsesSent: number
    /** Bytes etcd sent, less the keepalive responses that fell in the window. */
    readonly bytes: number
    readonly clientCpuMs: number
    readonly etcdCpuMs: number
    readonly clientGroupReads: number
    readonly clientWatchResponses: number
  } | undefined
  /** The join storm's cost per member. */
  readonly stormPerMember: { readonly requests: number; readonly ranges: number; readonly bytes: number }
  readonly heapPerMemberKiB: number | undefined
  readonly idlePerMember:
    | { readonly keepalivesPerSecond: number; readonly keepaliveStreamsPerSecond: number }
    | undefined
  readonly floorUnderLoad: Summary | undefined
}

const requestsOf = (etcd: GroupRun["storm"]["cost"]["etcd"]): number => {
  let total = 0
  for (const [method, n] of Object.entries(etcd.started)) {
    if (method !== "Watch" && method !== "LeaseKeepAlive") total += n
  }
  return total + (etcd.received["Watch"] ?? 0)
}

const maybeSummary = (xs: ReadonlyArray<number | undefined>): Summary | undefined => {
  const defined = xs.filter((x): x is number => x !== undefined)
  return defined.length === 0 ? undefined : summarize(defined)
}

export const row = (run: GroupRun): Row => {
  const joins = run.changes.filter((c) => c.kind === "join" && c.complete)
  const leaves = run.changes.filter((c) => c.kind === "leave" && c.complete)
  const done = run.changes.filter((c) => c.complete)
  const readable = done.filter((c) => c.cost.etcd.readable)
  const avgOver = (xs: ReadonlyArray<GroupRun["changes"][number]>, f: (c: GroupRun["changes"][number]) => number) =>
    xs.length === 0 ? Number.NaN : xs.reduce((sum, c) => sum + f(c), 0) / xs.length
  /** Over the changes whose etcd counters could be read. */
  const avg = (f: (c: GroupRun["changes"][number]) => number) => avgOver(readable, f)
  const stormEtcd = run.storm.cost.etcd
  return {
    impl: run.impl,
    label: run.label,
    size: run.size,
    storm: { ms: run.storm.ms, complete: run.storm.complete },
    stormProgress: run.storm.progress,
    join: maybeSummary(joins.map((c) => c.ms)),
    leave: maybeSummary(leaves.map((c) => c.ms)),
    joinAfterEvent: maybeSummary(joins.map((c) => c.afterEventMs)),
    leaveAfterEvent: maybeSummary(leaves.map((c) => c.afterEventMs)),
    crashAfterExpiryMs: run.crash?.complete === true ? run.crash.afterExpiryMs : undefined,
    crashExpiryAfterKillMs: run.crash?.expiryAfterKillMs,
    changesMeasured: done.length,
    allConsistent: !run.storm.complete && done.length === 0 && run.crash?.complete !== true
      ? undefined
      : (!run.storm.complete || run.storm.consistent) &&
        run.changes.every((c) => !c.complete || c.consistent) &&
        (run.crash === undefined || !run.crash.complete || run.crash.consistent),
    perChange: done.length === 0 ? undefined : {
      requests: avg((c) => requestsOf(c.cost.etcd)),
      ranges: avg((c) => c.cost.etcd.started["Range"] ?? 0),
      // Less the benchmark's own raw watcher, which gets one response per change.
      watchResponsesSent: avg((c) => (c.cost.etcd.sent["Watch"] ?? 0) - 1),
      bytes: avg((c) =>
        Math.max(0, c.cost.etcd.sentBytes - (c.cost.etcd.sent["LeaseKeepAlive"] ?? 0) * run.bytesPerKeepalive)
      ),
      clientCpuMs: avgOver(done, (c) => c.cost.cpuMs),
      etcdCpuMs: avg((c) => c.cost.etcd.cpuSeconds * 1000),
      clientGroupReads: avgOver(done, (c) => c.cost.client.groupReads),
      clientWatchResponses: avgOver(done, (c) => c.cost.client.watchResponses)
    },
    stormPerMember: stormEtcd.readable
      ? {
        requests: requestsOf(stormEtcd) / run.size,
        ranges: (stormEtcd.started["Range"] ?? 0) / run.size,
        bytes: stormEtcd.sentBytes / run.size
      }
      : { requests: Number.NaN, ranges: Number.NaN, bytes: Number.NaN },
    heapPerMemberKiB: run.heapPerMemberBytes === undefined ? undefined : run.heapPerMemberBytes / 1024,
    idlePerMember: run.idle === undefined ? undefined : {
      keepalivesPerSecond: run.idle.keepalivesPerSecond / run.size,
      keepaliveStreamsPerSecond: run.idle.keepaliveStreamsPerSecond / run.size
    },
    floorUnderLoad: run.floorUnderLoad
  }
}

export interface Target {
  readonly target: string
  readonly met: boolean | undefined
  readonly detail: string
}

const fmt = (x: number | undefined, digits = 3): string =>
  x === undefined || Number.isNaN(x) ? "–" : String(round(x, digits))
const ms = (x: number | undefined): string => (x === undefined ? "–" : `${fmt(x)}`)
const latency = (l: Latency): string => (l.complete ? ms(l.ms) : `> ${fmt(l.ms)}`)

/** baseline / library, as "N×"; a lower limit when the baseline did not finish. */
const speedup = (library: number | undefined, baseline: Latency | undefined): string => {
  if (library === undefined || baseline === undefined || library <= 0) return "–"
  return `${baseline.complete ? "" : "> "}${fmt(baseline.ms / library)}×`
}

const baselineLatency = (rows: ReadonlyArray<Row>, size: number, kind: "join" | "leave" | "storm") => {
  const b = rows.find((r) => r.impl === "baseline" && r.size === size)
  if (b === undefined) return undefined
  if (kind === "storm") return b.storm
  const s = b[kind]
  return s === undefined ? undefined : { ms: s.median, complete: true }
}

export const targets = (floor: Summary, rows: ReadonlyArray<Row>, runs: ReadonlyArray<GroupRun>): Array<Target> => {
  const lib = rows.find((r) => r.impl === "library" && r.label === "library" && r.size === 1000)
  const base = rows.find((r) => r.impl === "baseline" && r.size === 1000)
  const out: Array<Target> = []
  const bound = 5 * floor.p99
  for (const kind of ["leave", "join"] as const) {
    const s = lib?.[kind]
    const libRun = runs.find((r) => r.label === "library" && r.size === 1000)
    const why = libRun === undefined
      ? "not measured"
      : `not measurable: ${libRun.notes[0] ?? "no change converged within its bound"}`
    out.push({
      target: `one ${kind} in a group of 1000 converges within 5× the floor's p99 (${fmt(bound)} ms)`,
      met: s === undefined ? (libRun === undefined ? undefined : false) : s.median <= bound,
      detail: s === undefined
        ? why
        : `median ${fmt(s.median)} ms = ${fmt(s.median / floor.p99)}× floor p99 (max ${fmt(s.max)} ms = ${
          fmt(s.max / floor.p99)
        }×); after the event reached a raw watcher: median ${fmt(lib?.[`${kind}AfterEvent`]?.median)} ms`
    })
    const b = base?.[kind]
    const baseRun = runs.find((r) => r.impl === "baseline" && r.size === 1000)
    const baseBound = baseRun?.changes.find((c) => c.kind === kind && !c.complete)
    const baseMs = b?.median ?? baseBound?.ms
    out.push({
      target: `one ${kind} in a group of 1000 is at least 100× faster than the baseline`,
      met: s === undefined || baseMs === undefined
        ? (libRun === undefined || baseMs === undefined ? undefined : false)
        : baseMs / s.median >= 100,
      detail: s === undefined || baseMs === undefined
        ? (s === undefined ? `${why}; baseline ${fmt(baseMs)} ms` : "baseline not measured")
        : `baseline ${b === undefined ? "> " : ""}${fmt(baseMs)} ms / library ${fmt(s.median)} ms = ${
          b === undefined ? "> " : ""
        }${fmt(baseMs / s.median)}×`
    })
  }
  out.push({
    target: "join storm of 1000 members under 2 s end to end",
    met: lib === undefined ? undefined : lib.storm.complete && lib.storm.ms < 2000,
    detail: lib === undefined ? "not measured" : `${latency(lib.storm)} ms`
  })
  const libraryRows = rows.filter((r) =>
    r.impl === "library" && r.perChange !== undefined && !Number.isNaN(r.perChange.ranges)
  )
  const maxRanges = Math.max(...libraryRows.map((r) => r.perChange!.ranges))
  out.push({
    target: "zero range requests per membership change in steady state",
    met: libraryRows.length === 0 ? undefined : maxRanges === 0,
    detail: libraryRows.map((r) =>
      `${r.label} ${r.size}: ${fmt(r.perChange!.ranges)} ranges, ${
        fmt(r.perChange!.clientWatchResponses)
      } watch responses handled per change`
    ).join("; ")
  })
  const sharing = runs.filter((r) => r.impl === "library" && r.storm.complete && r.storm.cost.etcd.readable)
  out.push({
    target: "members sharing a client share one watch per group",
    met: sharing.length === 0 ? undefined : sharing.every((r) => {
      const clients = r.label === "library" ? 1 : Number(/×(\d+)/.exec(r.label)?.[1] ?? "1")
      return (r.storm.cost.etcd.received["Watch"] ?? 0) <= clients && (r.storm.cost.etcd.started["Range"] ?? 0) <=
          clients
    }),
    detail: sharing.map((r) =>
      `${r.label} ${r.size}: ${r.storm.cost.etcd.received["Watch"] ?? 0} watch creations and ${
        r.storm.cost.etcd.started["Range"] ?? 0
      } group reads for the whole storm`
    ).join("; ")
  })
  for (const size of [1000, 300, 100, 10]) {
    const l = rows.find((r) => r.label === "library" && r.size === size)?.heapPerMemberKiB
    const b = rows.find((r) => r.impl === "baseline" && r.size === size)?.heapPerMemberKiB
    if (!rows.some((r) => r.size === size)) continue
    out.push({
      target: `heap per member at most half the baseline's (${size} members)`,
      met: l === undefined || b === undefined ? undefined : l <= b / 2,
      detail: `library ${fmt(l)} KiB, baseline ${fmt(b)} KiB per member${
        l !== undefined && b !== undefined ? ` (ratio ${fmt(l / b)})` : ""
      }`
    })
  }
  return out
}

export interface Report {
  /** runAssigned handover times (issue 3), when measured. */
  readonly assignments?: ReadonlyArray<AssignmentRow>
  readonly shards?: ReadonlyArray<ShardsRow>
  readonly generatedAt: string
  readonly command: string
  /** The library commit measured, and whether `src/` had uncommitted changes then. */
  readonly source: { readonly commit: string; readonly srcChanged: boolean }
  readonly machine: {
    readonly cpus: number
    readonly node: string
    readonly etcd: string
    readonly platform: string
    /** `os.loadavg()` (1, 5, 15 min) when the run started and ended: other work on the machine skews the times. */
    readonly loadBefore: ReadonlyArray<number>
    readonly loadAfter: ReadonlyArray<number>
  }
  readonly totalSeconds: number
  readonly floor: Summary
  readonly rows: ReadonlyArray<Row>
  readonly targets: ReadonlyArray<Target>
  readonly runs: ReadonlyArray<GroupRun>
}

const table = (header: ReadonlyArray<string>, body: ReadonlyArray<ReadonlyArray<string>>): string =>
  [
    `| ${header.join(" | ")} |`,
    `| ${header.map(() => "---").join(" | ")} |`,
    ...body.map((cells) => `| ${cells.join(" | ")} |`)
  ].join("\n")

export const markdown = (report: Report): string => {
  const { floor, rows } = report
  const x = (v: number | undefined) => (v === undefined ? "–" : `${fmt(v / floor.p99)}×`)
  const latencyRows = rows.map((r) => {
    const bl = baselineLatency(rows, r.size, "leave")
    const bj = baselineLatency(rows, r.size, "join")
    const bs = baselineLatency(rows, r.size, "storm")
    const isBase = r.impl === "baseline"
    return [
      String(r.size),
      r.label,
      latency(r.storm),
      isBase ? "1×" : speedup(r.storm.complete ? r.storm.ms : undefined, bs),
      ms(r.join?.median),
      ms(r.join?.max),
      x(r.join?.median),
      isBase ? "1×" : speedup(r.join?.median, bj),
      ms(r.leave?.median),
      ms(r.leave?.max),
      x(r.leave?.median),
      isBase ? "1×" : speedup(r.leave?.median, bl),
      ms(r.leaveAfterEvent?.median),
      ms(r.crashAfterExpiryMs),
      r.allConsistent === undefined ? "–" : r.allConsistent ? "yes" : "NO"
    ]
  })
  const costRows = rows.map((r) => {
    const p = r.perChange
    return [
      String(r.size),
      r.label,
      fmt(p?.requests),
      fmt(p === undefined ? undefined : p.requests / r.size),
      fmt(p?.ranges),
      fmt(p?.watchResponsesSent),
      fmt(p === undefined ? undefined : p.bytes / 1024),
      fmt(p === undefined ? undefined : p.bytes / r.size),
      fmt(p?.clientCpuMs),
      fmt(p?.etcdCpuMs),
      fmt(r.stormPerMember.requests),
      fmt(r.stormPerMember.ranges),
      fmt(r.heapPerMemberKiB),
      fmt(r.idlePerMember?.keepaliveStreamsPerSecond)
    ]
  })
  const targetRows = report.targets.map((t) => [
    t.target,
    t.met === undefined ? "not measured" : t.met ? "met" : "**missed**",
    t.detail
  ])
  const notes = report.runs.flatMap((run) => run.notes.map((n) => `- ${run.label} ${run.size}: ${n}`))
  return [
    `## Benchmark results`,
    "",
    `\`${report.command}\` (library at ${report.source.commit}${
      report.source.srcChanged ? " with uncommitted changes in src/" : ""
    }) on ${report.machine.cpus} cores, Node ${report.machine.node}, etcd ${report.machine.etcd} ` +
    `(one local node started by the benchmark), ${report.generatedAt}; ${fmt(report.totalSeconds)} s in all. ` +
    `Load average (1/5/15 min) ${report.machine.loadBefore.join(" / ")} at the start, ${
      report.machine.loadAfter.join(" / ")
    } at the end (2 cores: other work on the machine skews the times).`,
    "",
    `Floor (etcd put → watch event, bare etcd3 client, idle etcd, ${floor.count} puts): median ${
      fmt(floor.median)
    } ms, p90 ${fmt(floor.p90)} ms, p99 ${fmt(floor.p99)} ms, max ${fmt(floor.max)} ms.`,
    "",
    "### Convergence (ms; time until every member holds its new Info)",
    "",
    table(
      [
        "N",
        "impl",
        "join storm",
        "storm vs baseline",
        "join p50",
        "join max",
        "join p50 / floor p99",
        "join vs baseline",
        "leave p50",
        "leave max",
        "leave p50 / floor p99",
        "leave vs baseline",
        "leave p50 after event",
        "crash after expiry",
        "consistent"
      ],
      latencyRows
    ),
    "",
    "### Cost",
    "",
    table(
      [
        "N",
        "impl",
        "etcd requests / change",
        "requests / change / member",
        "ranges / change",
        "watch responses / change",
        "KiB sent / change",
        "bytes / change / member",
        "client CPU ms / change",
        "etcd CPU ms / change",
        "storm requests / member",
        "storm ranges / member",
        "heap KiB / member",
        "keepalive streams / s / member"
      ],
      costRows
    ),
    "",
    "### Targets (issue 5)",
    "",
    table(["target", "verdict", "measured"], targetRows),
    "",
    "How to read it:",
    "- *join storm*: all N members start at once; until every member has seen count N. `> x`: not done after x ms, " +
    "when the benchmark stopped waiting (the bound, or every join settled and some had failed).",
    "- *join* / *leave*: one member joins a full group, then the oldest member (index 0, so every index moves) leaves " +
    "gracefully; measured from the action (EtcdSeq.make / closing the member's scope) to the last member's new Info, " +
    "over the rounds. *after event*: from the change's event reaching a separate raw watcher.",
    "- *crash after expiry*: a member in a child process is SIGKILLed (its lease is never revoked); from the delete " +
    "event of its expired lease at a raw watcher to the last member knowing. Negative *after event* times mean the " +
    "members' own watch got the event before the separate raw watcher's connection did.",
    "- *vs baseline*: baseline time / this row's time. */ floor p99*: this row's time / the floor's p99.",
    "- Requests exclude keepalives (background, not caused by a change); bytes are etcd's " +
    "`etcd_network_client_grpc_sent_bytes_total`, less the keepalive responses in the window (they include the " +
    "raw watcher's copy of the event; its watch response is taken off *watch responses / change*).",
    "- *consistent*: after every converged scenario, the members hold distinct indexes 0..count-1 and the same count.",
    "- Heap: `heapUsed` after full GCs with the group in place, less before the group existed, / N (clients, watch " +
    "and probe included).",
    ...(notes.length === 0 ? [] : ["", "Notes:", ...notes])
  ].join("\n")
}
