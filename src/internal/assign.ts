/**
 * The loop behind `EtcdSeq.runAssigned`: one scoped fiber of work per assignment, stopped (its scope closed) before
 * the next starts, with the exclusivity the caller asked for.
 *
 * The loop only ever waits for work to stop. Everything that talks to etcd on the way to new work (an index lock, a
 * handover wait) runs inside the new run's fiber, and the group handover's publishes run in a fiber of their own:
 * so `Info.invalid` (a self-fence, a lost lease) and the end of the membership always stop work at once, whatever
 * etcd does meanwhile.
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
import { AlreadyRunning, type EtcdSeqError, InvalidOptions } from "../EtcdSeqError.js"
import { Info } from "../Info.js"
import * as Cell from "./cell.js"
import type { Shared } from "./client.js"
import * as Handover from "./handover.js"
import * as Keys from "./keys.js"
import * as Lock from "./lock.js"
import { backoff } from "./retry.js"
import type { View } from "./view.js"

/**
 * The registration an Info was obtained under: the member's id (its locks, claims and handover key are the id's), its
 * key's last segment (`name`: the id, or `@<instance>`, kept across incarnations), the lease it is bound to, its join.
 */
export interface Holder {
  readonly id: string
  readonly name: string
  readonly leaseId: string
  /** The member key's create revision. */
  readonly createRevision: number
  /** Completes once the lease is gone, and every key under it. */
  readonly leaseLost: Effect.Effect<unknown>
}

/** Two statuses that a runner need not be told apart: the same registration, Info and view, or the same end. */
export const sameLatest = (a: Latest, b: Latest): boolean =>
  a._tag === "Info" && b._tag === "Info"
    ? a.holder === b.holder && Equal.equals(a.info, b.info) && a.info.revision === b.info.revision
    : a._tag === b._tag

