/**
 * The leases of one client: one per TTL, shared by every member that uses the client with that TTL. A member is a
 * key under the lease, so a process of a thousand members grants one lease, not a thousand (etcd grants a few
 * hundred per second), and renews it with one keepalive every TTL/6. Members of one process live and die together
 * anyway: they share the connection the lease is renewed over.
 */
import { Deferred, Duration, Effect, ExecutionStrategy, Exit, Scope } from "effect"
import type { EtcdApi, RequestError } from "./etcd/api.js"
import * as Lease from "./lease.js"
import { backoff } from "./retry.js"

export interface LeasePool {
  /**
   * Holds the client's lease of this TTL for the life of the scope: granted by the first holder, revoked when the
   * last releases it. A lost lease is dropped from the pool at once, so the next `hold` grants a new one.
   */
  readonly hold: (
    ttl: Duration.Duration
  ) => Effect.Effect<Lease.LeaseSession, RequestError, Scope.Scope>
  /** A number this client never hands out twice: member ids and lock keys under a shared lease are made with it. */
  readonly unique: Effect.Effect<number>
  /** True when the pool granted `leaseId` (etcd's int64 decimal): keys under it are this client's to clean up. */
  readonly granted: (leaseId: string) => boolean
  /**
   * Retries `effect` with the library's backoff in the pool's scope, past the caller's life, until it succeeds or
   * `until` completes: cleanup that must not be dropped (a delete of keys under a lease other members keep alive).
   */
  readonly retryInBackground: Lease.RetryInBackground
}

/** One TTL's lease: its holders, its own scope, and the session once granted. */
interface Entry {
  refs: number
  readonly scope: Scope.CloseableScope
  readonly session: Deferred.Deferred<Lease.LeaseSession, RequestError>
}

/**
 * Not Effect's `RcMap`: a lease is dropped from the pool the moment it is fenced or its grant fails (the next holder
 * gets a fresh one) while its holders keep it, and holders add a bare scope finalizer (no copy of fiber refs each).
 */
export const makePool = (api: EtcdApi): Effect.Effect<LeasePool, never, Scope.Scope> =>
  Effect.gen(function*() {
    // Leases live in a scope of the pool's own, made now: entries made later must not add their finalizers to the
    // caller's scope, where they would run before finalizers added earlier (a member's, which stops its work before
    // its lease may be revoked) when the client and its members share one scope.
    const poolScope = yield* Effect.scope
    const entriesScope = yield* Scope.fork(poolScope, ExecutionStrategy.sequential)
    const entries = new Map<number, Entry>()
    // Every lease ever granted here: one id per grant, few per client's life.
    const grantedIds = new Set<string>()
    let counter = 0

    const drop = (key: number, entry: Entry) =>
      Effect.sync(() => {
        if (entries.get(key) === entry) entries.delete(key)
      })

    const release = (key: number, entry: Entry) =>
      Effect.suspend(() => {
        entry.refs--
        if (entry.refs > 0) return Effect.void
        return Effect.zipRight(drop(key, entry), Scope.close(entry.scope, Exit.void))
      })

    const retryInBackground: Lease.RetryInBackground = (effect, until = Effect.never) =>
      Effect.raceFirst(effect.pipe(Effect.retry(backoff), Effect.ignore), Effect.asVoid(until)).pipe(
        // Called from finalizers, which run uninterruptibly: a fiber forked there would inherit that, and neither
        // the race's loser nor the pool's own release could interrupt it.
        Effect.interruptible,
        Effect.forkIn(poolScope),
        Effect.asVoid
      )

    const create = (key: number, ttl: Duration.Duration) =>
      Effect.gen(function*() {
        const entry: Entry = {
          refs: 0,
          scope: yield* Scope.fork(entriesScope, ExecutionStrategy.sequential),
          session: yield* Deferred.make<Lease.LeaseSession, RequestError>()
        }
        entries.set(key, entry)
        yield* Lease.make(api, ttl, drop(key, entry), retryInBackground).pipe(
          Scope.extend(entry.scope),
          // A failed grant leaves the pool too, so the next holder tries afresh.
          Effect.tapError(() => drop(key, entry)),
          Effect.exit,
          Effect.tap((exit) => Exit.isSuccess(exit) ? Effect.sync(() => grantedIds.add(exit.value.id)) : Effect.void),
          Effect.flatMap((exit) => Deferred.done(entry.session, exit)),
          // Forked from `hold`'s uninterruptible region: the session itself must stay interruptible.
          Effect.interruptible,
          Effect.forkIn(entry.scope)
        )
        return entry
      })

    return {
      hold: (ttl) =>
        Effect.uninterruptibleMask((restore) =>
          Effect.gen(function*() {
            const key = Duration.toMillis(ttl)
            const entry = entries.get(key) ?? (yield* create(key, ttl))
            entry.refs++
            // Scope.addFinalizer, not Effect.addFinalizer: the release needs none of the holder's fiber refs, and a
            // thousand holders would each keep a copy of them.
            yield* Scope.addFinalizer(yield* Effect.scope, release(key, entry))
            return yield* restore(Deferred.await(entry.session))
          })
        ),
      unique: Effect.sync(() => counter++),
      granted: (leaseId) => grantedIds.has(leaseId),
      retryInBackground
    }
  })
