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
 *
 * The timing rules are in leaseTiming.ts; the pool that shares a lease between a client's members in leasePool.ts.
 */
import { Deferred, Duration, Effect, Exit, FiberId, Metric, Schedule, Scope } from "effect"
import * as Bounded from "./bounded.js"
import type { EtcdApi, RequestError } from "./etcd/api.js"
import * as LeaseTiming from "./leaseTiming.js"
import * as Metrics from "./metrics.js"
import * as Monotonic from "./monotonic.js"
import * as PendingIo from "./pendingIo.js"
import { backoff } from "./retry.js"

// Where client.ts finds the pool until it imports leasePool.ts itself.

type LostReason = "revoked or expired at etcd" | "not proved alive within a TTL of its fence"

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

/** Runs `effect` past the caller's scope, retried until it succeeds or `until` completes (the pool's). */
export type RetryInBackground = (
  effect: Effect.Effect<unknown, unknown>,
  until?: Effect.Effect<unknown>
) => Effect.Effect<void>

export const make = (
  api: EtcdApi,
  ttl: Duration.Duration,
  /**
   * Runs the moment the lease is fenced or lost, before anyone hears of it: the pool drops it, so members that join
   * from then on get a lease of their own (one fenced would keep them invalid).
   */
  beforeLost: Effect.Effect<void> = Effect.void,
  /** Runs cleanup past the session's scope (the pool's `retryInBackground`): the revoke of a lease given up. */
  background?: RetryInBackground
): Effect.Effect<LeaseSession, RequestError, Scope.Scope> =>
  Effect.gen(function*() {
    const lost = yield* Deferred.make<LostReason>()
    const lease = yield* grant(api, ttl, lost, background)
    const session: Session = {
      api,
      leaseId: lease.id,
      timing: LeaseTiming.timing({ ttl, requestTimeout: api.requestTimeout, endpoints: api.endpoints.length }),
      state: {
        lastSentOk: lease.grantedAt,
        since: noAttempts,
        inFlight: 0,
        fencedAt: undefined,
        renewed: Deferred.unsafeMake(FiberId.none)
      },
      rejected: yield* Deferred.make<LostReason>(),
      beforeLost,
      fenceListeners: new Set(),
      lostListeners: new Set()
    }
    yield* Effect.raceAll([renewal(session), watchdog(session), Deferred.await(session.rejected)]).pipe(
      Effect.tap(() => beforeLost),
      Effect.flatMap((reason) =>
        Effect.zipRight(
          Deferred.succeed(lost, reason),
          Effect.sync(() => {
            for (const listener of session.lostListeners) listener(reason)
            session.lostListeners.clear()
          })
        )
      ),
      Effect.forkScoped
    )
    return sessionOf(session, lost)
  })

// --- State ---

/** What the attempts since the last success came to, for the fence's warning: a silent etcd, a starved process. */
interface Attempts {
  readonly sent: number
  readonly failed: number
  readonly lastError: string
}

const noAttempts: Attempts = { sent: 0, failed: 0, lastError: "" }

/** The one mutable record the keepalive answers and the watchdog share. Instants on the monotonic clock. */
interface State {
  /** The send time of the last keepalive that succeeded (the grant's at first): renewal and fence count from it. */
  lastSentOk: number
  since: Attempts
  inFlight: number
  /** When the fence was raised; undefined while the lease is not fenced. */
  fencedAt: number | undefined
  /** Completed by every success while fenced: the watchdog waits on it rather than on a timer. */
  renewed: Deferred.Deferred<void>
}

interface Session {
  readonly api: EtcdApi
  readonly leaseId: string
  readonly timing: LeaseTiming.Timing
  readonly state: State
  readonly rejected: Deferred.Deferred<LostReason>
  readonly beforeLost: Effect.Effect<void>
  readonly fenceListeners: Set<(fenced: boolean) => void>
  readonly lostListeners: Set<(reason: LostReason) => void>
}

// --- Grant and revoke ---

