/**
 * One member of a group (Curator's `GroupMember`): its registration (registration.ts) kept for the life of its scope,
 * its status (the Info, the registration behind it, how the membership ended), the `changes` its users read, and the
 * order of its leave: its work stops before its keys go.
 */
import { Channel, Chunk, Effect, Equal, ExecutionStrategy, RcMap, Scope, Stream, SubscriptionRef } from "effect"
import type { EtcdRequestFailed, EtcdSeqError, EtcdUnavailable, InstanceTaken } from "../EtcdSeqError.js"
import type { Member } from "../GroupView.js"
import { Info } from "../Info.js"
import * as Bounded from "./bounded.js"
import * as Cell from "./cell.js"
import type { Shared } from "./client.js"
import * as Api from "./etcd/api.js"
import * as Metrics from "./metrics.js"
import { membersOf } from "./observe.js"
import * as Operator from "./operator.js"
import * as Registration from "./registration.js"
import { backoff } from "./retry.js"
import * as Source from "./source.js"
import * as View from "./view.js"

type End = { readonly _tag: "Open" } | { readonly _tag: "Closed" } | {
  readonly _tag: "Failed"
  readonly error: EtcdSeqError
}

interface Status {
  readonly info: Info
  /** The registration the Info was obtained under, while valid. */
  readonly holder: Source.Holder | undefined
  readonly end: End
}

const toLatest = (s: Status): Source.Latest =>
  s.end._tag === "Open" ? { _tag: "Info", info: s.info, holder: s.holder } : s.end

/** A membership as this module makes it: `EtcdSeqService`'s fields, with the source its runners read. */
export interface Membership {
  readonly group: string
  readonly changes: Stream.Stream<Info, EtcdSeqError>
  readonly current: Effect.Effect<Info>
  readonly members: Effect.Effect<ReadonlyArray<Member>>
  readonly [Source.SourceId]: Source.Library
}

