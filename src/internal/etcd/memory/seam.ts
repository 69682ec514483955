/**
 * One client's seam over the in-memory etcd: each request one atomic step on the server's state, as this client
 * sees it (refused or hanging while cut off, its answer lost when a fault says so). The seam carries its server and
 * its client's number, for the faults a test aims at it.
 */
import { Duration, Effect } from "effect"
import { EtcdRequestFailed, EtcdUnavailable } from "../../../EtcdSeqError.js"
import * as Api from "../api.js"
import * as Faults from "./faults.js"
import type { Leases } from "./leases.js"
import type { State } from "./state.js"
import * as Store from "./store.js"
import * as Watches from "./watches.js"

/** The key of the seam's owner (its server's state, its client's number) on the seam. */
const OwnerId: unique symbol = Symbol.for("effect-etcdseq/MemoryEtcd/client")

interface Owner {
  readonly state: State
  readonly client: number
}

/** The client of the server over `state` that a seam belongs to; undefined for any other seam (or a copy of one). */
export const clientOf = (state: State, api: Api.EtcdApi): number | undefined => {
  const owner = OwnerId in api ? (api as { readonly [OwnerId]: Owner })[OwnerId] : undefined
  return owner?.state === state ? owner.client : undefined
}

/** etcd's default `--max-txn-ops`. */
const maxTxnOps = 128

/** The requests that change etcd: the ones whose lost answer leaves the caller not knowing whether they landed. */
const writes = new Set(["put", "delete", "txn"])

export const make = (
  state: State,
  leases: Leases,
  client: number,
  requestTimeout: Duration.Duration
): Api.EtcdApi => {
  const endpoints = [`memory://client-${client}`]
  const unavailable = (timeout: Duration.Duration) => new EtcdUnavailable({ endpoints, timeout })
  /** A request as this client sees it: refused or hanging while cut off, else one atomic step. */
  const call = <A>(operation: string, run: () => A, within: Duration.Duration = requestTimeout) =>
    Effect.suspend((): Effect.Effect<A, Api.RequestError> => {
      const reach = Faults.reachable(state, client)
      if (reach === "unreachable") return Effect.fail(unavailable(within))
      if (reach === "hang") return Effect.zipRight(Effect.sleep(within), Effect.fail(unavailable(within)))
      try {
        const answer = run()
        if (!writes.has(operation) || !Faults.takeLostAnswer(state, client)) return Effect.succeed(answer)
        return Effect.zipRight(Effect.sleep(within), Effect.fail(unavailable(within)))
      } catch (cause) {
        return Effect.fail(new EtcdRequestFailed({ operation, error: cause }))
      }
    }).pipe(Effect.withSpan(`etcd.${operation}`, { kind: "client", captureStackTrace: false }))

  const seam: Api.EtcdApi = {
    endpoints,
    requestTimeout,
    range: (request) => call("range", () => Store.range(state, request)),
    put: (key, value, lease) =>
      call("put", () => ({
        revision: Store.commit(state, (at, events) => Store.writePut(state, at, events, key, value, lease ?? "0"))
      })),
    delete: (key) =>
      call("delete", () => {
        let deleted = 0
        const at = Store.commit(state, (next, events) => {
          deleted = Store.writeDelete(state, next, events, key)
        })
        return { revision: at, deleted }
      }),
    txn: (request) => call("txn", () => txn(state, request)),
    watch: (target, startRevision) =>
      Watches.open(state, client, () => Faults.reachable(state, client) === "yes", target, startRevision),
    grant: (ttlSeconds) => call("lease.grant", () => leases.grant(ttlSeconds)),
    keepAlive: (lease, within) => call("lease.keepalive", (): Api.KeepAlive => leases.keepAlive(lease), within),
    revoke: (lease) =>
      call("lease.revoke", () => {
        leases.end(lease)
        leases.changed()
      })
  }
  const owner: Owner = { state, client }
  return Object.defineProperty(seam, OwnerId, { value: owner, enumerable: false })
}

/** A transaction: etcd's checks of it, then its compares, then one branch, refused whole or applied whole. */
const txn = (state: State, request: Api.Txn): Api.TxnResult => {
  const succeeded = request.compare.every((c) => Store.compare(state, c))
  const ops = succeeded ? request.success : request.failure ?? []
  // etcd's own checks, of both branches whichever runs: at most --max-txn-ops compares and operations in
  // each, and no key written twice in one.
  const branches = [request.success, request.failure ?? []]
  if (request.compare.length > maxTxnOps || branches.some((ops) => ops.length > maxTxnOps)) {
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
    if (op._tag === "Put" && op.lease !== undefined && op.lease !== "0" && !state.leases.has(op.lease)) {
      throw new Api.LeaseNotFound({ lease: op.lease })
    }
  }
  const results: Array<Api.OpResult> = []
  // Reads see the transaction's own writes before them, as etcd's do.
  const at = Store.commit(state, (next, events) => {
    for (const op of ops) {
      if (op._tag === "Put") {
        Store.writePut(state, next, events, op.key, op.value, op.lease ?? "0")
        results.push({ _tag: "Put" })
      } else if (op._tag === "Delete") {
        results.push({ _tag: "Delete", deleted: Store.writeDelete(state, next, events, op.key) })
      } else {
        results.push({ _tag: "Range", result: Store.range(state, op.range, events.length > 0 ? next : state.revision) })
      }
    }
  })
  return { succeeded, revision: at, results }
}