const grant = (
  api: EtcdApi,
  ttl: Duration.Duration,
  lost: Deferred.Deferred<LostReason>,
  background: RetryInBackground | undefined
) =>
  Effect.acquireRelease(
    Effect.gen(function*() {
      const grantedAt = yield* Monotonic.millis
      const id = yield* api.grant(LeaseTiming.ttlSeconds(ttl))
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

// --- Renewal: attempts overlap while none succeeds, and each answer counts from its own send time ---

const attempt = (session: Session) =>
  Effect.gen(function*() {
    const { state } = session
    const sentAt = yield* Monotonic.millis
    state.since = { ...state.since, sent: state.since.sent + 1 }
    // Not cut at the fence as it stands now: an earlier attempt's answer may move it, and this one's answer still
    // moves it further.
    const outcome = yield* Effect.either(
      session.api.keepAlive(session.leaseId, Duration.millis(session.timing.attemptWithin))
    )
    if (outcome._tag === "Left") {
      state.since = { ...state.since, failed: state.since.failed + 1, lastError: outcome.left.message }
      return yield* Effect.logDebug("lease keepalive failed", outcome.left)
    }
    if (outcome.right === "gone") yield* Deferred.succeed(session.rejected, "revoked or expired at etcd")
    else if (LeaseTiming.renews(sentAt, state.lastSentOk)) {
      state.lastSentOk = sentAt
      state.since = noAttempts
      if (state.fencedAt !== undefined) {
        const woken = state.renewed
        state.renewed = Deferred.unsafeMake(FiberId.none)
        Deferred.unsafeDone(woken, Exit.void)
      }
    }
  })

const renewal = (session: Session): Effect.Effect<never> =>
  Effect.gen(function*() {
    const { state } = session
    while (true) {
      const step = LeaseTiming.renewalStep(session.timing, { ...state, now: yield* Monotonic.millis })
      if (step._tag === "Pulse" && step.send) {
        state.inFlight++
        yield* Effect.fork(Effect.ensuring(attempt(session), Effect.sync(() => void state.inFlight--)))
      }
      yield* Effect.sleep(Duration.millis(step.millis))
    }
  })

// --- The fence: raised by the watchdog, lifted by a keepalive that succeeds in time ---

const setFenced = (session: Session, fencedAt: number | undefined) => {
  session.state.fencedAt = fencedAt
  for (const listener of session.fenceListeners) listener(fencedAt !== undefined)
}

const watchdog = (session: Session): Effect.Effect<LostReason> =>
  Effect.gen(function*() {
    const { state, timing } = session
    while (true) {
      const now = yield* Monotonic.millis
      const step = LeaseTiming.watchdogStep(timing, { ...state, now })
      switch (step._tag) {
        case "Sleep": {
          yield* Effect.sleep(Duration.millis(step.millis))
          break
        }
        case "FenceDue": {
          // After a stall the answer to a keepalive may wait in a socket behind this very timer: read it first.
          yield* PendingIo.afterPendingIo
          const checkedAt = yield* Monotonic.millis
          if (LeaseTiming.watchdogStep(timing, { ...state, now: checkedAt })._tag !== "FenceDue") break
          // At once after the check: an answer landing in between must not raise a fence only to lift it.
          setFenced(session, checkedAt)
          yield* session.beforeLost
          const { since } = state
          yield* Effect.logWarning(
            `self-fencing: no keepalive succeeded for ${checkedAt - state.lastSentOk} ms (${since.sent} sent since, ` +
              `${since.failed} failed${since.failed > 0 ? `, the last with "${since.lastError}"` : ""}); ` +
              "work stops before the lease can expire, until a keepalive proves it alive"
          )
          yield* Metric.increment(Metrics.fences)
          break
        }
        case "Lift": {
          const fencedFor = now - state.fencedAt!
          setFenced(session, undefined)
          yield* Effect.logWarning(
            `a keepalive proved the lease alive after ${fencedFor} ms fenced; its members resume in place`
          )
          break
        }
        case "GiveUp": {
          // Given up (see `grant`'s release): its members register again.
          yield* Effect.logWarning(`no keepalive lifted the fence within ${timing.ttl} ms; giving the lease up`)
          return gaveUp
        }
        case "AwaitRenewal": {
          yield* Effect.raceFirst(Deferred.await(state.renewed), Effect.sleep(Duration.millis(step.millis)))
          break
        }
      }
    }
  })

// --- The session as its holders see it ---

const sessionOf = (session: Session, lost: Deferred.Deferred<LostReason>): LeaseSession => ({
  id: session.leaseId,
  lost: Deferred.await(lost),
  onFence: (listener) =>
    Effect.flatMap(Effect.scope, (scope) =>
      Effect.suspend(() => {
        session.fenceListeners.add(listener)
        if (session.state.fencedAt !== undefined) listener(true)
        return Scope.addFinalizer(scope, Effect.sync(() => session.fenceListeners.delete(listener)))
      })),
  rejected: Effect.asVoid(Deferred.succeed(session.rejected, "revoked or expired at etcd")),
  onLost: (listener) =>
    Effect.flatMap(Deferred.poll(lost), (done) =>
      done._tag === "Some"
        ? Effect.map(done.value, listener)
        : Effect.flatMap(Effect.scope, (scope) => {
          session.lostListeners.add(listener)
          return Scope.addFinalizer(scope, Effect.sync(() => session.lostListeners.delete(listener)))
        }))
})
