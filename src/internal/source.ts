/**
 * What a membership shows its runner (`runAssigned`, `runShards`): every Info with the registration behind it, and
 * how the membership ended. A membership this library made shows its client and view too, which the exclusive modes
 * and `runShards` need; one made by hand (a test double of `EtcdSeqService`) shows its `changes` only.
 */
import { Effect, Queue, type Scope, Stream, type SubscriptionRef } from "effect"
import type { EtcdSeqError } from "../EtcdSeqError.js"
import { Info } from "../Info.js"
import * as Cell from "./cell.js"
import type { Shared } from "./client.js"
import type { Declaration, View } from "./view.js"

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

/** A membership's status as its runner reads it. */
export type Latest =
  | { readonly _tag: "Info"; readonly info: Info; readonly holder: Holder | undefined }
  | { readonly _tag: "Closed" }
  | { readonly _tag: "Failed"; readonly error: EtcdSeqError }

/** Two statuses that a runner need not be told apart: the same registration, Info and view, or the same end. */
export const sameLatest = (a: Latest, b: Latest): boolean =>
  a._tag === "Info" && b._tag === "Info"
    ? a.holder === b.holder && Info.sameView(a.info, b.info)
    : a._tag === b._tag

interface Common {
  readonly group: string
  /**
   * Makes a reader of the statuses, each run of which gives the latest distinct `Latest` (those set in between are
   * skipped), waiting for one. No stream per member: a thousand members in one process each take every view.
   */
  readonly reader: Effect.Effect<Effect.Effect<Latest>, never, Scope.Scope>
  /** Work and handover publishes in flight: a leave waits for them before it deletes the member's keys. */
  readonly activeWork: Cell.Cell<number>
  /** Held by the one runner a membership may have at a time. */
  readonly runner: Effect.Semaphore
}

/** A membership this library made. */
export interface Library extends Common {
  readonly _tag: "Library"
  /** The status now. */
  readonly current: Effect.Effect<Latest>
  readonly shared: Shared
  readonly view: SubscriptionRef.SubscriptionRef<View>
  /**
   * Calls `listener` with every new view for the life of the scope (the group watch's `listen`): a declaration of
   * shards changes the plan without renaming the view, so no new status tells of it.
   */
  readonly listen: (listener: (view: View) => void) => Effect.Effect<void, never, Scope.Scope>
  /**
   * Rewrites the member's record with the number of shards it runs `runShards` with and the move policy
   * (`undefined`: without), as long as the key is still the registration's.
   */
  readonly declareShards: (holder: Holder, shards: Declaration | undefined) => Effect.Effect<void, EtcdSeqError>
  /**
   * From now on, the member drains: its drain key is written for its registration and every later one (under each
   * one's lease; a leave deletes it). Idempotent.
   */
  readonly startDraining: Effect.Effect<void>
}

/** A membership made by hand (a test double): its `changes` only, enough for `"none"`, which needs no etcd. */
export interface HandMade extends Common {
  readonly _tag: "HandMade"
}

export type Source = Library | HandMade

/**
 * Where a membership this library made keeps its source: a property under a symbol the package does not export, so
 * a hand-made `EtcdSeqService` (a plain object with the public fields) simply has none.
 */
export const SourceId: unique symbol = Symbol.for("effect-etcdseq/Source")

/** The source of a membership this library made, `undefined` for a hand-made one. */
export const libraryOf = (seq: { readonly [SourceId]?: Library | undefined }): Library | undefined => seq[SourceId]

/** Counts `effect` as work in flight: a leave waits for it before it deletes the member's keys. */
export const counted = (activeWork: Cell.Cell<number>) => <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.acquireUseRelease(
    activeWork.modify((n) => [undefined, n + 1] as const),
    () => effect,
    () => activeWork.modify((n) => [undefined, n - 1] as const)
  )

/** The holder of every Info of a hand-made membership: it has no registration to tell apart. */
const handMade: Holder = {
  id: "hand-made",
  name: "hand-made",
  leaseId: "0",
  createRevision: 0,
  leaseLost: Effect.never
}

/**
 * The source of a hand-made membership, one per runner: its stream pumped into a queue that keeps only the latest.
 * (A hand-made membership has nowhere to keep a runner's semaphore: two runners on one are not refused.)
 */
export const handMadeOf = (
  seq: { readonly group: string; readonly changes: Stream.Stream<Info, EtcdSeqError> }
): Effect.Effect<HandMade> =>
  Effect.gen(function*() {
    return {
      _tag: "HandMade",
      group: seq.group,
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
      activeWork: yield* Cell.make(0),
      runner: yield* Effect.makeSemaphore(1)
    }
  })
