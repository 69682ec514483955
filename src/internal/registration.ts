/**
 * A member's registration: its key under the client's shared lease, for the life of a scope (Curator's
 * `PersistentNode`). It writes the key, tells the member its Info from every view its key is in, notices when the
 * membership is lost (the lease lost, or the key gone from the view), registers again with the member's schedule,
 * and deletes its keys when it ends.
 */
import {
  Deferred,
  Duration,
  Effect,
  ExecutionStrategy,
  Exit,
  Metric,
  Runtime,
  Schedule,
  Scope,
  SubscriptionRef
} from "effect"
import { EtcdUnavailable } from "../EtcdSeqError.js"
import type { EtcdSeqError } from "../EtcdSeqError.js"
import type { Info } from "../Info.js"
import type { Holder } from "./assign.js"
import type { Shared } from "./client.js"
import * as Api from "./etcd/api.js"
import * as Keys from "./keys.js"
import * as Metrics from "./metrics.js"
import * as OwnedKeys from "./ownedKeys.js"
import * as View from "./view.js"
import type { GroupWatch } from "./watch.js"

/** A membership's options, validated. */
export interface Settings {
  readonly key: string
  readonly ttl: Duration.Duration
  readonly metadata: string
  readonly reregister: Schedule.Schedule<unknown, EtcdSeqError>
}

export interface Registration {
  readonly holder: Holder
  readonly scope: Scope.CloseableScope
  /**
   * Calls `f` once with the reason the membership is lost (its lease lost, or its key gone from the view), at once
   * if it already is. A callback, not a fiber waiting per member: members of a process can be many.
   */
  readonly whenEnded: (f: (reason: string) => void) => void
  /** Stops this registration from setting the member's Info (leaving, or lost). */
  readonly retire: Effect.Effect<void>
}

export interface Deps {
  readonly shared: Shared
  readonly settings: Settings
  readonly watch: GroupWatch
  /** Every registration's scope is a child of this one. */
  readonly parent: Scope.Scope
  /** Told of the member's Info in every view its key is in. Synchronous: it runs for every member on every view. */
  readonly setInfo: (info: Info, holder: Holder) => void
}

/** One registration: returns once the shared view holds the member's key. */
export const register = (deps: Deps): Effect.Effect<Registration, Api.RequestError> =>
  Effect.gen(function*() {
    const { settings, shared, watch } = deps
    const scope = yield* Scope.fork(deps.parent, ExecutionStrategy.sequential)
    return yield* Effect.gen(function*() {
      // --- The lease, shared with the client's other members: the member itself is a key under it ---
      const lease = yield* shared.leases.hold(settings.ttl)
      const id = Keys.memberId(lease.id, yield* shared.leases.unique)
      // Known once the key is written: nothing reads it before (onView waits for the create revision).
      let holder: Holder = { id, leaseId: lease.id, createRevision: 0 }
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

      // --- The view: the member's Info while its key is in it, and the end once it is gone ---
      const onView = (view: View.View): void => {
        if (state.createRevision === undefined || state.retired) return
        const standing = View.standing(view, holder.id, state.createRevision)
        if (standing._tag === "Member") {
          deps.setInfo(standing.info, holder)
          Deferred.unsafeDone(visible, Exit.void)
        } else if (standing._tag === "Gone") {
          end("its key was deleted")
          Deferred.unsafeDone(visible, Exit.void)
        }
      }
      yield* watch.listen(onView)

      // --- The key: its delete registered first; a leave deletes it with the member's handover key ---
      const put = yield* OwnedKeys.hold(
        {
          api: shared.api,
          keys: [Keys.membersPrefix(settings.key) + holder.id, Keys.handoverKey(settings.key, holder.id)],
          retryInBackground: shared.leases.retryInBackground,
          leaseLost: lease.lost,
          deleteWithin: Duration.min(settings.ttl, shared.api.requestTimeout),
          // A lost lease took the keys with it (or will within the TTL).
          gone: () => state.leaseLost
        },
        shared.api.put(Keys.membersPrefix(settings.key) + holder.id, View.encodeValue(settings.metadata), lease.id)
      ).pipe(
        // The shared lease was revoked or expired and its keepalive has not noticed yet: drop it now, so the retry
        // gets a fresh one instead of failing against the dead one for a third of a TTL.
        Effect.tapError((e) => Api.isLeaseNotFound(e) ? lease.rejected : Effect.void)
      )
      state.createRevision = put.revision
      holder = { ...holder, createRevision: put.revision }
      // Runs before the delete: the member's own delete must not read as "key deleted, register again".
      yield* Scope.addFinalizer(scope, Effect.sync(() => void (state.retired = true)))
      // Registered once the shared view has applied the member's own join (it may have already). The put landed, so
      // the wait is bounded by the TTL, not the request timeout: a watch that is slow to attach (its stream reset off a
      // silent etcd member) must not turn a join that worked into a failure and a second put.
      onView(yield* SubscriptionRef.get(watch.view))
      const seeWithin = Duration.max(settings.ttl, shared.api.requestTimeout)
      yield* Deferred.await(visible).pipe(
        Effect.timeoutFail({
          duration: seeWithin,
          onTimeout: () => new EtcdUnavailable({ endpoints: shared.api.endpoints, timeout: seeWithin })
        })
      )
      return {
        holder,
        scope,
        whenEnded: (f) => {
          onEnded = f
          if (endedWith !== undefined) f(endedWith)
        },
        retire: Effect.sync(() => {
          state.retired = true
        })
      } satisfies Registration
    }).pipe(
      Scope.extend(scope),
      Effect.onExit((exit) => Exit.isFailure(exit) ? Scope.close(scope, exit) : Effect.void),
      Effect.withSpan("EtcdSeq.register", { attributes: { group: settings.key }, captureStackTrace: false })
    )
  })

/**
 * Registers, then keeps the member registered for the life of `deps.parent`'s owner scope: when the membership is
 * lost, `lost` runs (the member goes invalid and its work stops), the lost registration closes (its keys deleted),
 * and a new one is made with the member's schedule. `gaveUp` runs when the schedule gives up.
 */
export const keepRegistered = (
  deps: Deps,
  memberScope: Scope.Scope,
  hooks: {
    readonly lost: (reason: string) => Effect.Effect<void>
    readonly gaveUp: (error: EtcdSeqError) => Effect.Effect<void>
  }
): Effect.Effect<void, Api.RequestError> =>
  Effect.gen(function*() {
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
        yield* Metric.increment(Metrics.leaseLosses)
        yield* Effect.logWarning(`membership lost: ${reason}; registering again`)
        yield* hooks.lost(reason)
        yield* Scope.close(lost.scope, Exit.void)
        const next = yield* register(deps).pipe(
          Effect.tapError((e) => Effect.logWarning("registration failed; retrying", e)),
          Effect.retry(deps.settings.reregister)
        )
        yield* Metric.increment(Metrics.reregistrations)
        follow(next)
      }).pipe(
        Effect.catchAll((error) =>
          Effect.logError("re-registration gave up", error).pipe(Effect.zipRight(hooks.gaveUp(error)))
        )
      )
    follow(yield* register(deps))
  })
