/**
 * A lease kept alive, as a scoped resource (etcd's `concurrency.Session`).
 *
 * Acquire grants the lease and forks its keepalive; release stops the keepalive and revokes, bounded by the TTL
 * (past it the lease has expired anyway). The lease is fenced while it cannot be proved alive in time: no keepalive
 * succeeded for the TTL less a margin, measured from the send time of the last one that did. The lease may outlive
 * that moment at etcd, never the other way round, so a member that stops at the fence has stopped before any other
 * member can take its place. A fenced lease is not lost at once: keepalives go on, and one that succeeds in time
 * lifts the fence (the lease was alive at etcd all along, and its keys with it). `lost` completes when etcd says it
 * is gone, or when no keepalive lifted the fence within a TTL of it: then the lease is given up, and revoked in the
 * background (etcd may still hold it, renewed by answers too late to count).
 */
import { Deferred, Duration, Effect, ExecutionStrategy, Exit, FiberId, Metric, Schedule, Scope } from "effect"
import * as Bounded from "./bounded.js"
import type { EtcdApi, RequestError } from "./etcd/api.js"
import * as Metrics from "./metrics.js"
import * as Monotonic from "./monotonic.js"
import * as PendingIo from "./pendingIo.js"
import { backoff } from "./retry.js"

export type LostReason = "revoked or expired at etcd" | "not proved alive within a TTL of its fence"

const gaveUp: LostReason = "not proved alive within a TTL of its fence"

export interface LeaseSession {
  /** The lease id as etcd prints it on the wire (int64 decimal). */
  readonly id: string
  /** Completes with the reason once the lease is lost: etcd said it is gone, or the fence lasted a TTL. */
  readonly lost: Effect.Effect<LostReason>
  /**
   * Calls `listener` with `true` when the lease is fenced (work on it must stop) and with `false` when a keepalive
   * lifts the fence, for the life of the scope; at once with `true` if it is fenced now. A callback, as `onLost`.
   */
  readonly onFence: (listener: (fenced: boolean) => void) => Effect.Effect<void, never, Scope.Scope>
  /**
   * Calls `listener` once, when the lease is lost (at once if it already is), unless the scope closes first. A
   * callback, not a fiber per holder: a thousand members of one lease wait on it for the cost of a set entry.
   */
  readonly onLost: (listener: (reason: LostReason) => void) => Effect.Effect<void, never, Scope.Scope>
  /**
   * Says etcd refused a request for this lease as not found: it was revoked or expired, which the next keepalive
   * would find out only a third of a TTL later. The lease counts as lost at once.
   */
  readonly rejected: Effect.Effect<void>
}

/**
 * How long before a possible expiry a member fences itself: a fifth of the TTL, between 200 ms and 2 s. It leaves
 * time for work to stop (finalizers) before another member could see the lease gone.
 */
export const fencingMargin = (ttl: Duration.Duration): Duration.Duration =>
  Duration.millis(Math.min(2_000, Math.max(200, Duration.toMillis(ttl) / 5)))

/** etcd counts TTLs in whole seconds; the local watchdog keeps the exact, shorter duration. */
export const ttlSeconds = (ttl: Duration.Duration): number => Math.max(1, Math.ceil(Duration.toSeconds(ttl)))

