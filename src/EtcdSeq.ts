/**
 * Membership of a group: every member gets its `(index, count)` and keeps it right while members come and go.
 *
 * Sections: the options (`EtcdSeqOptions`); the service (`EtcdSeqService`); the `EtcdSeq` tag with its constructors
 * (`make`, `layer`, `config`, `layerConfig`), accessors (`changes`, `current`, `members`), `observe` and the runners
 * (`runAssigned`, `runShards`); `EtcdSeqLive`; the options' validation. Mostly TSDoc: the code is in internal/.
 *
 * @since 0.1.0
 */
import { Config, Context, Duration, Effect, Layer, Option, type Schedule, type Scope, Stream } from "effect"
import type { ConfigError } from "effect/ConfigError"
import { dual } from "effect/Function"
import type { Assignment, Exclusive } from "./Assignment.js"
import { Etcd } from "./Etcd.js"
import { InvalidOptions } from "./EtcdSeqError.js"
import type { EtcdRequestFailed, EtcdSeqError, EtcdUnavailable, InstanceTaken } from "./EtcdSeqError.js"
import type { GroupView, Member } from "./GroupView.js"
import type { Info } from "./Info.js"
import * as Client from "./internal/client.js"
import * as Drain from "./internal/drain.js"
import * as Keys from "./internal/keys.js"
import * as Membership from "./internal/membership.js"
import * as Observe from "./internal/observe.js"
import type { Settings } from "./internal/registration.js"
import * as Retry from "./internal/retry.js"
import * as RunAssigned from "./internal/runAssigned.js"
import * as RunShards from "./internal/runShards.js"
import * as ShardOwners from "./internal/shardOwners.js"
import * as ShardPlan from "./internal/shardPlan.js"
import * as Source from "./internal/source.js"
import * as View from "./internal/view.js"
import type { Shard } from "./Shard.js"

/**
 * Options of one membership.
 *
 * @since 0.1.0
 * @category models
 */
export interface EtcdSeqOptions {
  /**
   * The group: `/`-separated segments of letters, digits, `.`, `_` and `-`, such as `prod/indexer`. Members write
   * under `<key>/members/`, so `members` and `locks` are reserved segments: no group nests in another's keys.
   */
  readonly key: string
  /** Lease TTL: how long a crashed member keeps its index. At least 1 second, at most 24 hours. Default 10 s. */
  readonly ttl?: Duration.DurationInput | undefined
  /** A string stored with the member (its address, say), visible to all through `members`. At most 1 MiB. */
  readonly metadata?: string | undefined
  /**
   * How re-registration after a lost lease is retried. Default: exponential from 100 ms, capped at 5 s, forever.
   * When it gives up, `changes` fails with the last registration error.
   */
  readonly reregister?: Schedule.Schedule<unknown, EtcdSeqError> | undefined
  /**
   * A stable name for this member (a pod name, a host name), unique in the group: letters, digits, `.`, `_` and `-`,
   * at most 253 characters. A member with an instance that rejoins while its previous incarnation's key still exists
   * (it crashed, and its lease has not expired yet) takes that place over: same index, and the other members see no
   * change. Its exclusive work still waits until the previous incarnation's locks and claims are gone (after a
   * crash: up to the TTL). Of two live members with one instance the newer wins; the older one's `changes` fails
   * with `InstanceTaken`. Without an instance (the default) a restart is a leave and a join.
   *
   * @since 0.1.0
   */
  readonly instance?: string | undefined
  /**
   * With an `instance`: a leave (the scope closing) keeps the member's place for the TTL instead of giving it up, so
   * that its next incarnation takes it back: a graceful rolling restart (SIGTERM, a new pod) then changes nothing for
   * the others. Its work stops and its locks and claims are released at once, so the next incarnation's exclusive
   * work starts without waiting; until it comes, the member's index (or shards) is held but nobody works on it, and
   * if it does not come within the TTL the others see the leave then. Default `false`: a leave is seen at once.
   *
   * @since 0.1.0
   */
  readonly keepPlaceOnLeave?: boolean | undefined
  /**
   * The member's share of the group's shards relative to the others' (`runShards`): a positive finite number,
   * default 1. Member `m` gets at most ⌈1.25 · shards · w_m / W⌉ shards, `W` the sum of the weights of the members
   * the plan gives shards to. Written in the member's record (only when it is not 1), so every member plans with
   * everyone's weight; `etcdseq members` shows it. The member's Info (index and count) does not depend on weights.
   * Anything else is `InvalidOptions` (field `weight`).
   *
   * @since 0.2.0
   */
  readonly weight?: number | undefined
}

