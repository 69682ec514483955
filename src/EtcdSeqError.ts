/**
 * The errors of effect-etcdseq: one tagged union, matched with `Effect.catchTag`.
 *
 * Each is a failure a program may end with, so each prints as one line where Effect reports one (`NodeRuntime.runMain`,
 * `Effect.logError(cause)`, `Cause.pretty`): its name and its message, which says what failed and where. The etcd
 * client's own error, where there is one, is kept in `error`: log it at debug level to see it whole.
 *
 * @since 0.1.0
 */
import { Data, Duration } from "effect"

/**
 * An option was refused before any I/O: the `field` names it, the `reason` says what would be accepted.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Etcd, EtcdSeq, MemoryEtcd } from "effect-etcdseq"
 *
 * const refused = EtcdSeq.make({ key: "" }).pipe(
 *   Effect.catchTag("InvalidOptions", (e) => Effect.logError(`${e.field}: ${e.reason}`)),
 *   Effect.scoped,
 *   Effect.provide(Etcd.layerMemory),
 *   Effect.provide(MemoryEtcd.layer)
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

  /** @internal */
  override stack = oneLine(this)
}

/**
 * etcd could not be reached within the connect timeout (or a request timed out because no endpoint answered).
 * `error` is what the etcd client reported, when it reported something (a refused connection, a TLS failure). The
 * message tells these apart (refused, no answer within `timeout`, a name that does not resolve, TLS) and says what
 * to check, in one line.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Etcd } from "effect-etcdseq"
 *
 * const connected = Etcd.make({ endpoints: ["http://10.0.0.1:2379"] }).pipe(
 *   Effect.scoped,
 *   // The client's own error, for whoever debugs the connection.
 *   Effect.tapErrorTag("EtcdUnavailable", (e) => Effect.logDebug("etcd client error", e.error)),
 *   Effect.catchTag("EtcdUnavailable", (e) => Effect.logError(`etcd down: ${e.endpoints.join(",")}`))
 * )
 * ```
 * @since 0.1.0
 * @category errors
 */
export class EtcdUnavailable extends Data.TaggedError("EtcdUnavailable")<{
  readonly endpoints: ReadonlyArray<string>
  readonly timeout: Duration.Duration
  readonly error?: unknown
}> {
  /**
   * Always `undefined`: `Cause.pretty` prints a `cause` with all its stack frames, so the client's error is `error`.
   * Declared so that reading `cause` does not compile.
   *
   * @internal
   */
  declare readonly cause?: undefined

  override get message(): string {
    const at = `etcd at ${this.endpoints.join(", ")}`
    const reported = this.error === undefined ? undefined : detail(this.error)
    if (reported === undefined || /DEADLINE_EXCEEDED/.test(reported)) {
      return `${at} did not answer within ${
        Duration.format(this.timeout)
      }: is etcd running there, and reachable from here?`
    }
    if (/ECONNREFUSED/.test(reported)) {
      return `${at} refused the connection: is etcd running and listening there?`
    }
    if (/ENOTFOUND|EAI_AGAIN|Name resolution failed/.test(reported)) {
      return `${at}: the host name does not resolve: check the endpoints`
    }
    if (/TLS|SSL|certificate|handshake/i.test(reported)) {
      return `${at}: TLS failed (${reported}): check http:// or https:// and the certificates`
    }
    return `${at} is unavailable (${reported}): is etcd running there, and reachable from here?`
  }

  /** @internal */
  override stack = oneLine(this)

  /**
   * What `JSON.stringify` shows: the client's error as its message (an `Error` would serialize as `{}`).
   *
   * @since 0.1.0
   */
  override toJSON(): unknown {
    return {
      _tag: this._tag,
      message: this.message,
      ...(this.error === undefined ? {} : { error: describe(this.error) })
    }
  }
}

