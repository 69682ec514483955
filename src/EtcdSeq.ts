/**
 * Membership of a group: every member gets its `(index, count)` and keeps it right while members come and go.
 *
 * @since 0.1.0
 */
import {
  Channel,
  Chunk,
  Config,
  Context,
  Deferred,
  Duration,
  Effect,
  Equal,
  ExecutionStrategy,
  Exit,
  Layer,
  Metric,
  Option,
  RcMap,
  Runtime,
  Schedule,
  Scope,
  Stream,
  SubscriptionRef
} from "effect"
import type { ConfigError } from "effect/ConfigError"
import { EtcdLeaseInvalidError } from "etcd3"
import type { Assignment, Exclusive } from "./Assignment.js"
import { Etcd, type EtcdClient } from "./Etcd.js"
import { EtcdUnavailable, InvalidOptions } from "./EtcdSeqError.js"
import type { EtcdSeqError } from "./EtcdSeqError.js"
import { Info } from "./Info.js"
import * as Assign from "./internal/assign.js"
import * as Cell from "./internal/cell.js"
import * as Keys from "./internal/keys.js"
import { request } from "./internal/request.js"
import * as Retry from "./internal/retry.js"
import * as View from "./internal/view.js"
import type { GroupWatch } from "./internal/watch.js"

/** @internal */
export const MembershipInternals: unique symbol = Symbol.for("effect-etcdseq/EtcdSeq/internals")

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
}

/**
 * A live member of the group, as `EtcdSeq.members` lists it.
 *
 * @since 0.1.0
 * @category models
 */