/**
 * Options of `EtcdSeq.runAssigned`.
 *
 * @since 0.1.0
 * @category models
 */
export interface RunAssignedOptions {
  /**
   * `"none"` (the default): work per Info, no coordination. `"index"`: never two members' work of one index at once,
   * through an index lock. `"group"`: no work of a new view before every member stopped its work of older views.
   */
  readonly exclusive?: Exclusive | undefined
}

/**
 * Options of `EtcdSeq.runShards`.
 *
 * @since 0.1.0
 * @category models
 */
export interface RunShardsOptions {
  /** The group's number of shards, the same on every member: an integer from 1 to 65,536. */
  readonly shards: number
  /**
   * The most shards moving at once per member: a move counts against the member the shard leaves and the member it
   * joins, and the others wait for earlier ones to finish. An integer >= 1, or `Infinity` (the default): no bound. A
   * gone member's shards move at once, whatever the bound. The same on every member of the group.
   *
   * @since 0.2.0
   */
  readonly maxMoves?: number | undefined
  /**
   * A window that merges a burst of joins and leaves into one change of the plan: the plan a member acts on changes
   * only once the group's members have been unchanged for `settle`. A gone member's shards move at once, whatever
   * the window. Default: none (zero). The same on every member of the group.
   *
   * @since 0.2.0
   */
  readonly settle?: Duration.DurationInput | undefined
}

/**
 * The service of one membership.
 *
 * @since 0.1.0
 * @category models
 */
export interface EtcdSeqService {
  /** The group key. */
  readonly group: string
  /**
   * The member's Info: the current one first, then every change, never two equal Infos in a row. While the
   * membership is lost (and being re-registered) it is `Info.invalid`, and so it is while the member's lease cannot
   * be proved alive in time (its self-fence: work must stop); a keepalive that succeeds then gives the member its
   * place back, unseen by the others. When the membership ends (its scope closed) the stream emits `Info.invalid`
   * and completes; it fails only when re-registration gives up.
   */
  readonly changes: Stream.Stream<Info, EtcdSeqError>
  /** The member's Info now. */
  readonly current: Effect.Effect<Info>
  /** The live members of the group in index order, as this member's view holds them. */
  readonly members: Effect.Effect<ReadonlyArray<Member>>
  /**
   * What the runners need of a membership this library made; a hand-made service (a test double) has none.
   *
   * @internal
   */
  readonly [Source.SourceId]?: Source.Library | undefined
}

/**
 * One membership of a group, held for the life of a scope.
 *
 * Acquiring it writes the member's key under its client's lease and waits until the group's view holds it; releasing
 * it deletes the key, a graceful leave the other members see at once. The lease is a managed resource of the `Etcd`
 * client, one per TTL: granted for the client's first member, kept alive once for all of them, revoked when the
 * last leaves. A member that crashes (its process gone) leaves after the lease TTL.
 *
 * @example
 * ```ts
 * import { NodeRuntime } from "@effect/platform-node"
 * import { Effect, Stream } from "effect"
 * import { EtcdSeq, EtcdSeqLive } from "effect-etcdseq"
 *
 * const program = EtcdSeq.changes.pipe(
 *   Stream.runForEach((info) => Effect.log(`I am ${info.index} of ${info.count}`))
 * )
 * NodeRuntime.runMain(program.pipe(Effect.provide(EtcdSeqLive)))
 * ```
 * @since 0.1.0
 * @category tags
 */
