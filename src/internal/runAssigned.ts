/**
 * The loop behind `EtcdSeq.runAssigned`: one scoped fiber of work per assignment, stopped (its scope closed) before
 * the next starts, with the exclusivity the caller asked for.
 *
 * The loop only ever waits for work to stop. Everything that talks to etcd on the way to new work (an index lock, a
 * handover wait) runs inside the new run's fiber, and the group handover's publishes run in a fiber of their own:
 * so `Info.invalid` (a self-fence, a lost lease) and the end of the membership always stop work at once, whatever
 * etcd does meanwhile.
 */
import { Effect, Equal, Fiber, Option, RcMap, type Scope, Stream } from "effect"
import { type Assignment, type Exclusive, makeAssignment } from "../Assignment.js"
import { type EtcdSeqError, InvalidOptions } from "../EtcdSeqError.js"
import { Info } from "../Info.js"
import * as Cell from "./cell.js"
import * as Handover from "./handover.js"
import * as Keys from "./keys.js"
import * as Lock from "./lock.js"
import { backoff } from "./retry.js"
import * as Runner from "./runner.js"
import { counted, type Holder, type Library, type Source } from "./source.js"

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

/** The exclusivity a run asked for, with the membership the exclusive modes need (one this library made). */
type Mode =
  | { readonly _tag: "none" }
  | { readonly _tag: "index"; readonly source: Library }
  | { readonly _tag: "group"; readonly source: Library }

export const run = <E, R>(
  source: Source,
  work: (assignment: Assignment) => Effect.Effect<void, E, R>,
  exclusive: Exclusive
): Effect.Effect<never, E | EtcdSeqError, Exclude<R, Scope.Scope>> =>
  exclusive === "none"
    ? Runner.single(source, runLoop(source, work, { _tag: "none" }))
    : source._tag === "Library"
    ? Runner.single(source, runLoop(source, work, { _tag: exclusive, source }))
    : Effect.fail(
      new InvalidOptions({
        field: "exclusive",
        reason: `"${exclusive}" needs a membership made by EtcdSeq.make (a hand-made EtcdSeq runs "none" only)`
      })
    )

const runLoop = <E, R>(
  source: Source,
  work: (assignment: Assignment) => Effect.Effect<void, E, R>,
  mode: Mode
): Effect.Effect<never, E | EtcdSeqError, Exclude<R, Scope.Scope>> =>
  Runner.supervised<E, EtcdSeqError, R | Scope.Scope>((supervise) =>
    Effect.gen(function*() {
      // The latest each time: a burst of changes leaves only the latest, so no work starts for an Info already stale.
      const next = yield* source.reader
      const count = counted(source.activeWork)
      const claim = yield* Cell.make<Claim | undefined>(undefined)
      const handover = mode._tag === "group"
        ? Option.some(yield* publishClaims(mode.source, claim, count))
        : Option.none()

      // --- One run: the lock or the handover wait, then the work ---
      const runOne = (info: Info, holder: Holder) =>
        Effect.gen(function*() {
          let fence = info.revision
          let lockKey: string | undefined
          if (mode._tag === "index") {
            const shared = mode.source.shared
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
          if (mode._tag === "group" && Option.isSome(handover)) {
            yield* Handover.awaitAll(mode.source.view, handover.value, info.revision)
          }
          yield* Effect.logDebug(`work starts for ${info.toString()} (fence ${fence})`)
          yield* work(makeAssignment(info, fence, lockKey))
        }).pipe(
          Effect.scoped,
          count,
          supervise,
          Effect.annotateLogs({ index: info.index, count: info.count })
        )

      // --- The loop: stop, then start, never waiting on etcd ---
      return yield* Effect.gen(function*() {
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
    })
  ).pipe(Effect.withSpan("EtcdSeq.runAssigned", { attributes: { group: source.group, exclusive: mode._tag } }))

/**
 * The group handover's publishes, in a fiber of their own: the handover value follows the member's claim (the view
 * its work runs under). Returns the group's handover watch, which members of a group on one client share.
 */
const publishClaims = (
  source: Library,
  claim: Cell.Cell<Claim | undefined>,
  count: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
) =>
  Effect.gen(function*() {
    const { shared } = source
    const handover = yield* RcMap.get(shared.handovers, source.group)
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
    // A newer claim (or none: the work stopped) replaces one still being retried: a publish already sent completes,
    // the retries of the stale one stop.
    yield* claim.changes.pipe(
      Stream.flatMap((wanted) => wanted === undefined ? Stream.empty : Stream.fromEffect(publish(wanted)), {
        switch: true
      }),
      Stream.runDrain,
      Effect.forkScoped
    )
    return handover
  })
