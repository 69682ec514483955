/**
 * The one place etcd3 promises become Effects, with their failures sorted into the public error union.
 */
import { Duration, Effect } from "effect"
import type { Etcd3 } from "etcd3"
import { GRPCResourceExhastedError, isRecoverableError } from "etcd3"
import { EtcdRequestFailed, EtcdUnavailable } from "../EtcdSeqError.js"

/** What internal modules need of a client: the connection and the bounds its requests run under. */
export interface Connection {
  readonly client: Etcd3
  readonly endpoints: ReadonlyArray<string>
  readonly requestTimeout: Duration.Duration
}

const unavailableNames = new Set([
  "GRPCUnavailableError",
  "GRPCDeadlineExceededError",
  "GRPCCancelledError",
  "BrokenCircuitError",
  "TaskCancelledError",
  "ClientClosedError"
])

/**
 * True when a failure means "no etcd answered", as opposed to "etcd answered no". etcd3 counts RESOURCE_EXHAUSTED as
 * recoverable, but it is a refusal: a response over the client's message size, an etcd out of space, a rate limit.
 */
export const isUnavailability = (cause: unknown): boolean =>
  cause instanceof Error && !(cause instanceof GRPCResourceExhastedError) &&
  (unavailableNames.has(cause.name) || unavailableNames.has(cause.constructor.name) || isRecoverableError(cause))

export const classify = (
  connection: Connection,
  operation: string,
  timeout: Duration.Duration = connection.requestTimeout
) =>
(cause: unknown): EtcdUnavailable | EtcdRequestFailed =>
  isUnavailability(cause)
    ? new EtcdUnavailable({ endpoints: connection.endpoints, timeout, cause })
    : new EtcdRequestFailed({ operation, cause })

/**
 * Runs one etcd request. Unary requests carry a gRPC deadline of `requestTimeout` (set on the client); the Effect
 * timeout here is a second bound in case a request is queued behind a reconnect that never completes.
 *
 * By default the request can be interrupted, even in a finalizer (a revoke on release), so the timeout always bounds
 * it. A request that creates a key must not be: abandoned in flight it may still be applied, after the delete that
 * was meant to clean it up. `{ completes: true }` lets it finish (bounded by its gRPC deadline) when interrupted.
 */
export const request = <A>(
  connection: Connection,
  operation: string,
  run: (client: Etcd3) => Promise<A>,
  options?: { readonly completes?: boolean }
): Effect.Effect<A, EtcdUnavailable | EtcdRequestFailed> =>
  Effect.tryPromise({ try: () => run(connection.client), catch: classify(connection, operation) }).pipe(
    options?.completes === true ? Effect.uninterruptible : Effect.interruptible,
    Effect.timeoutFail({
      duration: Duration.sum(connection.requestTimeout, Duration.millis(500)),
      onTimeout: () => new EtcdUnavailable({ endpoints: connection.endpoints, timeout: connection.requestTimeout })
    }),
    // No stack trace: requests are many (a join storm makes thousands) and the operation names the call site.
    Effect.withSpan(`etcd.${operation}`, { kind: "client", captureStackTrace: false })
  )