export class EtcdSeq extends Context.Tag("effect-etcdseq/EtcdSeq")<EtcdSeq, EtcdSeqService>() {
  /**
   * Joins the group for the life of the scope. When it returns, the member is registered and `current` holds
   * its valid Info (unless its client fenced itself meanwhile: see `changes`).
   *
   * Errors: `InvalidOptions` (before any I/O), `EtcdUnavailable`, `EtcdRequestFailed`; later, through `changes`,
   * `InstanceTaken` when a newer member takes this one's `instance` over.
   *
   * @example
   * ```ts
   * import { Effect } from "effect"
   * import { Etcd, EtcdSeq } from "effect-etcdseq"
   *
   * const program = Effect.gen(function*() {
   *   const seq = yield* EtcdSeq.make({ key: "indexer", ttl: "5 seconds", metadata: "10.0.0.7:8080" })
   *   const info = yield* seq.current
   *   yield* Effect.log(`joined as ${info.index} of ${info.count}`)
   * }).pipe(Effect.scoped, Effect.provide(Etcd.layerConfig()))
   * ```
   * @since 0.1.0
   * @category constructors
   */
  static make(
    options: EtcdSeqOptions
  ): Effect.Effect<
    EtcdSeqService,
    InvalidOptions | EtcdUnavailable | EtcdRequestFailed | InstanceTaken,
    Etcd | Scope.Scope
  > {
    return Effect.gen(function*() {
      const settings = yield* validate(options)
      const shared = yield* Client.required(yield* Etcd)
      // The span is EtcdSeq.register's: a span around the whole make would be held by the member for its life.
      return yield* Membership.make(shared, settings)
    })
  }

  /**
   * The membership as a layer over an `Etcd` client.
   *
   * @example
   * ```ts
   * import { Layer } from "effect"
   * import { Etcd, EtcdSeq } from "effect-etcdseq"
   *
   * const Live = EtcdSeq.layer({ key: "indexer" }).pipe(Layer.provide(Etcd.layerConfig()))
   * ```
   * @since 0.1.0
   * @category layers
   */
  static layer(
    options: EtcdSeqOptions
  ): Layer.Layer<EtcdSeq, InvalidOptions | EtcdUnavailable | EtcdRequestFailed | InstanceTaken, Etcd> {
    return Layer.scoped(EtcdSeq, EtcdSeq.make(options))
  }

  /**
   * The membership's options from configuration: `ETCDSEQ_KEY` (required), `ETCDSEQ_TTL` (a duration such as
   * `10 seconds`, optional), `ETCDSEQ_METADATA` (optional), `ETCDSEQ_INSTANCE` (optional; in Kubernetes, the pod
   * name from the downward API), `ETCDSEQ_KEEP_PLACE_ON_LEAVE` (`true` or `false`, optional), `ETCDSEQ_WEIGHT` (a
   * positive number, optional; since 0.2.0).
   *
   * @since 0.1.0
   * @category config
   */
  static readonly config: Config.Config<EtcdSeqOptions> = Config.all({
    key: Config.string("ETCDSEQ_KEY"),
    ttl: Config.option(Config.duration("ETCDSEQ_TTL")),
    metadata: Config.option(Config.string("ETCDSEQ_METADATA")),
    instance: Config.option(Config.string("ETCDSEQ_INSTANCE")),
    keepPlaceOnLeave: Config.option(Config.boolean("ETCDSEQ_KEEP_PLACE_ON_LEAVE")),
    weight: Config.option(Config.number("ETCDSEQ_WEIGHT"))
  }).pipe(Config.map(({ instance, keepPlaceOnLeave, key, metadata, ttl, weight }) => ({
    key,
    ttl: Option.getOrUndefined(ttl),
    metadata: Option.getOrUndefined(metadata),
    instance: Option.getOrUndefined(instance),
    keepPlaceOnLeave: Option.getOrUndefined(keepPlaceOnLeave),
    weight: Option.getOrUndefined(weight)
  })))

  /**
   * The membership as a layer whose options come from `Config` (by default {@link EtcdSeq.config}).
   *
   * @since 0.1.0
   * @category layers
   */
  static layerConfig(
    config: Config.Config<EtcdSeqOptions> = EtcdSeq.config
  ): Layer.Layer<EtcdSeq, EtcdSeqError | ConfigError, Etcd> {
    return Layer.scoped(EtcdSeq, Effect.flatMap(config, EtcdSeq.make))
  }

  /**
   * `changes` of the `EtcdSeq` in the context.
   *
   * @since 0.1.0
   * @category accessors
   */
  static readonly changes: Stream.Stream<Info, EtcdSeqError, EtcdSeq> = Stream.unwrap(
    Effect.map(EtcdSeq, (seq) => seq.changes)
  )

  /**
   * `current` of the `EtcdSeq` in the context.
   *
   * @since 0.1.0
   * @category accessors
   */
  static readonly current: Effect.Effect<Info, never, EtcdSeq> = Effect.flatMap(EtcdSeq, (seq) => seq.current)

