/**
 * One watch per client and group, shared by the members of that group on that client and feeding their view: the
 * group's members followed as a prefix cache (prefixCache.ts), folded into the pure view (view.ts).
 *
 * After a compaction-triggered re-read the view waits for its name: the client writes the rename key, and publishes
 * the view once its watch delivers that write (see `View.reread`).
 */
import { Duration, Effect, Metric, Scope, SubscriptionRef } from "effect"
import type * as Api from "./etcd/api.js"
import * as Keys from "./keys.js"
import * as Metrics from "./metrics.js"
import * as Monotonic from "./monotonic.js"
import * as OwnedKeys from "./ownedKeys.js"
import * as Pacer from "./pacer.js"
import * as PrefixCache from "./prefixCache.js"
import { backoff } from "./retry.js"
import * as View from "./view.js"

/** The rename key's lease: long enough for its put to land, short enough that nothing lingers. */
const renameLeaseSeconds = 5

/**
 * How views reach members while changes come fast (a join storm): at once after a quiet moment, then the latest once
 * per interval, which grows while changes come fast. The rules, pure: pacer.ts.
 */
export interface Pacing {
  readonly initial: Duration.Duration
  readonly max: Duration.Duration
}

/** Called with every new view, in the watch's own fiber, synchronously: it must be quick and must not throw. */
type Listener = (view: View.View) => void

export interface GroupWatch {
  readonly group: string
  readonly membersPrefix: string
  readonly view: SubscriptionRef.SubscriptionRef<View.View>
  /**
   * Calls `listener` with every new view for the life of the scope. Members listen rather than subscribe: a change
   * then costs one call per member, with no queue per member to hold views it has not read yet.
   */
  readonly listen: (listener: Listener) => Effect.Effect<void, never, Scope.Scope>
}

/** The members under `prefix` as read at `revision`; keys that are not members are logged and skipped. */
const decodeMembers = (prefix: string, kvs: ReadonlyArray<Api.KeyValue>) => {
  const entries: Array<View.Entry> = []
  const foreign: Array<string> = []
  for (const kv of kvs) {
    // A rename key left behind by a client that died between its put and its delete: not a member, no news.
    if (kv.key === prefix + Keys.renameSegment) continue
    const decoded = View.decode(prefix, kv)
    if (decoded._tag === "Member") entries.push(decoded.entry)
    else foreign.push(`${decoded.key} (${decoded.reason})`)
  }
  return { entries, foreign }
}

/**
 * Reads the group and starts its watch. The watch runs until the scope closes, through disconnections and
 * compactions; the view it feeds is what every member of the group on this client derives its Info from.
 */
export const make = (
  api: Api.EtcdApi,
  group: string,
  pacing: Pacing | undefined,
  sweep: OwnedKeys.Registry["sweep"]
): Effect.Effect<GroupWatch, Api.RequestError, Scope.Scope> =>
  Effect.gen(function*() {
    const watchScope = yield* Effect.scope
    const prefix = Keys.membersPrefix(group)
    const listeners = new Set<Listener>()
    // What members see: only views that carry the group's name for them.
    const view = yield* SubscriptionRef.make(View.empty)
    const paced = pacing === undefined
      ? undefined
      : pacer(
        { initial: Duration.toMillis(pacing.initial), max: Duration.toMillis(pacing.max) },
        deliverer(view, listeners),
        watchScope
      )
    const cache = yield* PrefixCache.follow(
      api,
      prefix,
      OwnedKeys.sweeping({
        initial: (kvs, revision) => View.fromSnapshot(decodeMembers(prefix, kvs).entries, revision),
        reread: (previous, kvs, revision) => View.reread(previous, decodeMembers(prefix, kvs).entries, revision),
        apply: (state, events) => {
          paced?.counted(events.length)
          return View.applyEvents(state, prefix, events)
        },
        seen: (state) => state.seen
      }, sweep),
      {
        span: "EtcdSeq.groupWatch",
        onChange: paced?.publish ?? deliverer(view, listeners),
        // Until the rename lands, nobody gets an Info: a failed rename is tried again with the next watch.
        beforeWatch: (state) =>
          state.awaitingName
            ? Effect.zipRight(
              Effect.logInfo("re-read group after its watch history was compacted; renaming the view"),
              rename(api, group, watchScope)
            )
            : Effect.void,
        onRead: (kvs) =>
          Effect.zipRight(Metric.increment(Metrics.groupReads), logForeign(decodeMembers(prefix, kvs).foreign)),
        onResponses: (count) => Metric.incrementBy(Metrics.watchResponses, count)
      }
    ).pipe(Effect.annotateLogs({ group }))
    yield* SubscriptionRef.set(view, cache.current())

    return {
      group,
      membersPrefix: prefix,
      view,
      listen: (listener) =>
        Effect.flatMap(Effect.scope, (scope) => {
          listeners.add(listener)
          return Scope.addFinalizer(
            scope,
            Effect.sync(() => listeners.delete(listener))
          )
        })
    }
  })