export interface Member {
  /**
   * The member's id, `<lease id in hex>_<number>`: its key is `<group>/members/<id>`. Members that share an `Etcd`
   * client share its lease (one per TTL), so the number tells them apart.
   */
  readonly id: string
  readonly metadata: string
  readonly index: number
  /** Revision at which the member joined (its key's create revision): the join order. */
  readonly joinRevision: number
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
   * membership is lost (and being re-registered) it is `Info.invalid`. When the membership ends (its scope
   * closed) the stream emits `Info.invalid` and completes; it fails only when re-registration gives up.
   */
  readonly changes: Stream.Stream<Info, EtcdSeqError>
  /** The member's Info now. */
  readonly current: Effect.Effect<Info>
  /** The live members of the group in index order, as this member's view holds them. */
  readonly members: Effect.Effect<ReadonlyArray<Member>>
  /** @internal */
  readonly [MembershipInternals]: Internals
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
 * import { Effect, Stream } from "effect"
 * import { EtcdSeq, EtcdSeqLive } from "effect-etcdseq"
 *
 * const program = EtcdSeq.changes.pipe(
 *   Stream.runForEach((info) => Effect.log(`I am ${info.index} of ${info.count}`))
 * )
 * Effect.runFork(program.pipe(Effect.provide(EtcdSeqLive)))
 * ```
 * @since 0.1.0
 * @category tags
 */
export class EtcdSeq extends Context.Tag("effect-etcdseq/EtcdSeq")<EtcdSeq, EtcdSeqService>() {
  /**
   * Joins the group for the life of the scope. When it returns, the member is registered and `current` holds
   * its valid Info.
   *
   * Errors: `InvalidOptions` (before any I/O), `EtcdUnavailable`, `EtcdRequestFailed`.
   *
   * @example
   * ```ts
   * const seq = yield* EtcdSeq.make({ key: "indexer", ttl: "5 seconds", metadata: "10.0.0.7:8080" })
   * const info = yield* seq.current
   * ```
   * @since 0.1.0
   * @category constructors
   */
  static make(options: EtcdSeqOptions): Effect.Effect<EtcdSeqService, EtcdSeqError, Etcd | Scope.Scope> {
    return Effect.gen(function*() {
      const settings = yield* validate(options)
      const etcd = yield* Etcd
      // The span is EtcdSeq.register's: a span around the whole make would be held by the member for its life.
      return yield* makeMember(etcd, settings)
    })
  }

  /**
   * The membership as a layer over an `Etcd` client.
   *
   * @example
   * ```ts
   * const Live = EtcdSeq.layer({ key: "indexer" }).pipe(Layer.provide(Etcd.layerConfig()))
   * ```
   * @since 0.1.0
   * @category layers
   */
  static layer(options: EtcdSeqOptions): Layer.Layer<EtcdSeq, EtcdSeqError, Etcd> {
    return Layer.scoped(EtcdSeq, EtcdSeq.make(options))
  }

  /**
   * The membership's options from configuration: `ETCDSEQ_KEY` (required), `ETCDSEQ_TTL` (a duration such as
   * `10 seconds`, optional), `ETCDSEQ_METADATA` (optional).
   *
   * @since 0.1.0
   * @category config
   */
  static readonly config: Config.Config<EtcdSeqOptions> = Config.all({
    key: Config.string("ETCDSEQ_KEY"),
    ttl: Config.option(Config.duration("ETCDSEQ_TTL")),
    metadata: Config.option(Config.string("ETCDSEQ_METADATA"))
  }).pipe(Config.map(({ key, metadata, ttl }) => ({
    key,
    ttl: Option.getOrUndefined(ttl),
    metadata: Option.getOrUndefined(metadata)
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
   * Runs `work` for every new valid Info of the membership in context, each run in a fresh scoped fiber.
   *
   * - When the Info changes, the previous run is interrupted and its scope closed (its finalizers are the "stop")
   *   before the next starts. While the Info is invalid nothing runs. A burst of changes starts work only for the
   *   latest Info.
   * - If `work` fails, that failure (after its scope closed) is the result. If `work` completes, it is not run again
   *   until the Info changes.
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
   * EtcdSeq.runAssigned((a) =>
   *   Effect.gen(function*() {
   *     yield* Effect.addFinalizer(() => Effect.log("stop consuming"))
   *     yield* consume(a.shares(64), a.fence)
   *   }), { exclusive: "group" }
   * ).pipe(Effect.provide(EtcdSeqLive))
   * ```
   * @since 0.1.0
   * @category combinators
   */
  static runAssigned<E, R>(
    work: (assignment: Assignment) => Effect.Effect<void, E, R>,
    options?: { readonly exclusive?: Exclusive | undefined }
  ): Effect.Effect<never, E | EtcdSeqError, Exclude<R, Scope.Scope> | EtcdSeq> {
    const exclusive = options?.exclusive ?? "none"
    if (exclusive !== "none" && exclusive !== "index" && exclusive !== "group") {
      return Effect.fail(
        new InvalidOptions({ field: "exclusive", reason: `"${String(exclusive)}" is not "none", "index" or "group"` })
      )
    }
    return Effect.flatMap(EtcdSeq, (seq) => Assign.run(seq[MembershipInternals], work, exclusive))
  }
}

/**
 * A membership and its etcd client from configuration: `ETCDSEQ_KEY` (required), `ETCD_ENDPOINTS` (default
 * `http://127.0.0.1:2379`), `ETCDSEQ_TTL`, and the other variables of {@link Etcd.config} and
 * {@link EtcdSeq.config}. This is the layer behind `Effect.provide(EtcdSeqLive)`.
 *
 * @example
 * ```ts
 * EtcdSeq.changes.pipe(Stream.runForEach(Effect.log), Effect.provide(EtcdSeqLive))
 * ```
 * @since 0.1.0
 * @category layers
 */
export const EtcdSeqLive: Layer.Layer<EtcdSeq, EtcdSeqError | ConfigError> = Layer.unwrapEffect(
  // Both configurations are read before any I/O, so a missing ETCDSEQ_KEY never waits on a connection.
  Effect.map(
    Config.all([Etcd.config, EtcdSeq.config]),
    ([client, membership]) => EtcdSeq.layer(membership).pipe(Layer.provide(Etcd.layer(client)))
  )
)

// internal