  /**
   * `members` of the `EtcdSeq` in the context.
   *
   * @since 0.1.0
   * @category accessors
   */
  static readonly members: Effect.Effect<ReadonlyArray<Member>, never, EtcdSeq> = Effect.flatMap(
    EtcdSeq,
    (seq) => seq.members
  )

  /**
   * Drains the member in context: it stays in the group (its `Info` does not change) but the shard plan of
   * `runShards` gives it no shard, so each of its shards moves, once, straight to its planned owner among the other
   * members (by their weights, pins and pauses). It completes once the member holds no shard and each shard it gave
   * up runs at its new owner (its holding claim is the new owner's). The drain lasts until the member leaves: its
   * request is a key under the member's lease, `<group>/shards/drains/<member id>`, which the leave deletes (a later
   * registration, after a lost lease, drains too). A member that runs no shards is drained at once.
   *
   * When every member of the plan drains, the plan keeps its shards where they are (they must run somewhere), and
   * the drain completes without moving them: the leave that usually follows moves them, as any leave does.
   *
   * Bound it with a timeout of your own (`etcdseq run --drain-timeout` does): a shard whose new owner cannot start it
   * (its previous owner's claim lingers, etcd is unreachable) keeps the drain waiting.
   *
   * Errors: `InvalidOptions` for a membership not made by `EtcdSeq.make`; `EtcdUnavailable`, `EtcdRequestFailed`
   * (following the group); the membership's own error if it fails meanwhile. It completes when the membership ends.
   *
   * @example
   * ```ts
   * import { Deferred, Effect } from "effect"
   * import { EtcdSeq, EtcdSeqLive } from "effect-etcdseq"
   *
   * // On a stop request: drain (the shards move one by one while the runner keeps the others running), then stop.
   * const serve = (stop: Deferred.Deferred<void>) =>
   *   Effect.raceFirst(
   *     EtcdSeq.runShards(() => Effect.never, { shards: 64 }),
   *     Deferred.await(stop).pipe(Effect.zipRight(EtcdSeq.drain.pipe(Effect.timeout("20 seconds"), Effect.ignore)))
   *   ).pipe(Effect.provide(EtcdSeqLive))
   * ```
   * @since 0.2.0
   * @category combinators
   */
  static readonly drain: Effect.Effect<void, EtcdSeqError, EtcdSeq> = Effect.flatMap(EtcdSeq, (seq) => {
    const source = Source.libraryOf(seq)
    return source === undefined
      ? Effect.fail(new InvalidOptions({ field: "EtcdSeq", reason: "drain needs a membership made by EtcdSeq.make" }))
      : Drain.drain(source)
  })

  /**
   * The group `key` seen from outside, without joining it: its view (`revision`, `members`), the index locks held and
   * waited for, the handover revisions published, the shards' planned owners and claims, and what the group waits
   * for (`waiting`, empty once it converged). The current view first, then every change. Members come from the same
   * shared watch a member of that group on the same client uses.
   *
   * Errors: `InvalidOptions` for a bad key (before any I/O) or a client not made by this library,
   * `EtcdUnavailable`, `EtcdRequestFailed` (the first read).
   *
   * @example
   * ```ts
   * import { Effect, Stream } from "effect"
   * import { Etcd, EtcdSeq } from "effect-etcdseq"
   *
   * const dashboard = EtcdSeq.observe("prod/indexer").pipe(
   *   Stream.runForEach((view) => Effect.log(view.members.map((m) => m.id).join(" "))),
   *   Effect.provide(Etcd.layerConfig())
   * )
   * ```
   * @since 0.1.0
   * @category constructors
   */
  static observe(key: string): Stream.Stream<GroupView, EtcdSeqError, Etcd> {
    return Stream.unwrapScoped(Effect.gen(function*() {
      const problem = Keys.invalidGroup(key)
      if (problem !== undefined) return yield* new InvalidOptions({ field: "key", reason: problem })
      const shared = yield* Client.required(yield* Etcd)
      return yield* Observe.observe(shared, key)
    }))
  }

