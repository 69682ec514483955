/**
 * The errors of effect-etcdseq: one tagged union, matched with `Effect.catchTag`.
 *
 * @since 0.1.0
 */
import { Data, Duration } from "effect"

/**
 * An option was refused before any I/O: the `field` names it, the `reason` says what would be accepted.
 *
 * @example
 * ```ts
 * EtcdSeq.make({ key: "" }).pipe(
 *   Effect.catchTag("InvalidOptions", (e) => Effect.logError(`${e.field}: ${e.reason}`))
 * )
 * ```
 * @since 0.1.0
 * @category errors
 */
export class InvalidOptions extends Data.TaggedError("InvalidOptions")<{
  readonly field: string
  readonly reason: string
}> {
  override get message(): string {
    return `Invalid option "${this.field}": ${this.reason}`
  }
}

/**
 * etcd could not be reached within the connect timeout (or a request timed out because no endpoint answered).
 *
 * @example
 * ```ts
 * Effect.catchTag("EtcdUnavailable", (e) => Effect.logError(`etcd down: ${e.endpoints.join(",")}`))
 * ```
 * @since 0.1.0
 * @category errors
 */
export class EtcdUnavailable extends Data.TaggedError("EtcdUnavailable")<{
  readonly endpoints: ReadonlyArray<string>
  readonly timeout: Duration.Duration
  readonly cause?: unknown
}> {
  override get message(): string {
    return `etcd unavailable at ${this.endpoints.join(", ")} within ${Duration.format(this.timeout)}`
  }
}

/**
 * An etcd request failed for a reason other than unavailability (permission denied, bad request, ...).
 * `operation` names the request, `cause` is what the etcd client reported.
 *
 * @example
 * ```ts
 * Effect.catchTag("EtcdRequestFailed", (e) => Effect.logError(`${e.operation} failed`, e.cause))
 * ```
 * @since 0.1.0
 * @category errors
 */
export class EtcdRequestFailed extends Data.TaggedError("EtcdRequestFailed")<{
  readonly operation: string
  readonly cause: unknown
}> {
  override get message(): string {
    const cause = this.cause instanceof Error ? this.cause.message : String(this.cause)
    return `etcd request "${this.operation}" failed: ${cause}`
  }
}

/**
 * Every error effect-etcdseq can fail with.
 *
 * @since 0.1.0
 * @category errors
 */
export type EtcdSeqError = InvalidOptions | EtcdUnavailable | EtcdRequestFailed