export const make = (
  api: EtcdApi,
  ttl: Duration.Duration,
  /**
   * Runs the moment the lease is fenced or lost, before anyone hears of it: the pool drops it, so members that join
   * from then on get a lease of their own (one fenced would keep them invalid).
   */
  beforeLost: Effect.Effect<void> = Effect.void,
  /** Runs cleanup past the session's scope (the pool's `retryInBackground`): the revoke of a lease given up. */
  background?: LeasePool["retryInBackground"]
): Effect.Effect<LeaseSession, RequestError, Scope.Scope> =>
  Effect.gen(function*() {
    const lost = yield* Deferred.make<LostReason>()
    const rejected = yield* Deferred.make<LostReason>()
    const lostListeners = new Set<(reason: LostReason) => void>()
    const lease = yield* Effect.acquireRelease(
      Effect.gen(function*() {
        const grantedAt = yield* Monotonic.millis
        const id = yield* api.grant(ttlSeconds(ttl))
        return { id, grantedAt }
      }),
      ({ id }) =>
        Effect.gen(function*() {
          const reason = yield* Deferred.poll(lost)
          if (reason._tag === "Some") {
            // Gone at etcd: nothing to revoke. Given up: etcd may still hold it, with the keys of members that
            // stopped and registered again under a new lease; revoked in the background (a registration must not
            // wait on an etcd that was too slow), until a TTL has passed, after which it is gone anyway.
            if ((yield* reason.value) === gaveUp && background !== undefined) {
              yield* background(
                api.revoke(id).pipe(Bounded.timeout(Duration.min(ttl, api.requestTimeout))),
                Effect.sleep(ttl)
              )
            }
            return
          }
          yield* api.revoke(id).pipe(
            Bounded.timeout(Duration.min(ttl, api.requestTimeout)),
            Effect.catchAll((e) => Effect.logWarning("lease revoke failed; it expires after its TTL", e))
          )
        })
    ).pipe(
      // Every member of the client waits on this grant: a timeout would fail them all at once, and each would retry
      // its whole join. A grant whose answer was lost leaves a lease nobody renews, gone after the TTL. Retried
      // outside the acquisition, which is uninterruptible: a leave must not wait out the retries.
      Effect.retry({ schedule: backoff.pipe(Schedule.upTo(ttl)), while: (e) => e._tag === "EtcdUnavailable" })
    )

    let lastSentOk = lease.grantedAt
    const ttlMillis = Duration.toMillis(ttl)
    const intervalMillis = Math.max(50, ttlMillis / 6)
    // Self-fencing: the lease is fenced a margin before it could expire at etcd (whose clock starts no earlier than
    // our send), so work stopped at the fence has stopped before anyone else can take over.
    const fenceAfter = ttlMillis - Duration.toMillis(fencingMargin(ttl))

    // --- Renewal ---
    // A keepalive is due an interval after the send time of the last one that succeeded (the grant's at first), not
    // after its answer: TTL/6, not etcd's own TTL/3, so an answer has the fence less the interval (6.3 s at TTL 10 s,
    // not 4.7 s) to come back. A process starved of CPU sends late and reads late: a hundred on two cores in a join
    // storm fenced themselves at TTL/3 with their leases alive at etcd. While none has succeeded since, another
    // starts every `pulse` without waiting for those in flight (at most `maxInFlight`), and every answer moves
    // `lastSentOk` to its own attempt's send time:
    // - etcd3 sends each attempt to a host it picks anew, so a host that accepts requests but never answers (a
    //   paused or partitioned etcd member) costs one attempt: with about 19 in the window before the fence, all
    //   landing on one silent member of three is a chance of 1 in 3^19. During a leader election the attempts wait
    //   at followers and answer once a leader is elected.
    // - An etcd that answers late but answers keeps the lease: one attempt at a time would stand answers only within
    //   the fence minus the interval, and a join storm on a starved machine made etcd that slow.
    // With a single endpoint every attempt reaches the same host, so attempts start less often: under load they
    // would multiply the very requests that are slow.
    const single = api.endpoints.length === 1
    const pulse = single ? Math.max(100, ttlMillis / 10) : Math.max(50, Math.min(1_000, ttlMillis / 30))
    const maxInFlight = single ? 8 : 16
    // An answer counts while it can still keep the fence away: the first attempt after a success has the fence less
    // the interval (6.3 s at TTL 10 s), longer than the request timeout (5 s by default), and an answer a starved
    // process reads after 5.5 s would otherwise be thrown away. No longer than the attempts in flight cover, so
    // attempts stuck on a silent host do not use up the slots.
    const attemptWithin = Duration.millis(
      Math.max(
        Duration.toMillis(api.requestTimeout),
        pulse,
        Math.min(fenceAfter - intervalMillis, maxInFlight * pulse)
      )
    )
    // What the attempts since the last success came to, for the fence's warning: a silent etcd, a starved process
    // (few sent), or errors.
    let since = { sent: 0, failed: 0, lastError: "" }

    // --- The fence: raised by the watchdog, lifted by a keepalive that succeeds in time ---
    let fenced = false
    let fencedAt = 0
    const fenceListeners = new Set<(fenced: boolean) => void>()
    // Completed by every success while fenced: the watchdog waits on it rather than on a timer.
    let renewed = Deferred.unsafeMake<void>(FiberId.none)
    const setFenced = (next: boolean) => {
      fenced = next
      for (const listener of fenceListeners) listener(next)
    }
    const attempt = Effect.gen(function*() {
      const sentAt = yield* Monotonic.millis
      since.sent++
      // Not cut at the fence as it stands now: an earlier attempt's answer may move it, and this one's answer still
      // moves it further.
      const outcome = yield* Effect.either(api.keepAlive(lease.id, attemptWithin))
      if (outcome._tag === "Left") {
        since.failed++
        since.lastError = outcome.left.message
        return yield* Effect.logDebug("lease keepalive failed", outcome.left)
      }
      if (outcome.right === "gone") yield* Deferred.succeed(rejected, "revoked or expired at etcd")
      else if (sentAt > lastSentOk) {
        lastSentOk = sentAt
        since = { sent: 0, failed: 0, lastError: "" }
        if (fenced) {
          const woken = renewed
          renewed = Deferred.unsafeMake(FiberId.none)
          Deferred.unsafeDone(woken, Exit.void)
        }
      }
    })
    const keepalive: Effect.Effect<never> = Effect.gen(function*() {
      let inFlight = 0
      while (true) {
        const now = yield* Monotonic.millis
        const due = lastSentOk + intervalMillis
        // Whole milliseconds, at least one (see the watchdog).
        if (now < due) {
          yield* Effect.sleep(Duration.millis(Math.max(1, Math.ceil(due - now))))
          continue
        }
        if (inFlight < maxInFlight) {
          inFlight++
          yield* Effect.fork(Effect.ensuring(attempt, Effect.sync(() => void inFlight--)))
        }
        yield* Effect.sleep(Duration.millis(pulse))
      }
    })
    // A fence is lifted only with some time left before the next: one lifted just before it would stop the work it
    // restarted almost at once.
    const liftSlack = Math.max(pulse, fenceAfter / 8)
    const watchdog: Effect.Effect<LostReason> = Effect.gen(function*() {
      while (true) {
        const now = yield* Monotonic.millis
        const fenceAt = lastSentOk + fenceAfter
        if (fenced) {
          if (fenceAt - now >= liftSlack) {
            setFenced(false)
            yield* Effect.logWarning(
              `a keepalive proved the lease alive after ${now - fencedAt} ms fenced; its members resume in place`
            )
            continue
          }
          // Not lifted within a TTL: given up (see `make`'s release), its members register again.
          const giveUpAt = fencedAt + ttlMillis
          if (now >= giveUpAt) {
            yield* Effect.logWarning(`no keepalive lifted the fence within ${ttlMillis} ms; giving the lease up`)
            return gaveUp
          }
          yield* Effect.raceFirst(Deferred.await(renewed), Effect.sleep(Duration.millis(Math.ceil(giveUpAt - now))))
          continue
        }
        if (now >= fenceAt) {
          // After a stall the answer to a keepalive may wait in a socket behind this very timer: read it first.
          yield* PendingIo.afterPendingIo
          const checkedAt = yield* Monotonic.millis
          if (lastSentOk + fenceAfter > checkedAt) continue
          // At once after the check: an answer landing in between must not raise a fence only to lift it.
          fencedAt = checkedAt
          setFenced(true)
          yield* beforeLost
          yield* Effect.logWarning(
            `self-fencing: no keepalive succeeded for ${checkedAt - lastSentOk} ms (${since.sent} sent since, ` +
              `${since.failed} failed${since.failed > 0 ? `, the last with "${since.lastError}"` : ""}); ` +
              "work stops before the lease can expire, until a keepalive proves it alive"
          )
          yield* Metric.increment(Metrics.fences)
          continue
        }
        // Whole milliseconds, at least one: a sleep shorter than a nanosecond ends at once under the TestClock,
        // which would spin here without reaching the fence.
        yield* Effect.sleep(Duration.millis(Math.max(1, Math.ceil(fenceAt - now))))
      }
    })
    yield* Effect.raceAll([keepalive, watchdog, Deferred.await(rejected)]).pipe(
      Effect.tap(() => beforeLost),
      Effect.flatMap((reason) =>
        Effect.zipRight(
          Deferred.succeed(lost, reason),
          Effect.sync(() => {
            for (const listener of lostListeners) listener(reason)
            lostListeners.clear()
          })
        )
      ),
      Effect.forkScoped
    )

    return {
      id: lease.id,
      lost: Deferred.await(lost),
      onFence: (listener) =>
        Effect.flatMap(Effect.scope, (scope) =>
          Effect.suspend(() => {
            fenceListeners.add(listener)
            if (fenced) listener(true)
            return Scope.addFinalizer(scope, Effect.sync(() => fenceListeners.delete(listener)))
          })),
      rejected: Effect.asVoid(Deferred.succeed(rejected, "revoked or expired at etcd")),
      onLost: (listener) =>
        Effect.flatMap(Deferred.poll(lost), (done) =>
          done._tag === "Some"
            ? Effect.map(done.value, listener)
            : Effect.flatMap(Effect.scope, (scope) => {
              lostListeners.add(listener)
              return Scope.addFinalizer(scope, Effect.sync(() => lostListeners.delete(listener)))
            }))
    }
  })