/** What runAssigned needs of a membership beyond its public face. */
type Internals = Assign.Source

interface Settings {
  readonly key: string
  readonly ttl: Duration.Duration
  readonly metadata: string
  readonly reregister: Schedule.Schedule<unknown, EtcdSeqError>
}

type End = { readonly _tag: "Open" } | { readonly _tag: "Closed" } | {
  readonly _tag: "Failed"
  readonly error: EtcdSeqError
}

interface Status {
  readonly info: Info
  /** The registration the Info was obtained under, while valid. */
  readonly holder: Assign.Holder | undefined
  readonly end: End
}

interface Registration {
  readonly scope: Scope.CloseableScope
  /**
   * Calls `f` once with the reason the membership is lost (its lease lost, or its key gone from the view), at once
   * if it already is. A callback, not a fiber waiting per member: members of a process can be many.
   */
  readonly whenEnded: (f: (reason: string) => void) => void
  /** Stops this registration from setting the member's Info. */
  readonly retire: Effect.Effect<void>
}

const membershipChanges = Metric.counter("etcdseq_membership_changes", {
  description: "Infos a member moved to (joins, leaves and re-registrations of any member of its group)"
})
const leaseLosses = Metric.counter("etcdseq_lease_losses", {
  description: "Memberships lost: lease expired or revoked, keepalive failing past the TTL, or key deleted"
})
const reregistrations = Metric.counter("etcdseq_reregistrations", {
  description: "Successful registrations after a lost membership"
})