  /**
   * Runs `work` for every new valid Info of the membership in context, each run in a fresh scoped fiber.
   *
   * - When the Info changes, the previous run is interrupted and its scope closed (its finalizers are the "stop")
   *   before the next starts. While the Info is invalid nothing runs. A burst of changes starts work only for the
   *   latest Info.
   * - If `work` fails, that failure (after its scope closed) is the result. If `work` completes, it is not run again
   *   until the Info changes (a self-fence and its lift count as a change: invalid, then the Info again).
   * - `exclusive` (default `"none"`): `"index"` holds the etcd lock `<key>/locks/<index>` (bound to the member's
   *   lease, waiting while another holds it) for the life of each run, so no two members run work for one index at
   *   once; `"group"` starts work of a view only after every live member has stopped work of older views, so no two
   *   members ever run work whose shares overlap. In `"group"` mode every member of the group must run
   *   `runAssigned` with `"group"`, since each waits for all the others.
   * - Self-fencing in every mode: a member that cannot renew its lease sees `Info.invalid`, which stops its work,
   *   a margin before the lease could expire at etcd.
   *
   * The effect never succeeds: it fails with the work's error, with `EtcdSeqError` when re-registration gives up,
   * or with `InvalidOptions` for an unknown `exclusive` (before anything runs), and it is interrupted when the
   * membership ends (its scope closes).
   *
   * @example
   * ```ts
   * import { Effect } from "effect"
   * import { EtcdSeq, EtcdSeqLive } from "effect-etcdseq"
   *
   * // Your consumer: it works on its shares until interrupted, stamping each write with the fence.
   * const consume = (shares: ReadonlyArray<number>, fence: number) =>
   *   Effect.log(`consuming ${shares.join(",")} under fence ${fence}`).pipe(Effect.zipRight(Effect.never))
   *
   * const worker = EtcdSeq.runAssigned((a) =>
   *   Effect.gen(function*() {
   *     yield* Effect.addFinalizer(() => Effect.log("stop consuming"))
   *     yield* consume(a.shares(64), a.fence)
   *   }), { exclusive: "group" }).pipe(Effect.provide(EtcdSeqLive))
   * ```
   * @since 0.1.0
   * @category combinators
   */
  static readonly runAssigned: {
    <E, R>(
      work: (assignment: Assignment) => Effect.Effect<void, E, R>,
      options?: RunAssignedOptions
    ): Effect.Effect<never, E | EtcdSeqError, Exclude<R, Scope.Scope> | EtcdSeq>
    (
      options: RunAssignedOptions
    ): <E, R>(
      work: (assignment: Assignment) => Effect.Effect<void, E, R>
    ) => Effect.Effect<never, E | EtcdSeqError, Exclude<R, Scope.Scope> | EtcdSeq>
  } = dual(
    (args: IArguments) => typeof args[0] === "function",
    (work: unknown, options: unknown) => runAssigned(work as never, options as RunAssignedOptions | undefined)
  )

