/**
 * An etcd in memory, with etcd's semantics for what the library uses, and the seam over it for each of its clients.
 * Its parts, by job, under `memory/`:
 *
 * - the key store (store.ts): one global revision, bumped once per write request; multi-version reads at any
 *   revision not compacted away;
 * - the lease table (leases.ts): TTLs on Effect's `Clock` (so `TestClock.adjust` expires them); an expired or revoked
 *   lease takes its keys with it, in one revision;
 * - the watch hub (watches.ts): watches of a key or a prefix from any revision, in order; a start revision compaction
 *   removed cancels the watch;
 * - the faults (faults.ts): an outage (requests fail at once or hang until their deadline), a client that dies
 *   without revoking, a lease revoked from outside, a compaction;
 * - one client's seam (seam.ts).
 *
 * Every operation is one synchronous step on plain data (state.ts), so each is atomic, as etcd's requests are.
 */
import type { Duration, Scope } from "effect"
import { Effect } from "effect"
import type * as Api from "./api.js"
import * as Faults from "./memory/faults.js"
import * as Leases from "./memory/leases.js"
import * as Seam from "./memory/seam.js"
import * as State from "./memory/state.js"
import * as Store from "./memory/store.js"

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
  readonly outage: (mode: State.OutageMode, clients: ReadonlyArray<number> | undefined) => void
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
  const state = State.make()
  const leases = yield* Leases.make(state)
  return {
    revision: () => state.revision,
    compactedBelow: () => state.compactedBelow,
    read: (prefix) => Store.range(state, { target: { prefix } }).kvs,
    leases: () => [...state.leases.values()].map(({ expiresAt, id, ttlSeconds }) => ({ id, ttlSeconds, expiresAt })),
    connect: () => ++state.clients,
    api: (client, requestTimeout) => Seam.make(state, leases, client, requestTimeout),
    clientOf: (seam) => Seam.clientOf(state, seam),
    outage: (mode, affected) => Faults.outage(state, mode, affected),
    loseAnswers: (client, count) => Faults.loseAnswers(state, client, count),
    recover: () => Faults.recover(state),
    crash: (client) => Faults.crash(state, client),
    revokeFromOutside: (id) => {
      if (!leases.end(id)) return false
      leases.changed()
      return true
    },
    compact: (below) => Store.compact(state, below),
    put: (key, value) => Store.commit(state, (at, events) => Store.writePut(state, at, events, key, value, "0")),
    delete: (key) => Store.commit(state, (at, events) => void Store.writeDelete(state, at, events, key))
  }
})

// --- The server on the public service value ---

/** The key of the server on a `MemoryEtcd` service value; not exported by the package. */
export const TypeId: unique symbol = Symbol.for("effect-etcdseq/MemoryEtcd")
export type TypeId = typeof TypeId

/** The service value, carrying its server (neither enumerable nor writable: it prints as its public members). */
export const attach = <A extends { readonly [TypeId]?: Server | undefined }>(
  service: Omit<A, TypeId>,
  server: Server
): A =>
  Object.defineProperty(service, TypeId, {
    value: server,
    enumerable: false,
    writable: false,
    configurable: false
  }) as A

/** The server behind a public `MemoryEtcd` service. */
export const serverOf = (service: { readonly [TypeId]?: Server | undefined }): Server => {
  const server = typeof service === "object" && service !== null && TypeId in service ? service[TypeId] : undefined
  if (server === undefined) throw new Error("not a MemoryEtcd made by MemoryEtcd.make or MemoryEtcd.layer")
  return server
}