/** What a membership shows runAssigned: every Info with the registration behind it, and how the membership ended. */
export interface Source {
  readonly group: string
  /**
   * Makes a reader of the statuses, each run of which gives the latest distinct `Latest` (those set in between are
   * skipped), waiting for one. No stream per member: a thousand members in one process each take every view.
   */
  readonly reader: Effect.Effect<Effect.Effect<Latest>, never, Scope.Scope>
  /** The status now; absent for a membership this library did not make. */
  readonly current: Effect.Effect<Latest> | undefined
  /** Work and handover publishes in flight: a leave waits for them before it deletes the member's keys. */
  readonly activeWork: Cell.Cell<number>
  /** Held by the one runner a membership may have at a time. */
  readonly runner: Effect.Semaphore
  /** The client and the view, which the exclusive modes need; absent for a membership this library did not make. */
  readonly shared: Shared | undefined
  readonly view: SubscriptionRef.SubscriptionRef<View> | undefined
  /**
   * Calls `listener` with every new view for the life of the scope (the group watch's `listen`): a declaration of
   * shards changes the plan without renaming the view, so no new status tells of it. Absent for a membership this
   * library did not make.
   */
  readonly listen: ((listener: (view: View) => void) => Effect.Effect<void, never, Scope.Scope>) | undefined
  /**
   * Rewrites the member's record with the number of shards it runs `runShards` with (`undefined`: without), as long
   * as the key is still the registration's; absent for a membership this library did not make.
   */
  readonly declareShards:
    | ((holder: Holder, shards: number | undefined) => Effect.Effect<void, EtcdSeqError>)
    | undefined
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

/** The handover value a member wants etcd to hold: "I run no work of a view older than `revision`". */
interface Claim {
  readonly holder: Holder
  readonly revision: number
}

/** Counts `effect` as work in flight: a leave waits for it before it deletes the member's keys. */
export const counted = (activeWork: Cell.Cell<number>) => <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.acquireUseRelease(
    activeWork.modify((n) => [undefined, n + 1] as const),
    () => effect,
    () => activeWork.modify((n) => [undefined, n - 1] as const)
  )

export const run = <E, R>(
  source: Source,
  work: (assignment: Assignment) => Effect.Effect<void, E, R>,
  exclusive: Exclusive
): Effect.Effect<never, E | EtcdSeqError, Exclude<R, Scope.Scope>> =>
  exclusive !== "none" && (source.shared === undefined || source.view === undefined)
    ? Effect.fail(
      new InvalidOptions({
        field: "exclusive",
        reason: `"${exclusive}" needs a membership made by EtcdSeq.make (a hand-made EtcdSeq runs "none" only)`
      })
    )
    : source.runner.withPermitsIfAvailable(1)(runLoop(source, work, exclusive)).pipe(
      // Two runners would share one lock queue position and one handover key: each would undo the other's promises.
      Effect.flatMap(() => Effect.fail(new AlreadyRunning({ group: source.group })))
    )

const runLoop = <E, R>(
  source: Source,
  work: (assignment: Assignment) => Effect.Effect<void, E, R>,
  exclusive: Exclusive
): Effect.Effect<never, E | EtcdSeqError, Exclude<R, Scope.Scope>> =>
  Effect.gen(function*() {
    // The latest each time: a burst of changes leaves only the latest, so no work starts for an Info already stale.
    const next = yield* source.reader
    const failed = yield* Deferred.make<never, E>()
    const count = counted(source.activeWork)

    // --- Group handover: what this member publishes, in a fiber of its own ---
    // Members of a group on one client share one watch of the handover keys.
    const shared = source.shared!
    const handover = exclusive === "group"
      ? Option.some(yield* RcMap.get(shared.handovers, source.group))
      : Option.none()
    const claim = yield* Cell.make<Claim | undefined>(undefined)
    if (Option.isSome(handover)) {
      let published: Claim | undefined
      const publish = (wanted: Claim) =>
        published !== undefined && published.holder === wanted.holder && published.revision >= wanted.revision
          ? Effect.void
          : Handover.publish(shared.api, source.group, wanted.holder, wanted.revision).pipe(
            count,
            Effect.tap(() =>
              Effect.sync(() => {
                published = wanted
              })
            ),
            Effect.tapError((e) => Effect.logWarning("handover publish failed; retrying", e)),
            Effect.retry(backoff),
            Effect.ignore
          )
      // A newer claim (or none: the work stopped) replaces one still being retried: a publish already sent
      // completes, the retries of the stale one stop.
      yield* claim.changes.pipe(
        Stream.flatMap((wanted) => wanted === undefined ? Stream.empty : Stream.fromEffect(publish(wanted)), {
          switch: true
        }),
        Stream.runDrain,
        Effect.forkScoped
      )
    }

    // --- One run: the lock or the handover wait, then the work ---
    const runOne = (info: Info, holder: Holder) =>
      Effect.gen(function*() {
        let fence = info.revision
        let lockKey: string | undefined
        if (exclusive === "index") {
          const run = yield* shared.leases.unique
          const prefix = Keys.lockPrefix(source.group, info.index)
          lockKey = Keys.lockKey(prefix, holder.id, run)
          fence = yield* Lock.acquire(
            shared.api,
            prefix,
            { owner: holder.id, run, leaseId: holder.leaseId },
            shared.leases.retryInBackground,
            shared.owned,
            holder.leaseLost
          ).pipe(
            Effect.tapError((e) => Effect.logWarning(`index lock ${info.index} not taken; retrying`, e)),
            // Retried, not failed: a lost lease or an unreachable etcd resolves with the next Info.
            Effect.retry(backoff),
            Effect.orDie
          )
        }
        if (Option.isSome(handover)) yield* Handover.awaitAll(source.view!, handover.value, info.revision)
        yield* Effect.logDebug(`work starts for ${info.toString()} (fence ${fence})`)
        yield* work(makeAssignment(info, fence, lockKey))
      }).pipe(
        Effect.scoped,
        count,
        Effect.onExit((exit) =>
          Exit.isFailure(exit) && !Cause.isInterruptedOnly(exit.cause)
            ? Deferred.failCause(failed, exit.cause)
            : Effect.void
        ),
        Effect.ignore,
        Effect.annotateLogs({ index: info.index, count: info.count })
      )

    // --- The loop: stop, then start, never waiting on etcd ---
    const loop = Effect.gen(function*() {
      let running: Running | undefined
      const stop = Effect.suspend(() => running === undefined ? Effect.void : Fiber.interrupt(running.fiber)).pipe(
        Effect.zipRight(Effect.sync(() => {
          running = undefined
        }))
      )
      yield* Effect.addFinalizer(() => stop)
      while (true) {
        const latest = yield* next
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
          // Same share under a newer view: the work goes on, and in "group" mode says so, since others wait for it.
          yield* claim.set({ holder, revision: info.revision })
          continue
        }
        yield* stop
        // Only now, with the old work stopped, may the member claim the new view.
        const valid = Info.isValid(info) && holder !== undefined
        yield* claim.set(valid ? { holder, revision: info.revision } : undefined)
        if (!valid) continue
        running = { fiber: yield* Effect.forkScoped(runOne(info, holder)), info, holder }
      }
    }).pipe(Effect.scoped)

    return yield* Effect.raceFirst(loop, Deferred.await(failed))
  }).pipe(Effect.scoped, Effect.withSpan("EtcdSeq.runAssigned", { attributes: { group: source.group, exclusive } }))

/** The holder of every Info of a membership this library did not make: it has no registration to tell apart. */
const handMade: Holder = {
  id: "hand-made",
  name: "hand-made",
  leaseId: "0",
  createRevision: 0,
  leaseLost: Effect.never
}

const handMadeSources = new WeakMap<object, Source>()

/**
 * A source for a membership this library did not make (a test double): its public `changes` only, enough for
 * `"none"`, which needs no etcd.
 */
export const fromChanges = (
  seq: { readonly group: string; readonly changes: Stream.Stream<Info, EtcdSeqError> }
): Effect.Effect<Source> =>
  Effect.gen(function*() {
    const known = handMadeSources.get(seq)
    if (known !== undefined) return known
    const source: Source = {
      group: seq.group,
      // Its stream, pumped into a queue that keeps only the latest.
      reader: Effect.gen(function*() {
        const inbox = yield* Queue.sliding<Latest>(1)
        yield* seq.changes.pipe(
          Stream.map((info): Latest => ({ _tag: "Info", info, holder: Info.isValid(info) ? handMade : undefined })),
          Stream.concat(Stream.succeed<Latest>({ _tag: "Closed" })),
          Stream.catchAll((error) => Stream.succeed<Latest>({ _tag: "Failed", error })),
          Stream.runForEach((latest) => Queue.offer(inbox, latest)),
          Effect.forkScoped
        )
        return Queue.take(inbox)
      }),
      current: undefined,
      activeWork: yield* Cell.make(0),
      runner: yield* Effect.makeSemaphore(1),
      shared: undefined,
      view: undefined,
      listen: undefined,
      declareShards: undefined
    }
    handMadeSources.set(seq, source)
    return source
  })