  /**
   * Splits the group's `shards` among its live members and runs `work` for each shard this member owns, each in a
   * scoped fiber of its own, for as long as it owns it.
   *
   * - A change of the group moves only the shards whose owner changes: a shard that stays with its member keeps
   *   running, whatever happens to the member's index or count. A shard that moves is interrupted (its finalizers are
   *   the "stop") once its new owner waits for it, released, and only then started by its new owner. A dead owner's
   *   shards go with its lease.
   * - Never two running workers for one shard, under the same assumptions as `runAssigned`'s exclusive modes (see
   *   the README); the self-fencing margin applies: a member that cannot prove its lease stops all its shards.
   * - `shard.fence` grows with every acquisition of that shard, by any member: a fencing token downstream.
   * - Every member runs the group with the same `shards`. The plan is a pure function of the view: at most
   *   ⌈1.25 · shards / members⌉ per member, at least one when shards >= members.
   * - Moves without a gap (since 0.2.0): a shard that moves keeps running on its old owner until its new owner's claim
   *   waits behind the old owner's; only then is it interrupted and released, so it runs nowhere only for its stop and
   *   one watch event. A shard whose new owner is no live member stops at once, and so does every shard of a member
   *   whose Info goes invalid or whose membership ends. `maxMoves` bounds the moves at once per member, `settle`
   *   merges a burst of joins and leaves into one change; both are the group's, the same on every member.
   *
   * The work comes first (`runShards(work, { shards })`), as in `runAssigned`; `runShards({ shards })` is the same
   * data-last, and the options-first order of 0.1.0 still works, deprecated.
   *
   * The effect never succeeds: it fails with the work's error (once every shard stopped), with `InvalidOptions` for
   * a `shards` that is not an integer in 1..65,536, a `maxMoves` that is not an integer >= 1 or `Infinity`, or a
   * `settle` that is not a finite duration (before any I/O), or a membership not made by this library, with
   * `ShardCountMismatch` when the group's members run another number, with `ShardPolicyMismatch` when they run
   * another `maxMoves` or `settle` (both before anything runs), with `AlreadyRunning`
   * when the membership runs another runner; it is interrupted when the membership ends.
   *
   * @example
   * ```ts
   * import { Effect } from "effect"
   * import { EtcdSeq, EtcdSeqLive } from "effect-etcdseq"
   *
   * // Your consumer: it works on one partition until interrupted, stamping each write with the fence.
   * const consume = (partition: number, fence: number) =>
   *   Effect.log(`consuming partition ${partition} under fence ${fence}`).pipe(Effect.zipRight(Effect.never))
   *
   * const partitions = EtcdSeq.runShards((shard) =>
   *   Effect.gen(function*() {
   *     yield* Effect.addFinalizer(() => Effect.log(`stop partition ${shard.id}`))
   *     yield* consume(shard.id, shard.fence)
   *   }), { shards: 64 }).pipe(Effect.provide(EtcdSeqLive))
   *
   * // Data-last, as Effect's own combinators: the options first, the work later.
   * const runSixtyFour = EtcdSeq.runShards({ shards: 64 })
   * const logged = runSixtyFour((shard) => Effect.log(`partition ${shard.id}`).pipe(Effect.zipRight(Effect.never)))
   * ```
   * @since 0.1.0
   * @category combinators
   */
  static readonly runShards: {
    <E, R>(
      work: (shard: Shard) => Effect.Effect<void, E, R>,
      options: RunShardsOptions
    ): Effect.Effect<never, E | EtcdSeqError, Exclude<R, Scope.Scope> | EtcdSeq>
    (
      options: RunShardsOptions
    ): <E, R>(
      work: (shard: Shard) => Effect.Effect<void, E, R>
    ) => Effect.Effect<never, E | EtcdSeqError, Exclude<R, Scope.Scope> | EtcdSeq>
    /** @deprecated Pass the work first: `EtcdSeq.runShards(work, { shards })`. */
    <E, R>(
      options: RunShardsOptions,
      work: (shard: Shard) => Effect.Effect<void, E, R>
    ): Effect.Effect<never, E | EtcdSeqError, Exclude<R, Scope.Scope> | EtcdSeq>
  } = dual(
    (args: IArguments) => args.length >= 2,
    // The work first, or (deprecated) the options first.
    (a: unknown, b: unknown) =>
      typeof a === "function"
        ? runShards(a as never, b as RunShardsOptions)
        : runShards(b as never, a as RunShardsOptions)
  )
}

/**
 * A membership and its etcd client from configuration: `ETCDSEQ_KEY` (required), `ETCD_ENDPOINTS` (default
 * `http://127.0.0.1:2379`), `ETCDSEQ_TTL`, and the other variables of {@link Etcd.config} and
 * {@link EtcdSeq.config}. This is the layer behind `Effect.provide(EtcdSeqLive)`. It provides the client too
 * (`Etcd`), for the member's own requests: `FenceEtcd.commit` uses it.
 *
 * @example
 * ```ts
 * import { Effect, Stream } from "effect"
 * import { EtcdSeq, EtcdSeqLive } from "effect-etcdseq"
 *
 * // ETCDSEQ_KEY=indexer ETCD_ENDPOINTS=http://10.0.0.1:2379
 * const program = EtcdSeq.changes.pipe(Stream.runForEach((info) => Effect.log(info)), Effect.provide(EtcdSeqLive))
 * ```
 * @since 0.1.0
 * @category layers
 */
export const EtcdSeqLive: Layer.Layer<EtcdSeq | Etcd, EtcdSeqError | ConfigError> = Layer.unwrapEffect(
  // Both configurations are read, and the membership's options checked, before any I/O: a missing or bad
  // ETCDSEQ_KEY never waits on a connection.
  Effect.gen(function*() {
    const [client, membership] = yield* Config.all([Etcd.config, EtcdSeq.config])
    yield* validate(membership)
    return EtcdSeq.layer(membership).pipe(Layer.provideMerge(Etcd.layer(client)))
  })
)