const makeMember = (etcd: EtcdClient, settings: Settings) =>
  Effect.gen(function*() {
    const memberScope = yield* Effect.scope
    // Acquired first, so released last: the view outlives the member's own keys.
    const watch: GroupWatch = yield* RcMap.get(etcd.groups, settings.key)
    const status = yield* Cell.make<Status>({
      info: Info.invalid,
      holder: undefined,
      end: { _tag: "Open" }
    })
    const activeWork = yield* Cell.make(0)
    // Bounded by the TTL: past it the lease may be gone anyway, and a leave must not hang on a stuck finalizer.
    const workStopped = activeWork.changes.pipe(
      Stream.takeUntil((n) => n === 0),
      Stream.runDrain,
      Effect.timeout(settings.ttl),
      Effect.ignore
    )
    // Every registration's scope is a child of this one, made before the finalizer below is added, so a leave runs
    // that finalizer (work stops) before any registration is released (keys deleted, the lease maybe revoked): also
    // for registrations made later, after a lost membership, whose own scopes would otherwise close first.
    const registrations = yield* Scope.fork(memberScope, ExecutionStrategy.sequential)
    // Every view change is stored (runAssigned's group handover follows revisions); `changes` drops equal Infos.
    // Synchronous: the shared watch calls it for every member on every view, so it must cost next to nothing.
    const unsafeSetInfo = (info: Info, holder?: Assign.Holder): void => {
      const changed = status.unsafeModify((s): [boolean, Status] =>
        // Once ended, the membership stays invalid: a view update racing the release must not revive it.
        s.end._tag !== "Open" ||
          (Equal.equals(s.info, info) && s.info.revision === info.revision && s.holder === holder)
          ? [false, s]
          : [!Equal.equals(s.info, info), { ...s, info, holder }]
      )
      if (changed) membershipChanges.unsafeUpdate(1, [])
    }

    const register: Effect.Effect<Registration, EtcdSeqError> = Effect.gen(function*() {
      const scope = yield* Scope.fork(registrations, ExecutionStrategy.sequential)
      return yield* Effect.gen(function*() {
        // The client's lease for this TTL, shared with its other members: the member itself is a key under it.
        const lease = yield* etcd.leases.hold(settings.ttl)
        const holder: Assign.Holder = {
          id: Keys.memberId(lease.id, yield* etcd.leases.unique),
          leaseId: lease.id
        }
        const visible = yield* Deferred.make<void>()
        let endedWith: string | undefined
        let onEnded: ((reason: string) => void) | undefined
        const end = (reason: string) => {
          if (endedWith !== undefined) return
          endedWith = reason
          onEnded?.(reason)
        }
        const state = { createRevision: undefined as number | undefined, retired: false, leaseLost: false }
        yield* lease.onLost((reason) => {
          state.leaseLost = true
          end(reason)
        })
        // Told of every view: sets the member's Info while its key is in the view, and says when it is gone.
        const onView = (view: View.View): void => {
          if (state.createRevision === undefined || state.retired) return
          const standing = View.standing(view, holder.id, state.createRevision)
          if (standing._tag === "Member") {
            unsafeSetInfo(standing.info, holder)
            Deferred.unsafeDone(visible, Exit.void)
          } else if (standing._tag === "Gone") {
            end("its key was deleted")
            Deferred.unsafeDone(visible, Exit.void)
          }
        }
        yield* watch.listen(onView)
        const memberKey = watch.membersPrefix + holder.id
        // The keys this member wrote. Its lease outlives it (other members hold it), so a leave deletes them.
        const ownKeys = [memberKey, Keys.handoverKey(settings.key, holder.id)]
        const deleteOwnKeys = request(etcd, "delete", (client) =>
          client.kv.txn({
            success: ownKeys.map((key) => ({ request_delete_range: { key: Buffer.from(key) } }))
          }))
        // The leave is registered before the put, not after, and the put completes even when interrupted: under a
        // lease the client's other members keep alive, a member key left behind would be a ghost member.
        yield* Scope.addFinalizer(
          scope,
          Effect.suspend(() => {
            // Leaving: the member's own delete must not read as "key deleted, register again".
            state.retired = true
            // A lost lease took the keys with it (or will within the TTL).
            return state.leaseLost ? Effect.void : deleteOwnKeys.pipe(
              Effect.timeout(Duration.min(settings.ttl, etcd.requestTimeout)),
              Effect.catchAll((e) =>
                Effect.logWarning("leave failed; retrying in the background until it succeeds or the lease ends", e)
                  .pipe(
                    Effect.zipRight(etcd.leases.retryInBackground(deleteOwnKeys, lease.lost))
                  )
              )
            )
          })
        )
        const put = yield* request(
          etcd,
          "put",
          (client) => client.put(memberKey).value(View.encodeValue(settings.metadata)).lease(lease.id).exec(),
          // Abandoned in flight, the put could land after the leave's delete: a ghost member under a live lease.
          { completes: true }
        ).pipe(
          // The shared lease was revoked or expired and its keepalive has not noticed yet: drop it now, so the
          // retry gets a fresh one instead of failing against the dead one for a third of a TTL.
          Effect.tapError((e) =>
            e._tag === "EtcdRequestFailed" && e.cause instanceof EtcdLeaseInvalidError ? lease.rejected : Effect.void
          )
        )
        state.createRevision = Number(put.header.revision)
        // The member is registered once the shared view has applied its own join (it may have already).
        onView(yield* SubscriptionRef.get(watch.view))
        yield* Deferred.await(visible).pipe(
          Effect.timeoutFail({
            duration: etcd.requestTimeout,
            onTimeout: () => new EtcdUnavailable({ endpoints: etcd.endpoints, timeout: etcd.requestTimeout })
          })
        )
        const registration: Registration = {
          scope,
          whenEnded: (f) => {
            onEnded = f
            if (endedWith !== undefined) f(endedWith)
          },
          retire: Effect.sync(() => {
            state.retired = true
          })
        }
        return registration
      }).pipe(
        Scope.extend(scope),
        Effect.onExit((exit) => Exit.isFailure(exit) ? Scope.close(scope, exit) : Effect.void),
        Effect.withSpan("EtcdSeq.register", { attributes: { group: settings.key }, captureStackTrace: false })
      )
    })

    // Re-registration runs in a fiber forked when the membership is lost, not in one per member waiting all along.
    const runtime = yield* Effect.runtime<never>()
    const follow = (registration: Registration): void =>
      registration.whenEnded((reason) =>
        Runtime.runFork(runtime)(Effect.forkIn(reregister(registration, reason), memberScope))
      )
    const reregister = (lost: Registration, reason: string) =>
      Effect.gen(function*() {
        // Retired first, so no view update can hand the lost registration an Info again.
        yield* lost.retire
        unsafeSetInfo(Info.invalid)
        yield* Metric.increment(leaseLosses)
        yield* Effect.logWarning(`membership lost: ${reason}; registering again`)
        // As in a leave: work stops before the lost registration's keys go (its handover key says what work of
        // this member may still run) and before a new key makes the member visible again.
        yield* workStopped
        yield* Scope.close(lost.scope, Exit.void)
        const next = yield* register.pipe(
          Effect.tapError((e) => Effect.logWarning("registration failed; retrying", e)),
          Effect.retry(settings.reregister)
        )
        yield* Metric.increment(reregistrations)
        follow(next)
      }).pipe(
        Effect.catchAll((error) =>
          Effect.logError("re-registration gave up", error).pipe(
            Effect.zipRight(
              status.set({ info: Info.invalid, holder: undefined, end: { _tag: "Failed", error } })
            )
          )
        )
      )

    follow(yield* register)
    // Added last, so run first: the member hears that its membership ended, and work run by runAssigned stops
    // (bounded by the TTL), before its keys are deleted and the others can take over.
    yield* Scope.addFinalizer(
      memberScope,
      status.modify((s) =>
        [
          undefined,
          s.end._tag === "Open" ? { info: Info.invalid, holder: undefined, end: { _tag: "Closed" } } : s
        ] as const
      ).pipe(Effect.zipRight(workStopped))
    )

    // One channel of one stage per subscriber: a thousand members in one process each pay for every view, so
    // skipping stale statuses, dropping equal Infos and ending are one step, not a pipeline of streams.
    const changes: Stream.Stream<Info, EtcdSeqError> = Stream.fromChannel(Channel.unwrap(Effect.map(
      status.reader,
      (next) => {
        let last: Info | undefined
        const loop: Channel.Channel<Chunk.Chunk<Info>, unknown, EtcdSeqError, unknown, void, unknown> = Channel
          .flatMap(Channel.fromEffect(next), (s) => {
            const emit = last !== undefined && Equal.equals(last, s.info)
              ? Channel.void
              : Channel.write(Chunk.of(s.info))
            last = s.info
            return Channel.zipRight(
              emit,
              s.end._tag === "Open" ? loop : s.end._tag === "Failed" ? Channel.fail(s.end.error) : Channel.void
            )
          })
        return loop
      }
    )))

    return {
      group: settings.key,
      changes,
      current: Effect.map(status.get, (s) => s.info),
      [MembershipInternals]: {
        group: settings.key,
        connection: etcd,
        view: watch.view,
        // Built when runAssigned runs, not for every member.
        assignments: Stream.suspend(() =>
          status.changes.pipe(
            Stream.takeUntil((s) => s.end._tag !== "Open"),
            Stream.map((s): Assign.Latest =>
              s.end._tag === "Open" ? { _tag: "Info", info: s.info, holder: s.holder } : s.end
            ),
            Stream.changesWith((a, b) =>
              a._tag === "Info" && b._tag === "Info"
                ? a.holder === b.holder && Equal.equals(a.info, b.info) && a.info.revision === b.info.revision
                : a._tag === b._tag
            )
          )
        ),
        activeWork,
        runner: yield* Effect.makeSemaphore(1)
      },
      members: Effect.map(SubscriptionRef.get(watch.view), (view) =>
        view.members.map((e, index): Member => ({
          id: e.id,
          metadata: e.metadata,
          index,
          joinRevision: e.createRevision
        })))
    } satisfies EtcdSeqService
  }).pipe(Effect.annotateLogs({ group: settings.key }))

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
    return { key, ttl: ttl.value, metadata, reregister: options.reregister ?? Retry.reregister }
  })
