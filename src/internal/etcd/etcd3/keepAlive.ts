/** One lease keepalive over etcd3, on a stream of its own, with its deadline judged after ready I/O. */
import { Duration, Effect } from "effect"
import { castGrpcError, type Etcd3 } from "etcd3"
import { EtcdUnavailable } from "../../../EtcdSeqError.js"
import * as PendingIo from "../../pendingIo.js"
import type * as Api from "../api.js"
import { classify } from "./errors.js"
import { abandon } from "./internals.js"
import type { Settings } from "./settings.js"

/** One keepalive on a stream of its own (as etcd3's `keepaliveOnce`), answered within `within`. */
export const keepAlive = (
  etcd: Etcd3,
  settings: Settings,
  lease: string,
  within: Duration.Duration
): Effect.Effect<Api.KeepAlive, Api.RequestError> =>
  Effect.async<Api.KeepAlive, Api.RequestError>((resume) => {
    const fail = classify(settings.endpoints, "lease.keepalive", within)
    let stream: Awaited<ReturnType<typeof etcd.leaseClient.leaseKeepAlive>> | undefined
    let done = false
    // The deadline is judged here, after ready I/O (pendingIo.ts); gRPC's own, later, only ends a stream left behind.
    const timer = setTimeout(() =>
      PendingIo.unsafeAfterPendingIo(() => {
        if (done) return
        done = true
        if (stream !== undefined) abandon(stream)
        resume(Effect.fail(new EtcdUnavailable({ endpoints: settings.endpoints, timeout: within })))
      }), Duration.toMillis(within))
    etcd.leaseClient.leaseKeepAlive({ deadline: new Date(Date.now() + 2 * Duration.toMillis(within)) }).then(
      (opened) => {
        stream = opened
        if (done) return abandon(opened)
        opened.on("data", (response) => {
          if (done) return
          done = true
          clearTimeout(timer)
          opened.end()
          // etcd answers a keepalive of a lease it does not know with TTL 0.
          resume(Effect.succeed(response.TTL === "0" ? "gone" : "renewed"))
        })
        opened.on("error", (error) => {
          if (done) return
          done = true
          clearTimeout(timer)
          resume(Effect.fail(fail(castGrpcError(error))))
        })
        opened.write({ ID: lease })
      },
      (error) => {
        if (done) return
        done = true
        clearTimeout(timer)
        resume(Effect.fail(fail(error)))
      }
    )
    return Effect.sync(() => {
      clearTimeout(timer)
      if (done) return
      done = true
      if (stream !== undefined) abandon(stream)
    })
  }).pipe(Effect.withSpan("etcd.lease.keepalive", { kind: "client", captureStackTrace: false }))