// internal

const runAssigned = <E, R>(
  work: (assignment: Assignment) => Effect.Effect<void, E, R>,
  options: RunAssignedOptions | undefined
): Effect.Effect<never, E | EtcdSeqError, Exclude<R, Scope.Scope> | EtcdSeq> => {
  const exclusive = options?.exclusive ?? "none"
  if (exclusive !== "none" && exclusive !== "index" && exclusive !== "group") {
    return Effect.fail(
      new InvalidOptions({ field: "exclusive", reason: `"${String(exclusive)}" is not "none", "index" or "group"` })
    )
  }
  return Effect.flatMap(EtcdSeq, (seq) =>
    Effect.flatMap(
      Effect.suspend((): Effect.Effect<Source.Source> => {
        const source = Source.libraryOf(seq)
        return source === undefined ? Source.handMadeOf(seq) : Effect.succeed(source)
      }),
      (source) => RunAssigned.run(source, work, exclusive)
    ))
}

const runShards = <E, R>(
  work: (shard: Shard) => Effect.Effect<void, E, R>,
  options: RunShardsOptions
): Effect.Effect<never, E | EtcdSeqError, Exclude<R, Scope.Scope> | EtcdSeq> => {
  const problem = ShardOwners.invalidShards(options?.shards)
  if (problem !== undefined) return Effect.fail(new InvalidOptions({ field: "shards", reason: problem }))
  if (typeof work !== "function") {
    return Effect.fail(new InvalidOptions({ field: "work", reason: "must be a function of the shard" }))
  }
  const policy = RunShards.movePolicy(options)
  if (policy instanceof InvalidOptions) return Effect.fail(policy)
  return Effect.flatMap(EtcdSeq, (seq) => RunShards.run(Source.libraryOf(seq), options.shards, policy, work))
}

const maxMetadataBytes = 1024 * 1024

const validate = (options: EtcdSeqOptions): Effect.Effect<Settings, InvalidOptions> =>
  Effect.gen(function*() {
    const invalid = (field: string, reason: string) => Effect.fail(new InvalidOptions({ field, reason }))
    if (typeof options !== "object" || options === null) return yield* invalid("options", "must be an object")
    const key = options.key
    const keyProblem = Keys.invalidGroup(key)
    if (keyProblem !== undefined) return yield* invalid("key", keyProblem)

    const ttlInput = options.ttl ?? Duration.seconds(10)
    const ttl = Duration.decodeUnknown(ttlInput)
    if (Option.isNone(ttl)) return yield* invalid("ttl", `${String(ttlInput)} is not a duration`)
    if (!Duration.isFinite(ttl.value) || Duration.lessThan(ttl.value, Duration.seconds(1))) {
      return yield* invalid("ttl", "must be at least 1 second (etcd counts lease TTLs in seconds)")
    }
    if (Duration.greaterThan(ttl.value, Duration.hours(24))) return yield* invalid("ttl", "must be at most 24 hours")

    const metadata = options.metadata ?? ""
    if (typeof metadata !== "string") return yield* invalid("metadata", "must be a string")
    if (Buffer.byteLength(View.encodeValue(metadata)) > maxMetadataBytes) {
      return yield* invalid("metadata", "must be at most 1 MiB (etcd refuses larger requests)")
    }
    const instance = options.instance
    if (instance !== undefined) {
      const problem = Keys.invalidInstance(instance)
      if (problem !== undefined) return yield* invalid("instance", problem)
    }
    const keepPlaceOnLeave = options.keepPlaceOnLeave ?? false
    if (typeof keepPlaceOnLeave !== "boolean") return yield* invalid("keepPlaceOnLeave", "must be a boolean")
    if (keepPlaceOnLeave && instance === undefined) {
      return yield* invalid("keepPlaceOnLeave", "needs an instance: only a member with one can be taken back")
    }
    const weight = options.weight ?? 1
    const weightProblem = ShardPlan.invalidWeight(weight)
    if (weightProblem !== undefined) return yield* invalid("weight", weightProblem)
    return {
      key,
      ttl: ttl.value,
      metadata,
      instance,
      keepPlaceOnLeave,
      weight,
      reregister: options.reregister ?? Retry.reregister
    }
  })