const logForeign = (foreign: ReadonlyArray<string>) =>
  foreign.length === 0 ? Effect.void : Effect.logWarning("ignoring keys that are not members", foreign)

// --- Delivery ---

/**
 * Members hear of a view when its members or its name changed: not of keys that are not members, nor of a rename
 * key's delete (the view's `seen` alone moves).
 */
const deliverer = (
  view: SubscriptionRef.SubscriptionRef<View.View>,
  listeners: ReadonlySet<Listener>
): (next: View.View) => Effect.Effect<void> =>
(next) =>
  Effect.flatMap(
    SubscriptionRef.get(view),
    (shown) =>
      next.awaitingName || (next.members === shown.members && next.revision === shown.revision)
        ? Effect.void
        : SubscriptionRef.set(view, next).pipe(
          Effect.zipRight(Effect.sync(() => {
            for (const listener of listeners) {
              listener(next)
            }
          })),
          Effect.zipRight(Effect.logDebug(`view: ${next.members.length} members at revision ${next.revision}`))
        )
  )

// --- Pacing: at once after a quiet moment, then the latest view once per interval while changes come fast ---

/** Applies the pure pacer (pacer.ts): `publish` takes every new view, `counted` the etcd events applied. */
const pacer = (
  bounds: Pacer.Bounds,
  deliver: (view: View.View) => Effect.Effect<void>,
  scope: Scope.Scope
) => {
  let state = Pacer.initial<View.View>(bounds)
  // One fiber at a time delivers: the watch's while no interval runs, this one's while it does.
  const flush = Effect.gen(function*() {
    while (state.held !== undefined) {
      yield* Effect.sleep(Duration.millis(Pacer.untilRelease(state, yield* Monotonic.millis)))
      const [next, view] = Pacer.release(bounds, state, yield* Monotonic.millis)
      state = next
      if (view !== undefined) yield* deliver(view)
    }
    state = Pacer.stop(state)
  })
  return {
    counted: (count: number): void => {
      state = Pacer.counted(state, count)
    },
    publish: (next: View.View): Effect.Effect<void> =>
      Effect.flatMap(Monotonic.millis, (now) => {
        const [after, offer] = Pacer.offer(bounds, state, next, now)
        state = after
        return offer === "Send"
          ? deliver(next)
          : offer === "StartInterval"
          ? Effect.asVoid(Effect.forkIn(flush, scope))
          : Effect.void
      })
  }
}

// --- The rename after a compaction ---

/**
 * The rename key is deleted at once: it only has to produce its event. It is written under a short lease of its
 * own, revoked after the delete: a delete that never lands (its watch closed first), or a put that lands late (a
 * request given up on a node that applied it after the delete), cannot leave it behind for longer than the lease;
 * after the revoke, a late put is refused.
 */
const rename = (api: Api.EtcdApi, group: string, scope: Scope.Scope) =>
  Effect.gen(function*() {
    const renameKey = Keys.renameKey(group)
    const lease = yield* api.grant(renameLeaseSeconds)
    yield* api.put(renameKey, "", lease)
    yield* api.delete(renameKey).pipe(
      Effect.retry(backoff),
      Effect.zipRight(api.revoke(lease)),
      Effect.ignore,
      Effect.forkIn(scope)
    )
  })
