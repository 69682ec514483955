/**
 * An etcd in memory, with etcd's semantics for what the library uses, and the seam over it for each of its clients.
 *
 * - One global revision, bumped once per write request (a transaction with several writes makes one revision); a
 *   put keeps the create revision of a key that exists; a delete then put makes a new one.
 * - Multi-version: a range may read at any revision not compacted away.
 * - Leases whose TTL runs on Effect's `Clock` (so `TestClock.adjust` expires them); an expired or revoked lease takes
 *   its keys with it, in one revision.
 * - Watches of a key or a prefix from any revision, in order; a start revision compaction removed cancels the watch.
 * - Faults: an outage (clients cannot reach it: requests fail at once or hang until their deadline), a client that
 *   dies without revoking, a lease revoked from outside, a compaction.
 *
 * Every operation is one synchronous step on plain data, so each is atomic, as etcd's requests are.
 */
import { Duration, Effect, type Mailbox, Queue, type Scope } from "effect"
import { EtcdRequestFailed, EtcdUnavailable } from "../../EtcdSeqError.js"
import * as Api from "./api.js"

// --- Store --------------------------------------------------------------------------------------------------------

/** One version of a key: its value from `modRevision` on, or its delete (`kv` undefined). */
interface Version {
  readonly modRevision: number
  readonly kv: Api.KeyValue | undefined
}

interface Lease {
  readonly id: string
  readonly ttlSeconds: number
  expiresAt: number
  readonly keys: Set<string>
}

interface Watch {
  readonly client: number
  readonly target: Api.Target
  readonly mailbox: Mailbox.Mailbox<Api.WatchResponse | Api.WatchEnded>
  readonly end: (ended: Api.WatchEnded) => void
}

export type OutageMode = "unreachable" | "hang"

interface Outage {
  readonly mode: OutageMode
  /** Clients cut off; all of them when undefined. */
  readonly clients: ReadonlySet<number> | undefined
}

/** etcd's default `--max-txn-ops`. */
const maxTxnOps = 128

/** Byte order of UTF-8 keys, as etcd orders them (JavaScript compares UTF-16 code units). */
const compareKeys = (a: string, b: string): number => Buffer.compare(Buffer.from(a), Buffer.from(b))

const matches = (target: Api.Target, key: string): boolean =>
  "key" in target ? key === target.key : key.startsWith(target.prefix)

/** The requests that change etcd: the ones whose lost answer leaves the caller not knowing whether they landed. */
const writes = new Set(["put", "delete", "txn"])

export interface Server {
  readonly revision: () => number
  readonly compactedBelow: () => number
  /** The live key-values under `prefix` (all when empty), in key order. */
  readonly read: (prefix: string) => ReadonlyArray<Api.KeyValue>
  readonly leases: () => ReadonlyArray<{ readonly id: string; readonly ttlSeconds: number; readonly expiresAt: number }>
  /** A new client: its number, for its endpoint name and its faults. */
  readonly connect: () => number
  readonly api: (client: number, requestTimeout: Duration.Duration) => Api.EtcdApi
  /** The client a seam of this server belongs to. */
  readonly clientOf: (api: Api.EtcdApi) => number | undefined
  readonly outage: (mode: OutageMode, clients: ReadonlyArray<number> | undefined) => void
  readonly recover: () => void
  /** The client's next `count` writes land, but their answers are lost: each fails at its deadline. */
  readonly loseAnswers: (client: number, count: number) => void
  readonly crash: (client: number) => void
  readonly revokeFromOutside: (lease: string) => boolean
  readonly compact: (revision: number) => void
  readonly put: (key: string, value: string) => number
  readonly delete: (key: string) => number
}

