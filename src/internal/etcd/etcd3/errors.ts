/**
 * etcd3's failures sorted into the seam's errors: no etcd answered (`EtcdUnavailable`), or etcd answered no
 * (`EtcdRequestFailed`), with etcd's two refusals the library acts on in the seam's own terms. What etcd3 throws is
 * known only by its class or message, so this is the one place that asks.
 */
import type { Duration } from "effect"
import { EtcdLeaseInvalidError, GRPCResourceExhastedError, isRecoverableError } from "etcd3"
import { EtcdRequestFailed, EtcdUnavailable } from "../../../EtcdSeqError.js"
import * as Api from "../api.js"

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
const isUnavailability = (cause: unknown): boolean =>
  cause instanceof Error && !(cause instanceof GRPCResourceExhastedError) &&
  (unavailableNames.has(cause.name) || unavailableNames.has(cause.constructor.name) || isRecoverableError(cause))

const compactedPattern = /required revision has been compacted/

export const classify = (
  endpoints: ReadonlyArray<string>,
  operation: string,
  timeout: Duration.Duration
) =>
(cause: unknown): Api.RequestError =>
  isUnavailability(cause)
    ? new EtcdUnavailable({ endpoints, timeout, error: cause })
    : new EtcdRequestFailed({
      operation,
      // etcd's two refusals the library acts on, in the seam's own terms.
      error: cause instanceof EtcdLeaseInvalidError
        ? new Api.LeaseNotFound({})
        : cause instanceof Error && compactedPattern.test(cause.message)
        ? new Api.Compacted({})
        : cause
    })
