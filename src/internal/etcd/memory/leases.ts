/**
 * The in-memory etcd's lease table: leases whose TTL runs on Effect's `Clock` (so `TestClock.adjust` expires them);
 * an expired or revoked lease takes its keys with it, in one revision.
 */
import { Duration, Effect, Queue, type Scope } from "effect"
import type * as Api from "../api.js"
import { compareKeys, type Lease, type State } from "./state.js"
import * as Store from "./store.js"

export interface Leases {
  /** A new lease of `ttlSeconds`: its id. */
  readonly grant: (ttlSeconds: number) => string
  readonly keepAlive: (id: string) => Api.KeepAlive
  /** Ends the lease and deletes its keys; false when no such lease lives. */
  readonly end: (id: string) => boolean
  /** Wakes the expiry fiber: a lease's deadline may have moved. */
  readonly changed: () => void
  readonly now: () => number
}

/** The table over `state`, with its expiry fiber for the life of the scope, on the `Clock` in context. */
export const make = (state: State): Effect.Effect<Leases, never, Scope.Scope> =>
  Effect.gen(function*() {
    const clock = yield* Effect.clock
    const now = () => clock.unsafeCurrentTimeMillis()
    const leasesChanged = yield* Queue.sliding<void>(1)
    const changed = () => void Queue.unsafeOffer(leasesChanged, undefined)
    yield* expire(state, now, Queue.take(leasesChanged)).pipe(Effect.forkScoped)
    return {
      grant: (ttlSeconds) => {
        const id = String(state.nextLease++)
        state.leases.set(id, { id, ttlSeconds, expiresAt: now() + ttlSeconds * 1000, keys: new Set() })
        changed()
        return id
      },
      keepAlive: (id) => {
        const found = state.leases.get(id)
        if (found === undefined) return "gone"
        found.expiresAt = now() + found.ttlSeconds * 1000
        return "renewed"
      },
      end: (id) => {
        const found = state.leases.get(id)
        if (found === undefined) return false
        endLease(state, found)
        return true
      },
      changed,
      now
    }
  })

const endLease = (state: State, lease: Lease): void => {
  state.leases.delete(lease.id)
  Store.commit(state, (at, events) => {
    for (const key of [...lease.keys].sort(compareKeys)) Store.writeDelete(state, at, events, key)
  })
}

/** Ends each lease at its deadline; `woken` completes when a deadline may have moved. */
const expire = (state: State, now: () => number, woken: Effect.Effect<void>): Effect.Effect<never> =>
  Effect.gen(function*() {
    while (true) {
      const at = now()
      for (const lease of [...state.leases.values()]) if (lease.expiresAt <= at) endLease(state, lease)
      const next = Math.min(...[...state.leases.values()].map((l) => l.expiresAt))
      yield* Effect.raceFirst(
        // Whole milliseconds, at least one: the TestClock can stand at a fraction of one, and a sleep shorter than
        // a nanosecond ends at once, so the deadline would never be reached.
        Number.isFinite(next) ? Effect.sleep(Duration.millis(Math.max(1, Math.ceil(next - at)))) : Effect.never,
        woken
      )
    }
  })