/** A server whose lease expiry runs for the life of the scope, on the `Clock` in context. */
export const makeServer: Effect.Effect<Server, never, Scope.Scope> = Effect.gen(function*() {
  const clock = yield* Effect.clock
  const versions = new Map<string, Array<Version>>()
  const leases = new Map<string, Lease>()
  const watches = new Set<Watch>()
  /** Each write's events, by revision, back to the compaction. */
  const history: Array<{ readonly revision: number; readonly events: ReadonlyArray<Api.Event> }> = []
  let revision = 1
  let compactedBelow = 0
  let nextLease = 0x694d_0000
  let clients = 0
  let outage: Outage | undefined
  const crashed = new Set<number>()
  /** Per client, how many of its next writes land without an answer. */
  const answersToLose = new Map<number, number>()
  /** Wakes the expiry fiber when a lease's deadline may have moved. */
  const leasesChanged = yield* Queue.sliding<void>(1)

  // --- Reading ---

  const latest = (key: string, at: number = revision): Api.KeyValue | undefined => {
    const list = versions.get(key)
    if (list === undefined) return undefined
    for (let i = list.length - 1; i >= 0; i--) {
      if (list[i]!.modRevision <= at) return list[i]!.kv
    }
    return undefined
  }

  /** `current`: the revision reads see by default (a transaction's own, once it wrote). */
  const range = (request: Api.Range, current: number = revision): Api.RangeResult => {
    const at = request.revision ?? current
    if (at < compactedBelow) throw new Api.Compacted({ revision: compactedBelow })
    if (at > current) throw new Error(`etcdserver: mvcc: required revision is a future revision (${at})`)
    const found: Array<Api.KeyValue> = []
    for (const key of versions.keys()) {
      if (!matches(request.target, key)) continue
      if (request.from !== undefined && compareKeys(key, request.from) < 0) continue
      const kv = latest(key, at)
      if (kv === undefined) continue
      if (request.maxCreateRevision !== undefined && kv.createRevision > request.maxCreateRevision) continue
      found.push(request.keysOnly === true ? { ...kv, value: "" } : kv)
    }
    found.sort(
      request.order === "createDescending"
        ? (a, b) => b.createRevision - a.createRevision
        : (a, b) => compareKeys(a.key, b.key)
    )
    const limit = request.limit ?? 0
    const more = limit > 0 && found.length > limit
    return { kvs: more ? found.slice(0, limit) : found, more, revision: current }
  }

  const compare = (c: Api.Compare): boolean => {
    const kv = latest(c.key)
    const order = (sign: number) => c.result === "equal" ? sign === 0 : c.result === "greater" ? sign > 0 : sign < 0
    if (c.target === "value") {
      // etcd fails a value compare of a key that does not exist, whatever the operator.
      return kv !== undefined && order(Buffer.compare(Buffer.from(kv.value), Buffer.from(c.value)))
    }
    const actual = kv === undefined ? 0 : c.target === "create" ? kv.createRevision : kv.modRevision
    return order(Math.sign(actual - c.value))
  }

  // --- Writing: one revision per write request, its events to every watch ---

  const commit = (writes: (revision: number, events: Array<Api.Event>) => void): number => {
    const next = revision + 1
    const events: Array<Api.Event> = []
    writes(next, events)
    if (events.length === 0) return revision
    revision = next
    history.push({ revision, events })
    for (const watch of watches) {
      const mine = events.filter((e) => matches(watch.target, Api.eventKey(e)))
      if (mine.length > 0) watch.mailbox.unsafeOffer({ events: mine })
    }
    return revision
  }

  const writePut = (at: number, events: Array<Api.Event>, key: string, value: string, lease: string) => {
    const before = latest(key)
    if (lease !== "0" && !leases.has(lease)) throw new Api.LeaseNotFound({ lease })
    if (before !== undefined && before.lease !== "0") leases.get(before.lease)?.keys.delete(key)
    if (lease !== "0") leases.get(lease)!.keys.add(key)
    const kv: Api.KeyValue = { key, value, lease, createRevision: before?.createRevision ?? at, modRevision: at }
    const list = versions.get(key)
    if (list === undefined) versions.set(key, [{ modRevision: at, kv }])
    else list.push({ modRevision: at, kv })
    events.push({ _tag: "Put", kv })
  }

  const writeDelete = (at: number, events: Array<Api.Event>, key: string): number => {
    const before = latest(key)
    if (before === undefined) return 0
    if (before.lease !== "0") leases.get(before.lease)?.keys.delete(key)
    versions.get(key)!.push({ modRevision: at, kv: undefined })
    events.push({ _tag: "Delete", key, modRevision: at })
    return 1
  }

  const endLease = (lease: Lease): void => {
    leases.delete(lease.id)
    commit((at, events) => {
      for (const key of [...lease.keys].sort(compareKeys)) writeDelete(at, events, key)
    })
  }

  const now = () => clock.unsafeCurrentTimeMillis()

  // --- Lease expiry, on the Clock ---

  yield* Effect.gen(function*() {
    while (true) {
      const at = now()
      for (const lease of [...leases.values()]) if (lease.expiresAt <= at) endLease(lease)
      const next = Math.min(...[...leases.values()].map((l) => l.expiresAt))
      yield* Effect.raceFirst(
        // Whole milliseconds, at least one: the TestClock can stand at a fraction of one, and a sleep shorter than
        // a nanosecond ends at once, so the deadline would never be reached.
        Number.isFinite(next) ? Effect.sleep(Duration.millis(Math.max(1, Math.ceil(next - at)))) : Effect.never,
        Queue.take(leasesChanged)
      )
    }
  }).pipe(Effect.forkScoped)

  // --- Faults ---

  const reachable = (client: number): OutageMode | "yes" =>
    crashed.has(client)
      ? "unreachable"
      : outage !== undefined && (outage.clients === undefined || outage.clients.has(client))
      ? outage.mode
      : "yes"

  const dropWatches = (affected: (client: number) => boolean) => {
    for (const watch of [...watches]) {
      if (!affected(watch.client)) continue
      watches.delete(watch)
      watch.end(new Api.WatchEnded({ compacted: false, wasConnected: true, cause: "unreachable" }))
    }
  }

  // --- One client's seam ---

  const apis = new WeakMap<Api.EtcdApi, number>()
  const api = (client: number, requestTimeout: Duration.Duration): Api.EtcdApi => {
    const endpoints = [`memory://client-${client}`]
    const unavailable = (timeout: Duration.Duration) => new EtcdUnavailable({ endpoints, timeout })
    /** A request as this client sees it: refused or hanging while cut off, else one atomic step. */
    const call = <A>(operation: string, run: () => A, within: Duration.Duration = requestTimeout) =>
      Effect.suspend((): Effect.Effect<A, Api.RequestError> => {
        const reach = reachable(client)
        if (reach === "unreachable") return Effect.fail(unavailable(within))
        if (reach === "hang") return Effect.zipRight(Effect.sleep(within), Effect.fail(unavailable(within)))
        const toLose = writes.has(operation) ? answersToLose.get(client) ?? 0 : 0
        try {
          const answer = run()
          if (toLose === 0) return Effect.succeed(answer)
          answersToLose.set(client, toLose - 1)
          return Effect.zipRight(Effect.sleep(within), Effect.fail(unavailable(within)))
        } catch (cause) {
          return Effect.fail(new EtcdRequestFailed({ operation, error: cause }))
        }
      }).pipe(Effect.withSpan(`etcd.${operation}`, { kind: "client", captureStackTrace: false }))

    const seam: Api.EtcdApi = {
      endpoints,
      requestTimeout,
      range: (request) => call("range", () => range(request)),
      put: (key, value, lease) =>
        call("put", () => ({ revision: commit((at, events) => writePut(at, events, key, value, lease ?? "0")) })),
      delete: (key) =>
        call("delete", () => {
          let deleted = 0
          const at = commit((next, events) => {
            deleted = writeDelete(next, events, key)
          })
          return { revision: at, deleted }
        }),
      txn: (txn) =>
        call("txn", () => {
          const succeeded = txn.compare.every(compare)
          const ops = succeeded ? txn.success : txn.failure ?? []
          // etcd's own checks, of both branches whichever runs: at most --max-txn-ops compares and operations in
          // each, and no key written twice in one.
          const branches = [txn.success, txn.failure ?? []]
          if (txn.compare.length > maxTxnOps || branches.some((ops) => ops.length > maxTxnOps)) {
            throw new Error("etcdserver: too many operations in txn request")
          }
          for (const branch of branches) {
            const written = branch.flatMap((op) => (op._tag === "Range" ? [] : [op.key]))
            if (new Set(written).size < written.length) {
              throw new Error("etcdserver: duplicate key given in txn request")
            }
          }
          // Refused whole or applied whole: a put under an unknown lease fails the transaction before any write.
          for (const op of ops) {
            if (op._tag === "Put" && op.lease !== undefined && op.lease !== "0" && !leases.has(op.lease)) {
              throw new Api.LeaseNotFound({ lease: op.lease })
            }
          }
          const results: Array<Api.OpResult> = []
          // Reads see the transaction's own writes before them, as etcd's do.
          const at = commit((next, events) => {
            for (const op of ops) {
              if (op._tag === "Put") {
                writePut(next, events, op.key, op.value, op.lease ?? "0")
                results.push({ _tag: "Put" })
              } else if (op._tag === "Delete") {
                results.push({ _tag: "Delete", deleted: writeDelete(next, events, op.key) })
              } else {
                results.push({ _tag: "Range", result: range(op.range, events.length > 0 ? next : revision) })
              }
            }
          })
          return { succeeded, revision: at, results }
        }),
      watch: (target, startRevision) =>
        Effect.gen(function*() {
          const { end, mailbox } = yield* Api.watchMailbox
          if (reachable(client) !== "yes") {
            end(new Api.WatchEnded({ compacted: false, wasConnected: false, cause: "unreachable" }))
            return mailbox
          }
          if (startRevision < compactedBelow) {
            end(
              new Api.WatchEnded({
                compacted: true,
                wasConnected: true,
                cause: new Api.Compacted({ revision: compactedBelow })
              })
            )
            return mailbox
          }
          for (const entry of history) {
            if (entry.revision < startRevision) continue
            const mine = entry.events.filter((e) => matches(target, Api.eventKey(e)))
            if (mine.length > 0) mailbox.unsafeOffer({ events: mine })
          }
          const watch: Watch = { client, target, mailbox, end }
          yield* Effect.acquireRelease(Effect.sync(() => watches.add(watch)), () =>
            Effect.sync(() => watches.delete(watch)))
          return mailbox
        }),
      grant: (ttlSeconds) =>
        call("lease.grant", () => {
          const id = String(nextLease++)
          leases.set(id, { id, ttlSeconds, expiresAt: now() + ttlSeconds * 1000, keys: new Set() })
          Queue.unsafeOffer(leasesChanged, undefined)
          return id
        }),
      keepAlive: (lease, within) =>
        call("lease.keepalive", (): Api.KeepAlive => {
          const found = leases.get(lease)
          if (found === undefined) return "gone"
          found.expiresAt = now() + found.ttlSeconds * 1000
          return "renewed"
        }, within),
      revoke: (lease) =>
        call("lease.revoke", () => {
          const found = leases.get(lease)
          if (found !== undefined) endLease(found)
          Queue.unsafeOffer(leasesChanged, undefined)
        })
    }
    apis.set(seam, client)
    return seam
  }

  return {
    revision: () => revision,
    compactedBelow: () => compactedBelow,
    read: (prefix) => range({ target: { prefix } }).kvs,
    leases: () => [...leases.values()].map(({ expiresAt, id, ttlSeconds }) => ({ id, ttlSeconds, expiresAt })),
    connect: () => ++clients,
    api,
    clientOf: (seam) => apis.get(seam),
    outage: (mode, affected) => {
      const set = affected === undefined ? undefined : new Set(affected)
      outage = { mode, clients: set }
      dropWatches((client) => set === undefined || set.has(client))
    },
    loseAnswers: (client, count) => {
      answersToLose.set(client, count)
    },
    recover: () => {
      outage = undefined
    },
    crash: (client) => {
      crashed.add(client)
      dropWatches((c) => c === client)
    },
    revokeFromOutside: (id) => {
      const found = leases.get(id)
      if (found === undefined) return false
      endLease(found)
      Queue.unsafeOffer(leasesChanged, undefined)
      return true
    },
    compact: (below) => {
      compactedBelow = Math.max(compactedBelow, Math.min(below, revision))
      while (history.length > 0 && history[0]!.revision < compactedBelow) history.shift()
      for (const [key, list] of versions) {
        // Keep the newest version at or below the compaction, and everything after it.
        let keep = 0
        for (let i = 0; i < list.length; i++) if (list[i]!.modRevision <= compactedBelow) keep = i
        const kept = list.slice(keep)
        if (kept.length === 1 && kept[0]!.kv === undefined) versions.delete(key)
        else versions.set(key, kept)
      }
    },
    put: (key, value) => commit((at, events) => writePut(at, events, key, value, "0")),
    delete: (key) => commit((at, events) => void writeDelete(at, events, key))
  }
})

const servers = new WeakMap<object, Server>()

/** Records the server behind a public `MemoryEtcd` service. */
export const attach = <A extends object>(service: A, server: Server): A => {
  servers.set(service, server)
  return service
}

/** The server behind a public `MemoryEtcd` service. */
export const serverOf = (service: object): Server => {
  const server = servers.get(service)
  if (server === undefined) throw new Error("not a MemoryEtcd made by MemoryEtcd.make or MemoryEtcd.layer")
  return server
}
