/**
 * The loop behind `EtcdSeq.runAssigned`: one scoped fiber of work per assignment, stopped (its scope closed) before
 * the next starts, with the exclusivity the caller asked for.
 */
import {
  Cause,
  Deferred,
  Effect,
  Equal,
  Exit,
  Fiber,
  Option,
  Queue,
  RcMap,
  Scope,
  Stream,
  SubscriptionRef
} from "effect"
import { type Assignment, type Exclusive, makeAssignment } from "../Assignment.js"
import type { EtcdClient } from "../Etcd.js"
import type { EtcdSeqError } from "../EtcdSeqError.js"
import { Info } from "../Info.js"
import type { Cell } from "./cell.js"
import * as Handover from "./handover.js"
import * as Lock from "./lock.js"
import { backoff } from "./request.js"
import type { View } from "./view.js"

/** The registration an Info was obtained under: the member's key name and the lease it is bound to. */
export interface Holder {
  readonly id: string
  readonly leaseId: string
}

/** What a membership shows runAssigned: every Info with the registration behind it, and how the membership ended. */
export interface Source {
  readonly group: string
  readonly connection: EtcdClient
  readonly view: SubscriptionRef.SubscriptionRef<View>
  readonly assignments: Stream.Stream<Latest>
  readonly activeWork: Cell<number>
}

export type Latest =
  | { readonly _tag: "Info"; readonly info: Info; readonly holder: Holder | undefined }
  | { readonly _tag: "Closed" }
  | { readonly _tag: "Failed"; readonly error: EtcdSeqError }

interface Running {
  readonly fiber: Fiber.RuntimeFiber<void, never>
  readonly info: Info
  readonly holder: Holder
}

export const run = <E, R>(
  source: Source,
  work: (assignment: Assignment) => Effect.Effect<void, E, R>,
  exclusive: Exclusive
): Effect.Effect<never, E | EtcdSeqError, Exclude<R, Scope.Scope>> =>
  Effect.gen(function*() {
    // Sliding by one: a burst of changes leaves only the latest, so no work starts for an Info already stale.
    const inbox = yield* Queue.sliding<Latest>(1)
    yield* source.assignments.pipe(Stream.runForEach((latest) => Queue.offer(inbox, latest)), Effect.forkScoped)
    const failed = yield* Deferred.make<never, E>()
    // Members of a group on one client share one watch of the handover keys.
    const handover = exclusive === "group"
      ? Option.some(yield* RcMap.get(source.connection.handovers, source.group))
      : Option.none()

    const publish = (holder: Holder, revision: number) =>
      Option.isNone(handover) ? Effect.void : Handover.publish(source.connection, source.group, holder, revision).pipe(
        Effect.tapError((e) => Effect.logWarning("handover publish failed; retrying", e)),
        Effect.retry(backoff)
      )

    const runOne = (info: Info, holder: Holder) =>
      Effect.gen(function*() {
        yield* Effect.acquireRelease(
          source.activeWork.modify((n) => [undefined, n + 1] as const),
          () => source.activeWork.modify((n) => [undefined, n - 1] as const)
        )
        let fence = info.revision
        if (exclusive === "index") {
          const run = yield* source.connection.leases.unique
          fence = yield* Lock.acquire(
            source.connection,
            `${source.group}/locks/${info.index}/`,
            { owner: holder.id, run, leaseId: holder.leaseId },
            source.connection.leases.retryInBackground
          ).pipe(
            Effect.tapError((e) => Effect.logWarning(`index lock ${info.index} failed; retrying`, e)),
            // Retried, not failed: a lost lease or an unreachable etcd resolves with the next Info.
            Effect.retry(backoff),
            Effect.orDie
          )
        }
        if (Option.isSome(handover)) {
          yield* publish(holder, info.revision).pipe(Effect.orDie)
          yield* Handover.awaitAll(source.view, handover.value, info.revision)
        }
        yield* Effect.logDebug(`work starts for ${info.toString()} (fence ${fence})`)
        yield* work(makeAssignment(info, fence))
      }).pipe(
        Effect.scoped,
        Effect.onExit((exit) =>
          Exit.isFailure(exit) && !Cause.isInterruptedOnly(exit.cause)
            ? Deferred.failCause(failed, exit.cause)
            : Effect.void
        ),
        Effect.ignore,
        Effect.annotateLogs({ index: info.index, count: info.count })
      )

    const loop = Effect.gen(function*() {
      let running: Running | undefined
      const stop = Effect.suspend(() => running === undefined ? Effect.void : Fiber.interrupt(running.fiber)).pipe(
        Effect.zipRight(Effect.sync(() => {
          running = undefined
        }))
      )
      yield* Effect.addFinalizer(() => stop)
      while (true) {
        const latest = yield* Queue.take(inbox)
        if (latest._tag === "Closed") {
          yield* stop
          return yield* Effect.interrupt
        }
        if (latest._tag === "Failed") {
          yield* stop
          return yield* Effect.fail(latest.error)
        }
        const { holder, info } = latest
        if (running !== undefined && holder === running.holder && Equal.equals(info, running.info)) {
          // Same share under a newer view: keep working; in "group" mode say so, since others wait for it.
          yield* publish(running.holder, info.revision).pipe(Effect.ignore)
          continue
        }
        yield* stop
        if (!Info.isValid(info) || holder === undefined) continue
        running = { fiber: yield* Effect.forkScoped(runOne(info, holder)), info, holder }
      }
    }).pipe(Effect.scoped)

    return yield* Effect.raceFirst(loop, Deferred.await(failed))
  }).pipe(Effect.scoped, Effect.withSpan("EtcdSeq.runAssigned", { attributes: { group: source.group, exclusive } }))
