/**
 * The lease's timing rules, pure: when a keepalive is due, how long an attempt may wait for its answer, when the
 * lease is fenced, when a fence is lifted and when the lease is given up. Instants are milliseconds on the monotonic
 * clock (monotonic.ts); the fibers in lease.ts apply these rules and hold none of their own. Measurements behind the
 * numbers: docs/how-it-works.md, "Under load".
 */
import { Duration } from "effect"

/**
 * How long before a possible expiry a member fences itself: a fifth of the TTL, between 200 ms and 2 s. It leaves
 * time for work to stop (finalizers) before another member could see the lease gone.
 */
export const fencingMargin = (ttl: Duration.Duration): Duration.Duration =>
  Duration.millis(Math.min(2_000, Math.max(200, Duration.toMillis(ttl) / 5)))

/** etcd counts TTLs in whole seconds; the local watchdog keeps the exact, shorter duration. */
export const ttlSeconds = (ttl: Duration.Duration): number => Math.max(1, Math.ceil(Duration.toSeconds(ttl)))

/** The lease's timing, in milliseconds, derived once from its TTL and the client. */
export interface Timing {
  readonly ttl: number
  /** A keepalive is due this long after the send time of the last one that succeeded: TTL/6, not etcd's TTL/3. */
  readonly interval: number
  /** The fence is raised this long after the send time of the last keepalive that succeeded: the TTL less a margin. */
  readonly fenceAfter: number
  /** While no keepalive succeeded since one was due, another attempt starts every `pulse`. */
  readonly pulse: number
  /** Attempts in flight at most. */
  readonly maxInFlight: number
  /** How long an attempt waits for its answer: as long as the answer can still keep the fence away. */
  readonly attemptWithin: number
  /** A fence is lifted only with this much time left before the next one. */
  readonly liftSlack: number
}

export const timing = (options: {
  readonly ttl: Duration.Duration
  readonly requestTimeout: Duration.Duration
  readonly endpoints: number
}): Timing => {
  const ttl = Duration.toMillis(options.ttl)
  const interval = Math.max(50, ttl / 6)
  // Self-fencing: etcd's clock for the lease starts no earlier than our send, so work stopped at the fence has
  // stopped before anyone else can take over.
  const fenceAfter = ttl - Duration.toMillis(fencingMargin(options.ttl))
  // One endpoint: every attempt reaches the same host, and under load more would multiply the very requests that
  // are slow. Several: etcd3 picks a host per attempt, so frequent attempts get past a silent one.
  const single = options.endpoints === 1
  const pulse = single ? Math.max(100, ttl / 10) : Math.max(50, Math.min(1_000, ttl / 30))
  const maxInFlight = single ? 8 : 16
  // At least the request timeout; at most what the attempts in flight cover, so stuck attempts do not use up the slots.
  const attemptWithin = Math.max(
    Duration.toMillis(options.requestTimeout),
    pulse,
    Math.min(fenceAfter - interval, maxInFlight * pulse)
  )
  // One lifted just before the next fence would stop the work it restarted almost at once.
  const liftSlack = Math.max(pulse, fenceAfter / 8)
  return { ttl, interval, fenceAfter, pulse, maxInFlight, attemptWithin, liftSlack }
}

/**
 * A sleep until `millis` from now, in whole milliseconds and at least one: a sleep shorter than a nanosecond ends at
 * once under the TestClock, and a loop waiting for a deadline would spin without reaching it.
 */
const sleepFor = (millis: number): number => Math.max(1, Math.ceil(millis))

/** A keepalive answered `ok` counts when it was sent after the one that last counted. */
export const renews = (sentAt: number, lastSentOk: number): boolean => sentAt > lastSentOk

/** The instant the lease is fenced unless a keepalive succeeds first. */
export const fenceAt = (timing: Timing, lastSentOk: number): number => lastSentOk + timing.fenceAfter

// --- Renewal ---

/** What the keepalive loop does next: wait until a keepalive is due, or start one (if a slot is free) and pulse. */
export type RenewalStep =
  | { readonly _tag: "Wait"; readonly millis: number }
  | { readonly _tag: "Pulse"; readonly send: boolean; readonly millis: number }

export const renewalStep = (
  timing: Timing,
  state: { readonly now: number; readonly lastSentOk: number; readonly inFlight: number }
): RenewalStep => {
  const due = state.lastSentOk + timing.interval
  return state.now < due
    ? { _tag: "Wait", millis: sleepFor(due - state.now) }
    : { _tag: "Pulse", send: state.inFlight < timing.maxInFlight, millis: timing.pulse }
}

// --- The fence ---

/**
 * What the watchdog does next. Not fenced: sleep until the fence, or check it once the fence is reached. Fenced:
 * lift it (a keepalive moved the fence far enough), give the lease up (a TTL fenced), or wait for a renewal until
 * the give-up.
 */
export type WatchdogStep =
  | { readonly _tag: "Sleep"; readonly millis: number }
  | { readonly _tag: "FenceDue" }
  | { readonly _tag: "Lift" }
  | { readonly _tag: "GiveUp" }
  | { readonly _tag: "AwaitRenewal"; readonly millis: number }

export const watchdogStep = (
  timing: Timing,
  state: { readonly now: number; readonly lastSentOk: number; readonly fencedAt: number | undefined }
): WatchdogStep => {
  const { fencedAt, now } = state
  const fence = fenceAt(timing, state.lastSentOk)
  if (fencedAt === undefined) {
    return now >= fence ? { _tag: "FenceDue" } : { _tag: "Sleep", millis: sleepFor(fence - now) }
  }
  if (fence - now >= timing.liftSlack) return { _tag: "Lift" }
  const giveUpAt = fencedAt + timing.ttl
  return now >= giveUpAt ? { _tag: "GiveUp" } : { _tag: "AwaitRenewal", millis: Math.ceil(giveUpAt - now) }
}