/**
 * The leases of one client: one per TTL, shared by every member that uses the client with that TTL. A member is a
 * key under the lease, so a process of a thousand members grants one lease, not a thousand (etcd grants a few
 * hundred per second), and renews it with one keepalive every TTL/6. Members of one process live and die together
 * anyway: they share the connection the lease is renewed over.
 */
export interface LeasePool {
  /**
   * Holds the client's lease of this TTL for the life of the scope: granted by the first holder, revoked when the
   * last releases it. A lost lease is dropped from the pool at once, so the next `hold` grants a new one.
   */
  readonly hold: (
    ttl: Duration.Duration
  ) => Effect.Effect<LeaseSession, RequestError, Scope.Scope>
  /** A number this client never hands out twice: member ids and lock keys under a shared lease are made with it. */
  readonly unique: Effect.Effect<number>
  /** True when the pool granted `leaseId` (etcd's int64 decimal): keys under it are this client's to clean up. */
  readonly granted: (leaseId: string) => boolean
  /**
   * Retries `effect` with the library's backoff in the pool's scope, past the caller's life, until it succeeds or
   * `until` completes: cleanup that must not be dropped (a delete of keys under a lease other members keep alive).
   */
  readonly retryInBackground: (
    effect: Effect.Effect<unknown, unknown>,
    until?: Effect.Effect<unknown>
  ) => Effect.Effect<void>
}