/**
 * An etcd request failed for a reason other than unavailability (permission denied, bad request, ...).
 * `operation` names the request, `error` is what the etcd client reported. The message gives etcd's reason and, for
 * refused credentials or permissions, what to check.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Etcd, EtcdSeq } from "effect-etcdseq"
 *
 * const joined = EtcdSeq.make({ key: "indexer" }).pipe(
 *   Effect.scoped,
 *   Effect.provide(Etcd.layerConfig()),
 *   Effect.catchTag("EtcdRequestFailed", (e) => Effect.logError(`${e.operation} failed`, e.error))
 * )
 * ```
 * @since 0.1.0
 * @category errors
 */
export class EtcdRequestFailed extends Data.TaggedError("EtcdRequestFailed")<{
  readonly operation: string
  readonly error: unknown
}> {
  /**
   * Always `undefined`: `Cause.pretty` prints a `cause` with all its stack frames, so the client's error is `error`.
   * Declared so that reading `cause` does not compile.
   *
   * @internal
   */
  declare readonly cause?: undefined

  override get message(): string {
    const reported = detail(this.error)
    const message = this.error instanceof Error ? this.error.message : String(this.error)
    const check = /authentication failed/.test(message)
      ? ": check the user and password"
      : /user name is empty/.test(message)
      ? ": etcd has authentication on: give a user and password"
      : /permission denied/.test(message)
      ? ": the user's role must grant read and write on the group's keys"
      : /UNIMPLEMENTED/.test(message)
      ? ": is that etcd's client URL?"
      : ""
    return `etcd refused request "${this.operation}": ${reported}${check}`
  }

  /** @internal */
  override stack = oneLine(this)

  /**
   * What `JSON.stringify` shows: the client's error as its message (an `Error` would serialize as `{}`).
   *
   * @since 0.1.0
   */
  override toJSON(): unknown {
    return { _tag: this._tag, operation: this.operation, message: this.message, error: describe(this.error) }
  }
}

/**
 * `runAssigned` was called on a membership that already runs one: a membership has one runner at a time (two would
 * share its place in every lock queue and its handover key, undoing each other's promises). Join the group twice, on
 * two memberships, to run two kinds of work; a new runner may start once the previous one has ended.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { EtcdSeq, EtcdSeqLive } from "effect-etcdseq"
 *
 * const work = EtcdSeq.runAssigned(() => Effect.never)
 * // Two runners on one membership: the second fails.
 * const twice = Effect.all([work, work], { concurrency: 2 }).pipe(
 *   Effect.catchTag("AlreadyRunning", (e) => Effect.logError(e.message)),
 *   Effect.provide(EtcdSeqLive)
 * )
 * ```
 * @since 0.1.0
 * @category errors
 */
export class AlreadyRunning extends Data.TaggedError("AlreadyRunning")<{
  readonly group: string
}> {
  override get message(): string {
    return `a runner already runs on this membership of group "${this.group}"; one membership runs one at a time`
  }

  /** @internal */
  override stack = oneLine(this)
}

/**
 * `runShards` was asked for a number of shards that another member of the group already runs with a different one:
 * shard numbers would mean different things to them. Refused before anything runs.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { EtcdSeq, EtcdSeqLive } from "effect-etcdseq"
 *
 * const partitions = EtcdSeq.runShards((shard) => Effect.log(`partition ${shard.id}`), { shards: 64 }).pipe(
 *   Effect.catchTag("ShardCountMismatch", (e) => Effect.logError(`group runs ${e.shards}, asked ${e.requested}`)),
 *   Effect.provide(EtcdSeqLive)
 * )
 * ```
 * @since 0.1.0
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

  /** @internal */
  override stack = oneLine(this)
}

/**
 * `runShards` was asked for a move policy (`maxMoves`, `settle`) that another member of the group already runs with a
 * different one: members that bound or delay moves differently would not agree on which shards move when. Refused
 * before anything runs, as {@link ShardCountMismatch} is. A policy not given is the default: no bound (`maxMoves`
 * `Infinity`), no settle window (`settle` zero).
 *
 * @example
 * ```ts
 * import { Duration, Effect } from "effect"
 * import { EtcdSeq, EtcdSeqLive } from "effect-etcdseq"
 *
 * const partitions = EtcdSeq.runShards((shard) => Effect.log(`partition ${shard.id}`), { shards: 64, maxMoves: 4 })
 *   .pipe(
 *     Effect.catchTag("ShardPolicyMismatch", (e) =>
 *       Effect.logError(`group moves ${e.maxMoves} at once after ${Duration.format(e.settle)}`)),
 *     Effect.provide(EtcdSeqLive)
 *   )
 * ```
 * @since 0.2.0
 * @category errors
 */
