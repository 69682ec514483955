/**
 * What a scenario needs of a membership implementation (the library, or the Go original's algorithm): start a
 * member in a slot, let one leave, and read the implementation's own counters. Every member reports each Info it
 * sees to the tracker.
 */
import { Effect } from "effect"
import type { BenchError } from "../measures/etcdMetrics.js"
import type { Tracker } from "./tracker.js"

export interface MemberHandle {
  readonly slot: number
  /** Graceful leave: closes the member's scope, which revokes its lease. */
  readonly leave: Effect.Effect<void>
}

export interface Joined {
  readonly handles: ReadonlyArray<MemberHandle>
  /** Why members could not join, by slot. */
  readonly failures: ReadonlyArray<string>
}

/** Runs the joins concurrently (`concurrency` at most), collecting both outcomes. */
export const joinEach = (
  slots: ReadonlyArray<number>,
  join: (slot: number) => Effect.Effect<MemberHandle, BenchError>,
  concurrency: number | "unbounded"
): Effect.Effect<Joined> =>
  Effect.map(
    Effect.forEach(slots, (slot) => Effect.either(join(slot)), { concurrency }),
    (outcomes) => ({
      handles: outcomes.flatMap((o) => (o._tag === "Right" ? [o.right] : [])),
      failures: outcomes.flatMap((o) => (o._tag === "Left" ? [o.left.message] : []))
    })
  )

/** Client-side counters of an implementation, summed over its members. */
export interface ClientCounters {
  /** Full reads of the group (range requests over the members prefix). */
  readonly groupReads: number
  /** Watch responses handled (by the shared watch, or by every member's own watcher). */
  readonly watchResponses: number
}

export interface Driver {
  /** `library`, `library×10 clients`, `baseline`. */
  readonly name: string
  readonly group: string
  /** Prefix under which member keys live (what a raw watcher watches). */
  readonly membersPrefix: string
  readonly tracker: Tracker
  /** Starts a member in `slot`; completes once it is registered (its key written). */
  readonly join: (slot: number) => Effect.Effect<MemberHandle, BenchError>
  /**
   * Starts `slots` members at once and completes when each has joined or failed; a failed join does not stop the
   * others (each member is its own process in a real deployment).
   */
  readonly joinAll: (slots: ReadonlyArray<number>) => Effect.Effect<Joined>
  /**
   * Builds a steady group without a join storm, for an implementation whose storm does not finish within its bound,
   * so that single changes can still be measured (the baseline: every member registers, then all start following).
   */
  readonly prefill: (slots: ReadonlyArray<number>) => Effect.Effect<Joined>
  readonly counters: Effect.Effect<ClientCounters>
  /**
   * Closes every member still in the group, bounded; false when the bound passed first (members may then still be
   * running, e.g. retrying registrations, until the process ends). The clients stay open.
   */
  readonly closeAll: Effect.Effect<boolean>
}
