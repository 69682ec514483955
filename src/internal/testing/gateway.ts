/**
 * The few requests the harness makes to etcd's grpc-gateway JSON API: health, status, member list. The answers are
 * decoded by `healthJson.ts`.
 */
import { Effect, Option } from "effect"
import { live } from "./clock.js"
import { describeCause, type EtcdHarnessError, harnessError } from "./error.js"
import { healthyBody, peerUrlsOfBody, statusOfBody } from "./healthJson.js"
import type { EtcdStatus } from "./model.js"

export const HEALTH_REQUEST_TIMEOUT_MS = 1_000

/** One request; the body parsed as JSON, or kept as text when it is not JSON. */
const fetchJson = (
  url: string,
  init: { method: "GET" | "POST"; body?: string },
  timeoutMs: number
): Effect.Effect<{ status: number; body: unknown }, EtcdHarnessError> =>
  Effect.tryPromise({
    try: async (signal) => {
      const response = await fetch(url, {
        method: init.method,
        ...(init.body === undefined ? {} : { body: init.body, headers: { "content-type": "application/json" } }),
        signal: AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)])
      })
      const text = await response.text()
      let body: unknown = text
      try {
        body = JSON.parse(text)
      } catch {
        // keep the text
      }
      return { status: response.status, body }
    },
    catch: (cause) => harnessError(`${init.method} ${url} failed: ${describeCause(cause)}`, cause)
  })

/** `GET <clientUrl>/health` → `true` iff etcd answers `{"health":"true"}` within `timeoutMs`. Never fails. */
export const etcdHealthy = (clientUrl: string, timeoutMs: number = HEALTH_REQUEST_TIMEOUT_MS): Effect.Effect<boolean> =>
  fetchJson(`${clientUrl}/health`, { method: "GET" }, timeoutMs).pipe(
    Effect.map(({ body, status }) => status === 200 && healthyBody(body)),
    Effect.orElseSucceed(() => false),
    live
  )

/** `POST <clientUrl>/v3/maintenance/status` with `{}`: who leads, and the raft term. */
export const etcdStatus = (
  clientUrl: string,
  timeoutMs: number = HEALTH_REQUEST_TIMEOUT_MS
): Effect.Effect<EtcdStatus, EtcdHarnessError> =>
  fetchJson(`${clientUrl}/v3/maintenance/status`, { method: "POST", body: "{}" }, timeoutMs).pipe(
    Effect.flatMap(({ body, status }) =>
      Option.match(status === 200 ? statusOfBody(body) : Option.none(), {
        onNone: () =>
          Effect.fail(harnessError(`unexpected status answer from ${clientUrl} (${status}): ${JSON.stringify(body)}`)),
        onSome: Effect.succeed
      })
    ),
    live
  )

/** Peer URLs of all members `clientUrl` knows about (`POST /v3/cluster/member/list`). */
export const memberPeerUrls = (clientUrl: string): Effect.Effect<ReadonlyArray<string>, EtcdHarnessError> =>
  fetchJson(`${clientUrl}/v3/cluster/member/list`, { method: "POST", body: "{}" }, HEALTH_REQUEST_TIMEOUT_MS).pipe(
    Effect.map(({ body }) => peerUrlsOfBody(body))
  )