export class ShardPolicyMismatch extends Data.TaggedError("ShardPolicyMismatch")<{
  readonly group: string
  /** What the group's members already run with: the most moves at once per member (`Infinity`: no bound). */
  readonly maxMoves: number
  /** What the group's members already run with: the settle window. */
  readonly settle: Duration.Duration
  /** What this member asked for. */
  readonly requestedMaxMoves: number
  /** What this member asked for. */
  readonly requestedSettle: Duration.Duration
}> {
  override get message(): string {
    const policy = (maxMoves: number, settle: Duration.Duration) =>
      `maxMoves ${maxMoves === Infinity ? "unbounded" : maxMoves}, settle ${Duration.format(settle)}`
    return `group "${this.group}" moves shards with ${policy(this.maxMoves, this.settle)}; this member asked for ${
      policy(this.requestedMaxMoves, this.requestedSettle)
    }`
  }

  /** @internal */
  override stack = oneLine(this)
}

/**
 * A newer member with the same `instance` took this member's place in the group (a restarted process while the old
 * one still ran, or two processes given one instance name). The older member's `changes` fails with it, its work
 * stops and it does not register again: the newer keeps the place, and the two never flap.
 *
 * @example
 * ```ts
 * import { Effect, Stream } from "effect"
 * import { EtcdSeq, EtcdSeqLive } from "effect-etcdseq"
 *
 * const program = EtcdSeq.changes.pipe(
 *   Stream.runForEach((info) => Effect.log(info)),
 *   Effect.catchTag("InstanceTaken", (e) => Effect.logWarning(`${e.instance} runs elsewhere now; exiting`)),
 *   Effect.provide(EtcdSeqLive)
 * )
 * ```
 * @since 0.1.0
 * @category errors
 */
export class InstanceTaken extends Data.TaggedError("InstanceTaken")<{
  readonly group: string
  readonly instance: string
}> {
  override get message(): string {
    return `instance "${this.instance}" of group "${this.group}" was taken over by a newer member with that instance`
  }

  /** @internal */
  override stack = oneLine(this)
}

const describe = (error: unknown): string => error instanceof Error ? `${error.name}: ${error.message}` : String(error)

/**
 * The etcd client's error for a message: gRPC's status code and etcd's `etcdserver:` prefix dropped, gRPC's empty
 * "Resolution note" too (`14 UNAVAILABLE: No connection established. Last error: Error: connect ECONNREFUSED ...` is
 * `connect ECONNREFUSED ...`). The code is kept when it is all there is.
 */
const detail = (error: unknown): string => {
  const message = error instanceof Error ? error.message : String(error)
  const text = message
    .replace(/^\d+ [A-Z_]+: /, "")
    .replace(/^etcdserver: /, "")
    .replace(/Error: /g, "")
    .replace(/^No connection established\. Last error: /, "")
    .replace(/\.? ?Resolution note: ?$/, "")
    .trim()
  return text === "" ? message : text
}

/**
 * The stack of an error the library fails with: its first line only. `Cause.pretty` (what `runMain` and every logger
 * print) shows an error's stack frames and then its `cause` with that cause's frames: for an unreachable etcd, 35
 * lines of gRPC and cockatiel. Where inside the library the error was made tells a user nothing (the message says
 * what failed and where), and the client's error is kept out of `cause` for the same reason.
 */
const oneLine = (error: { readonly name: string; readonly message: string }): string =>
  `${error.name}: ${error.message}`

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
  | ShardPolicyMismatch
  | InstanceTaken