interface PoolEntry {
  refs: number
  readonly scope: Scope.CloseableScope
  readonly session: Deferred.Deferred<LeaseSession, RequestError>
}

export const makePool = (api: EtcdApi): Effect.Effect<LeasePool, never, Scope.Scope> =>
  Effect.gen(function*() {
    // Leases live in a scope of the pool's own, made now: entries made later must not add their finalizers to the
    // caller's scope, where they would run before finalizers added earlier (a member's, which stops its work before
    // its lease may be revoked) when the client and its members share one scope.
    const poolScope = yield* Effect.scope
    const entriesScope = yield* Scope.fork(poolScope, ExecutionStrategy.sequential)
    const entries = new Map<number, PoolEntry>()
    // Every lease ever granted here: one id per grant, few per client's life.
    const grantedIds = new Set<string>()
    let counter = 0
    const drop = (key: number, entry: PoolEntry) =>
      Effect.sync(() => {
        if (entries.get(key) === entry) entries.delete(key)
      })

    const release = (key: number, entry: PoolEntry) =>
      Effect.suspend(() => {
        entry.refs--
        if (entry.refs > 0) return Effect.void
        return Effect.zipRight(drop(key, entry), Scope.close(entry.scope, Exit.void))
      })

    const create = (key: number, ttl: Duration.Duration) =>
      Effect.gen(function*() {
        const entry: PoolEntry = {
          refs: 0,
          scope: yield* Scope.fork(entriesScope, ExecutionStrategy.sequential),
          session: yield* Deferred.make<LeaseSession, RequestError>()
        }
        entries.set(key, entry)
        yield* make(api, ttl, drop(key, entry), retryInBackground).pipe(
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

    const retryInBackground: LeasePool["retryInBackground"] = (effect, until = Effect.never) =>
      Effect.raceFirst(effect.pipe(Effect.retry(backoff), Effect.ignore), Effect.asVoid(until)).pipe(
        // Called from finalizers, which run uninterruptibly: a fiber forked there would inherit that, and neither
        // the race's loser nor the pool's own release could interrupt it.
        Effect.interruptible,
        Effect.forkIn(poolScope),
        Effect.asVoid
      )

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
