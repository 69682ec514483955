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

  /** What logs and `JSON.stringify` show: the cause as its message (an `Error` would serialize as `{}`). */
  override toJSON(): unknown {
    return {
      _tag: this._tag,
      message: this.message,
      ...(this.cause === undefined ? {} : { cause: describeCause(this.cause) })
    }
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
    return `etcd request "${this.operation}" failed: ${describeCause(this.cause)}`
  }

  /** What logs and `JSON.stringify` show: the cause as its message (an `Error` would serialize as `{}`). */
  override toJSON(): unknown {
    return { _tag: this._tag, operation: this.operation, message: this.message, cause: describeCause(this.cause) }
  }
}

/**
 * `runAssigned` was called on a membership that already runs one: a membership has one runner at a time (two would
 * share its place in every lock queue and its handover key, undoing each other's promises). Join the group twice, on
 * two memberships, to run two kinds of work; a new runner may start once the previous one has ended.
 *
 * @example
 * ```ts
 * EtcdSeq.runAssigned(work).pipe(Effect.catchTag("AlreadyRunning", (e) => Effect.logError(e.message)))
 * ```
 * @since 0.2.0
 * @category errors
 */
export class AlreadyRunning extends Data.TaggedError("AlreadyRunning")<{
  readonly group: string
}> {
  override get message(): string {
    return `a runner already runs on this membership of group "${this.group}"; one membership runs one at a time`
  }
}

/**
 * `runShards` was asked for a number of shards that another member of the group already runs with a different one:
 * shard numbers would mean different things to them. Refused before anything runs.
 *
 * @example
 * ```ts
 * EtcdSeq.runShards({ shards: 64 }, work).pipe(
 *   Effect.catchTag("ShardCountMismatch", (e) => Effect.logError(`group runs ${e.shards}, asked ${e.requested}`))
 * )
 * ```
 * @since 0.2.0
 * @category errors
 */
export class ShardCountMismatch extends Data.TaggedError("ShardCountMismatch")<{
  readonly group: string
  /** What the group's members already run with. */
  readonly shards: number
  /** What this member asked for. */
  readonly requested: number
}> {
  override get message(): string {
    return `group "${this.group}" runs ${this.shards} shards; this member asked for ${this.requested}`
  }
}

/**
 * A newer member with the same `instance` took this member's place in the group (a restarted process while the old
 * one still ran, or two processes given one instance name). The older member's `changes` fails with it, its work
 * stops and it does not register again: the newer keeps the place, and the two never flap.
 *
 * @example
 * ```ts
 * EtcdSeq.changes.pipe(
 *   Stream.runForEach(Effect.log),
 *   Effect.catchTag("InstanceTaken", (e) => Effect.logWarning(`${e.instance} runs elsewhere now; exiting`))
 * )
 * ```
 * @since 0.3.0
 * @category errors
 */
export class InstanceTaken extends Data.TaggedError("InstanceTaken")<{
  readonly group: string
  readonly instance: string
}> {
  override get message(): string {
    return `instance "${this.instance}" of group "${this.group}" was taken over by a newer member with that instance`
  }
}

const describeCause = (cause: unknown): string =>
  cause instanceof Error ? `${cause.name}: ${cause.message}` : String(cause)

/**
 * Every error effect-etcdseq can fail with.
 *
 * @since 0.1.0
 * @category errors
 */
export type EtcdSeqError =
  | InvalidOptions
  | EtcdUnavailable
  | EtcdRequestFailed
  | AlreadyRunning
  | ShardCountMismatch
  | InstanceTaken
