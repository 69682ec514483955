/**
 * The seam over the `etcd3` package: the one place etcd3 is called, its promises become Effects and its failures
 * are sorted into the public error union (no etcd answered: `EtcdUnavailable`; etcd answered no:
 * `EtcdRequestFailed`). Its parts, by job, under `etcd3/`: the client and its proof (connect.ts), the errors
 * (errors.ts), the protocol messages (convert.ts), keepalives (keepAlive.ts) and watches (watch.ts).
 */
import { Duration, Effect, type Scope } from "effect"
import type { Etcd3 } from "etcd3"
import { EtcdUnavailable, type InvalidOptions } from "../../EtcdSeqError.js"
import * as Bounded from "../bounded.js"
import * as Api from "./api.js"
import { client, prove } from "./etcd3/connect.js"
import { toCompare, toKeyValue, toOpResult, toRangeRequest, toRequestOp } from "./etcd3/convert.js"
import { classify } from "./etcd3/errors.js"
import { keepAlive } from "./etcd3/keepAlive.js"
import type { Settings } from "./etcd3/settings.js"
import { watch } from "./etcd3/watch.js"

/** The etcd3 client type, for the public `Etcd3Client`: nothing outside `internal/etcd/` imports etcd3. */
export type { Etcd3 } from "etcd3"
export { classify } from "./etcd3/errors.js"
export type { Credentials, Settings } from "./etcd3/settings.js"

// --- Requests -----------------------------------------------------------------------------------------------------

/**
 * One request. Unary requests carry a gRPC deadline of `requestTimeout` (set on the client); the Effect timeout here
 * is a second bound in case a request is queued behind a reconnect that never completes. A write completes even when
 * interrupted (bounded by its deadline): abandoned in flight it could still be applied, after the delete meant to
 * clean it up.
 */
const request = <A>(
  settings: Settings,
  operation: string,
  run: () => Promise<A>,
  completes = false
): Effect.Effect<A, Api.RequestError> =>
  Effect.tryPromise({ try: run, catch: classify(settings.endpoints, operation, settings.requestTimeout) }).pipe(
    (self) => completes ? Effect.uninterruptible(self) : self,
    Bounded.timeoutFail({
      duration: Duration.sum(settings.requestTimeout, Duration.millis(500)),
      onTimeout: () => new EtcdUnavailable({ endpoints: settings.endpoints, timeout: settings.requestTimeout })
    }),
    // No stack trace: requests are many (a join storm makes thousands) and the operation names the call site.
    Effect.withSpan(`etcd.${operation}`, { kind: "client", captureStackTrace: false })
  )

// --- The seam -----------------------------------------------------------------------------------------------------

/** The client, connected and proven, with the seam over it. */
export const make = (
  settings: Settings
): Effect.Effect<
  { readonly api: Api.EtcdApi; readonly client: Etcd3 },
  Api.RequestError | InvalidOptions,
  Scope.Scope
> =>
  Effect.gen(function*() {
    const etcd = yield* client(settings)
    yield* prove(settings, etcd)
    const api: Api.EtcdApi = {
      endpoints: settings.endpoints,
      requestTimeout: settings.requestTimeout,
      range: (range) =>
        request(settings, "range", () => etcd.kv.range(toRangeRequest(range))).pipe(
          Effect.map((response) => ({
            kvs: response.kvs.map(toKeyValue),
            more: response.more,
            revision: Number(response.header.revision)
          }))
        ),
      put: (key, value, lease) =>
        request(
          settings,
          "put",
          () =>
            etcd.kv.put({
              key: Buffer.from(key),
              value: Buffer.from(value),
              ...(lease === undefined ? {} : { lease })
            }),
          true
        ).pipe(Effect.map((response) => ({ revision: Number(response.header.revision) }))),
      delete: (key) =>
        request(settings, "delete", () => etcd.kv.deleteRange({ key: Buffer.from(key) })).pipe(
          Effect.map((response) => ({ revision: Number(response.header.revision), deleted: Number(response.deleted) }))
        ),
      txn: (txn) =>
        request(settings, "txn", () =>
          etcd.kv.txn({
            compare: txn.compare.map(toCompare),
            success: txn.success.map(toRequestOp),
            failure: (txn.failure ?? []).map(toRequestOp)
          }), true).pipe(
            Effect.map((response) => {
              const revision = Number(response.header.revision)
              const ops = response.succeeded ? txn.success : txn.failure ?? []
              return {
                succeeded: response.succeeded,
                revision,
                results: ops.map((op, i) => toOpResult(op, response.responses[i], revision))
              }
            })
          ),
      watch: (target, startRevision) => watch(etcd, settings, target, startRevision),
      grant: (ttlSeconds) =>
        request(settings, "lease.grant", () => etcd.leaseClient.leaseGrant({ TTL: ttlSeconds })).pipe(
          Effect.map((response) => response.ID)
        ),
      keepAlive: (lease, within) => keepAlive(etcd, settings, lease, within),
      revoke: (lease) =>
        request(settings, "lease.revoke", () => etcd.leaseClient.leaseRevoke({ ID: lease })).pipe(
          Effect.asVoid,
          // A lease etcd does not know is revoked already.
          Effect.catchIf(Api.isLeaseNotFound, () => Effect.void)
        )
    }
    return { api, client: etcd }
  })
