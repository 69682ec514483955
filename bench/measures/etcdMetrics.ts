/**
 * etcd's own counters from its Prometheus endpoint (`GET <clientUrl>/metrics`), read before and after a scenario:
 * what a membership change costs etcd, independent of the client that caused it.
 */
import { Data, Duration, Effect } from "effect"

export class BenchError extends Data.TaggedError("BenchError")<{
  readonly message: string
  readonly cause?: unknown
}> {}

/** Counters by gRPC method of the etcd API (`etcdserverpb.*` services only). */
export interface EtcdCounters {
  /** False when the endpoint did not answer: every figure below is then unknown (NaN, or empty records). */
  readonly readable: boolean
  /** Calls started, by method: one per unary request, one per stream opened. */
  readonly started: Readonly<Record<string, number>>
  /** Messages received, by method: for streams, each watch create/cancel and each lease keepalive. */
  readonly received: Readonly<Record<string, number>>
  /** Messages sent, by method: for the Watch stream, each watch response. */
  readonly sent: Readonly<Record<string, number>>
  /** `etcd_network_client_grpc_sent_bytes_total`: bytes etcd sent to its clients. */
  readonly sentBytes: number
  /** `etcd_network_client_grpc_received_bytes_total`: bytes etcd received from its clients. */
  readonly receivedBytes: number
  /** `etcd_mvcc_range_total`: ranges the store served (also those inside transactions). */
  readonly mvccRanges: number
  /** `process_cpu_seconds_total` of the etcd process. */
  readonly cpuSeconds: number
}

const sampleLine = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})?\s+(\S+)$/
const labelPair = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g

const parse = (text: string): EtcdCounters => {
  const started: Record<string, number> = {}
  const received: Record<string, number> = {}
  const sent: Record<string, number> = {}
  const scalars: Record<string, number> = {}
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue
    const match = sampleLine.exec(line)
    if (match === null) continue
    const [, name = "", labelText = "", rawValue = ""] = match
    const value = Number(rawValue)
    if (!Number.isFinite(value)) continue
    const byMethod = name === "grpc_server_started_total"
      ? started
      : name === "grpc_server_msg_received_total"
      ? received
      : name === "grpc_server_msg_sent_total"
      ? sent
      : undefined
    if (byMethod === undefined) {
      if (labelText === "") scalars[name] = value
      continue
    }
    const labels: Record<string, string> = {}
    for (const [, key = "", v = ""] of labelText.matchAll(labelPair)) labels[key] = v
    const service = labels["grpc_service"] ?? ""
    const method = labels["grpc_method"] ?? ""
    if (!service.startsWith("etcdserverpb.")) continue
    byMethod[method] = (byMethod[method] ?? 0) + value
  }
  return {
    readable: true,
    started,
    received,
    sent,
    sentBytes: scalars["etcd_network_client_grpc_sent_bytes_total"] ?? 0,
    receivedBytes: scalars["etcd_network_client_grpc_received_bytes_total"] ?? 0,
    mvccRanges: scalars["etcd_mvcc_range_total"] ?? scalars["etcd_debugging_mvcc_range_total"] ?? 0,
    cpuSeconds: scalars["process_cpu_seconds_total"] ?? 0
  }
}

const scrapeTimeout = Duration.seconds(5)

/** Reads etcd's counters; fails after 5 s rather than hang. */
const scrape = (clientUrl: string): Effect.Effect<EtcdCounters, BenchError> =>
  Effect.tryPromise({
    try: async (signal) => {
      const response = await fetch(`${clientUrl}/metrics`, {
        signal: AbortSignal.any([signal, AbortSignal.timeout(Duration.toMillis(scrapeTimeout))])
      })
      if (!response.ok) throw new Error(`HTTP ${response.status}`)
      return parse(await response.text())
    },
    catch: (cause) => new BenchError({ message: `cannot read ${clientUrl}/metrics`, cause })
  }).pipe(
    Effect.timeoutFail({
      duration: Duration.sum(scrapeTimeout, Duration.seconds(1)),
      onTimeout: () => new BenchError({ message: `no answer from ${clientUrl}/metrics` })
    })
  )

const diffRecord = (after: Readonly<Record<string, number>>, before: Readonly<Record<string, number>>) => {
  const out: Record<string, number> = {}
  for (const [key, value] of Object.entries(after)) {
    const delta = value - (before[key] ?? 0)
    if (delta !== 0) out[key] = delta
  }
  return out
}

/** What a scenario reports when etcd's counters could not be read. */
const unreadable: EtcdCounters = {
  readable: false,
  started: {},
  received: {},
  sent: {},
  sentBytes: Number.NaN,
  receivedBytes: Number.NaN,
  mvccRanges: Number.NaN,
  cpuSeconds: Number.NaN
}

/**
 * Reads etcd's counters, once more on failure; when both fail (etcd or this process too busy to answer within the
 * bounds), the counters are `unreadable` and the scenario goes on without them.
 */
export const scrapeOrUnreadable = (clientUrl: string): Effect.Effect<EtcdCounters> =>
  scrape(clientUrl).pipe(Effect.retry({ times: 1 }), Effect.orElseSucceed(() => unreadable))

export const diff = (after: EtcdCounters, before: EtcdCounters): EtcdCounters =>
  !after.readable || !before.readable ? unreadable : ({
    readable: true,
    started: diffRecord(after.started, before.started),
    received: diffRecord(after.received, before.received),
    sent: diffRecord(after.sent, before.sent),
    sentBytes: after.sentBytes - before.sentBytes,
    receivedBytes: after.receivedBytes - before.receivedBytes,
    mvccRanges: after.mvccRanges - before.mvccRanges,
    cpuSeconds: after.cpuSeconds - before.cpuSeconds
  })

const streamMethods = new Set(["Watch", "LeaseKeepAlive"])

/**
 * Requests a scenario made of etcd, keepalives aside: unary calls (range, put, lease grant and revoke, ...) plus
 * watch creations and cancellations (messages on the watch stream). Keepalives are counted apart, as background.
 */
export const requests = (d: EtcdCounters): number => {
  let total = 0
  for (const [method, n] of Object.entries(d.started)) if (!streamMethods.has(method)) total += n
  return total + (d.received["Watch"] ?? 0)
}