export const make = (
  shared: Shared,
  settings: Registration.Settings
): Effect.Effect<Membership, EtcdUnavailable | EtcdRequestFailed | InstanceTaken, Scope.Scope> =>
  Effect.gen(function*() {
    const memberScope = yield* Effect.scope
    // Acquired first, so released last: the view outlives the member's own keys.
    const watch = yield* RcMap.get(shared.groups, settings.key)
    const status = yield* Cell.make<Status>({ info: Info.invalid, holder: undefined, end: { _tag: "Open" } })

    // --- Work in flight: a leave or a re-registration waits for it to stop ---
    const activeWork = yield* Cell.make(0)
    const allWorkStopped = activeWork.changes.pipe(Stream.takeUntil((n) => n === 0), Stream.runDrain)
    // Bounded by the TTL: past it the lease may be gone anyway, and a leave must not hang on a stuck finalizer.
    const workStopped = allWorkStopped.pipe(Bounded.timeout(settings.ttl), Effect.ignore)

    // --- Info from the registration ---
    // Every view change is stored (runAssigned's group handover follows revisions); `changes` drops equal Infos.
    // Synchronous: the shared watch calls it for every member on every view, so it must cost next to nothing.
    const unsafeSetInfo = (info: Info, holder?: Source.Holder): void => {
      const changed = status.unsafeModify((s): [boolean, Status] =>
        // Once ended, the membership stays invalid: a view update racing the release must not revive it.
        s.end._tag !== "Open" ||
          (Info.sameView(s.info, info) && s.holder === holder)
          ? [false, s]
          : [!Equal.equals(s.info, info), { ...s, info, holder }]
      )
      if (changed) Metrics.membershipChanges.unsafeUpdate(1, [])
    }

    // Every registration's scope is a child of this one, made before the leave's finalizer below, so a leave runs
    // that finalizer (work stops) before any registration is released (keys deleted, the lease maybe revoked): also
    // for registrations made later, after a lost membership, whose own scopes would otherwise close first.
    const registrations = yield* Scope.fork(memberScope, ExecutionStrategy.sequential)
    let latest: Registration.Registration | undefined
    let leaving = false
    // The shards the member declared (runShards): a registration made later writes them in its record too.
    let declaredShards: View.Declaration | undefined
    yield* Registration.keepRegistered(
      {
        shared,
        settings,
        watch,
        parent: registrations,
        setInfo: unsafeSetInfo,
        leaving: () => leaving,
        shards: () => declaredShards
      },
      memberScope,
      {
        registered: (registration) => {
          latest = registration
        },
        // As in a leave: work stops before the lost registration's keys go (its handover key says what work of this
        // member may still run) and before a new key makes the member visible again.
        lost: () => Effect.zipRight(Effect.sync(() => unsafeSetInfo(Info.invalid)), workStopped),
        // Not bounded: the lease lives on (a newer incarnation took the key, not the lease), so the keys that say this
        // member's work may still run (its handover key, its locks and claims) must stay until that work stopped.
        taken: allWorkStopped,
        gaveUp: (error) => status.set({ info: Info.invalid, holder: undefined, end: { _tag: "Failed", error } })
      }
    )

    // --- The leave: added last, so run first ---
    // The member hears that its membership ended, and work run by runAssigned stops (bounded by the TTL), before
    // its keys are deleted and the others can take over.
    yield* Scope.addFinalizer(
      memberScope,
      Effect.sync(() => {
        leaving = true
      }).pipe(Effect.zipRight(
        status.modify((s) =>
          [
            undefined,
            s.end._tag === "Open" ? { info: Info.invalid, holder: undefined, end: { _tag: "Closed" } } : s
          ] as const
        ).pipe(Effect.zipRight(workStopped))
      ))
    )

    // --- What users read ---
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

    // --- A drain: its key written for each registration, from the first drain on ---
    let draining = false
    const keepDrainKey = Effect.gen(function*() {
      const next = yield* status.reader
      let last: Source.Holder | undefined
      while (true) {
        const s = yield* next
        if (s.end._tag !== "Open") return
        const holder = s.holder
        if (holder === undefined || holder === last) continue
        last = holder
        // A lease that is gone takes the registration with it: the next one writes its own key.
        yield* Operator.drain(shared.api, settings.key, { id: holder.id, lease: holder.leaseId }).pipe(
          Effect.retry({ schedule: backoff, times: 5, while: (e) => !Api.isLeaseNotFound(e) }),
          Effect.tapError((e) => Effect.logWarning("writing the drain key failed", e)),
          Effect.ignore
        )
      }
    }).pipe(Effect.scoped)

    const source: Source.Library = {
      _tag: "Library",
      group: settings.key,
      shared,
      view: watch.view,
      listen: watch.listen,
      reader: Effect.map(status.reader, (read) => {
        let last: Source.Latest | undefined
        const next: Effect.Effect<Source.Latest> = Effect.flatMap(read, (s) => {
          const latest = toLatest(s)
          if (last !== undefined && Source.sameLatest(last, latest)) return next
          last = latest
          return Effect.succeed(latest)
        })
        return next
      }),
      current: Effect.map(status.get, toLatest),
      activeWork,
      runner: yield* Effect.makeSemaphore(1),
      // Only while the holder's registration is the latest and its key still its own: a stale one writes nothing. A
      // registration made after an earlier declaration wrote it in its record already.
      declareShards: (holder, shards) =>
        Effect.suspend(() => {
          declaredShards = shards
          return latest === undefined || latest.holder !== holder || View.sameDeclaration(latest.declared(), shards)
            ? Effect.void
            : Effect.asVoid(latest.rewrite(shards))
        }),
      // Forked in the member's scope after its leave's finalizer, so stopped (its write done) before the leave deletes
      // the member's keys, the drain key among them.
      startDraining: Effect.suspend(() => {
        if (draining) return Effect.void
        draining = true
        return Effect.asVoid(Effect.forkIn(keepDrainKey, memberScope))
      })
    }
    const service: Membership = {
      group: settings.key,
      changes,
      current: Effect.map(status.get, (s) => s.info),
      members: Effect.map(SubscriptionRef.get(watch.view), membersOf),
      [Source.SourceId]: source
    }
    return service
  }).pipe(Effect.annotateLogs({ group: settings.key }))
