/**
 * One watch per client and group, shared by the members of that group on that client and feeding their view.
 *
 * The group is read once; a watch then resumes from the read's revision + 1, so no change is missed, and each
 * watch response updates the view incrementally. A watch that ends (connection lost) resumes from the last
 * revision the view applied; a watch etcd cancels (its start revision was compacted) re-reads the group first.
 *
 * A watch etcd refuses, or one left unattached, makes the client's watch stream start over with a fresh auth token
 * (see {@link resetWatchStream}): etcd3 cannot recover from either by itself.
 */
import { Data, Duration, Effect, Exit, Mailbox, Metric, Option, Runtime, Scope, Stream, SubscriptionRef } from "effect"
import type { Etcd3, IKeyValue, IWatchResponse, Watcher } from "etcd3"
import type { EtcdRequestFailed, EtcdUnavailable } from "../EtcdSeqError.js"
import { backoff, type Connection, request } from "./request.js"
import * as View from "./view.js"

/** Called with every new view, in the watch's own fiber, synchronously: it must be quick and must not throw. */
export type Listener = (view: View.View) => void

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

/** The prefix under which a group's member keys live. */
export const membersPrefix = (group: string): string => `${group}/members/`

class WatchEnded extends Data.TaggedError("WatchEnded")<{
  /** etcd cancelled the watch (compacted start revision, or another server-side cancel): re-read. */
  readonly canceled: boolean
  /** The watch had been established before it ended, so resuming at once is reasonable. */
  readonly wasConnected: boolean
  readonly cause: unknown
}> {}

const toRaw = (kv: IKeyValue): View.RawKeyValue => ({
  key: kv.key.toString(),
  value: kv.value.toString(),
  lease: kv.lease,
  createRevision: Number(kv.create_revision),
  modRevision: Number(kv.mod_revision)
})

const toEvents = (response: IWatchResponse): ReadonlyArray<View.RawEvent> =>
  response.events.map((event) =>
    event.type === "Put"
      ? { _tag: "Put", kv: toRaw(event.kv) }
      : { _tag: "Delete", key: event.kv.key.toString(), modRevision: Number(event.kv.mod_revision) }
  )

/**
 * The parts of etcd3 1.1.2's `WatchManager` (lib/watch.js) and `ConnectionPool` (lib/connection-pool.js) that
 * {@link resetWatchStream} uses. None is public: each is checked before use, and missing ones make the reset a no-op.
 */
interface EtcdInternals {
  readonly watchManager?: {
    /** 0 idle, 1 connecting, 2 connected. */
    readonly state?: number
    /** The gRPC watch stream, while connected. */
    readonly stream?: { readonly cancel?: () => void }
    /** The `AttachQueue` of the stream: watchers whose create request is in flight (the first) or not sent yet. */
    readonly queue?: { readonly queue?: ReadonlyArray<unknown> }
  }
  readonly pool?: { readonly authenticator?: { readonly invalidateMetadata?: () => void } }
}

const connectedState = 2

/** Streams already reset: many watches noticing one wedged stream reset it once. */
const resetStreams = new WeakSet<object>()

/**
 * Starts the client's watch stream over with a fresh auth token, when etcd3 would never recover it by itself.
 *
 * etcd3 runs every watch of a client on one gRPC stream (its `WatchManager`), and sends the client's auth token once,
 * in the metadata of the call that opens that stream; etcd checks it on every watch created on the stream. A simple
 * token dies `--auth-token-ttl` (default 5 min) after its last unary request, and every one dies with an etcd
 * restart; etcd3 fetches a new one only when a unary request is refused for it (`ConnectionPool.exec`), and never
 * for a stream already open, nor for the one it reopens after a disconnection (the cached token is reused). From then
 * on, etcd refuses each watch created on the stream ("created" and "canceled" in one response, `invalid auth token`
 * or `permission denied`). etcd3's `WatchManager.handleCreatedResponse` hands that refusal to a pending watcher as its
 * `error`, but does not move the stream's `AttachQueue` on: the refused watcher stays first in the queue and the queue
 * "attaching", so no later watch is ever sent to etcd, and `cancel()` of such a watcher waits forever. Watches
 * created before the token died keep working, since etcd checks the token only at creation.
 *
 * Cancelling the stream is the path etcd3 itself takes when a stream fails: `handleError` drops the queue, tells
 * every watcher "disconnected", and opens a new stream after its backoff (at once when a new watcher comes), with
 * the token `Authenticator.getMetadata` gives; invalidating the cached one first makes that a fresh login. Every
 * watch of the library then resumes from the last revision it applied (or re-reads), so no change is missed; an
 * application's own watchers on the client are re-attached by etcd3 from their last revision.
 *
 * Returns whether it reset: not when the stream is not connected (etcd3 is opening one already, with the token
 * invalidated by an earlier reset if there was one) or was reset already.
 */
export const resetWatchStream = (client: Etcd3): boolean => {
  const internals = client as unknown as EtcdInternals
  const manager = internals.watchManager
  const stream = manager?.stream
  if (manager?.state !== connectedState || stream === undefined || resetStreams.has(stream)) return false
  resetStreams.add(stream)
  internals.pool?.authenticator?.invalidateMetadata?.()
  stream.cancel?.()
  return true
}

/**
 * What the stream is attaching now: the first watcher of the current `AttachQueue`. The same pair for a whole bound
 * means etcd3 sent no create request, or got no answer to one, for that long.
 */
const attaching = (client: Etcd3): { readonly queue: object; readonly first: unknown } | undefined => {
  const manager = (client as unknown as EtcdInternals).watchManager
  const queue = manager?.queue
  return manager?.state === connectedState && queue?.queue !== undefined && queue.queue.length > 0
    ? { queue, first: queue.queue[0] }
    : undefined
}

/**
 * The watch responses for keys under `prefix` from `startRevision`, in a mailbox that ends with a `WatchEnded`
 * item, then is done. The mailbox is unbounded and can be drained whole: responses that arrived while the consumer
 * was busy are taken at once, with no fiber per response. Every listener is removed and the watcher cancelled when
 * the scope closes.
 *
 * A watch etcd refuses (a dead auth token) resets the client's watch stream at once (see {@link resetWatchStream});
 * so does a watch not attached after half the request timeout while the stream attached nothing else meanwhile (a
 * watch of someone else's was refused ahead of it). Either way the mailbox then ends, and its consumer starts a new
 * watch on the new stream, as after any disconnection.
 */
export const watchMailbox = (
  connection: Connection,
  prefix: string,
  startRevision: number
): Effect.Effect<Mailbox.ReadonlyMailbox<IWatchResponse | WatchEnded>, never, Scope.Scope> =>
  Effect.gen(function*() {
    const mailbox = yield* Effect.acquireRelease(Mailbox.make<IWatchResponse | WatchEnded>(), (m) => m.shutdown)
    const end = (ended: WatchEnded) => {
      mailbox.unsafeOffer(ended)
      mailbox.unsafeDone(Exit.void)
    }
    const runFork = Runtime.runFork(yield* Effect.runtime<never>())
    const reset = (why: string) => {
      if (resetWatchStream(connection.client)) {
        runFork(Effect.logWarning(`${why}; opening the client's watch stream again, with a fresh auth token`))
      }
    }
    const { state } = yield* Effect.acquireRelease(
      Effect.sync(() => {
        // `attached`: on the current stream (etcd3 re-attaches a watcher after a disconnection until it is cancelled).
        const state = { wasConnected: false, attached: false, canceled: false }
        const watcher: Watcher = connection.client.watch().prefix(prefix).startRevision(String(startRevision))
          .watcher()
        const listeners = {
          connected: () => {
            state.wasConnected = true
            state.attached = true
          },
          data: (response: IWatchResponse) => void mailbox.unsafeOffer(response),
          disconnected: (cause: unknown) => {
            state.attached = false
            end(new WatchEnded({ canceled: false, wasConnected: state.wasConnected, cause }))
          },
          error: (cause: unknown) => {
            state.canceled = true
            // Refused at creation: etcd3's attach queue is stuck behind this watcher (see resetWatchStream).
            if (!state.attached) reset(`etcd refused a watch (${String(cause)})`)
            end(new WatchEnded({ canceled: true, wasConnected: state.wasConnected, cause }))
          }
        }
        for (const [event, listener] of Object.entries(listeners)) watcher.on(event as "data", listener)
        return { watcher, listeners, state }
      }),
      ({ listeners, state, watcher }) =>
        Effect.gen(function*() {
          for (const [event, listener] of Object.entries(listeners)) watcher.removeListener(event, listener)
          // A watch etcd cancelled is already detached; cancelling it again would wait for an answer never sent.
          if (state.canceled) return
          // A late server-side cancel must not surface as an unhandled "error" event.
          const ignore = () => {}
          watcher.on("error", ignore)
          yield* Effect.promise(() => watcher.cancel()).pipe(
            Effect.interruptible,
            Effect.timeout(connection.requestTimeout),
            Effect.ignore,
            Effect.ensuring(Effect.sync(() => watcher.removeListener("error", ignore)))
          )
        })
    )
    // Until the watch is attached: a stream that attaches nothing for a whole bound is stuck (see attaching). A healthy
    // one answers each create within a round trip, so a long queue of creates still moves on and is left alone.
    const bound = Duration.toMillis(connection.requestTimeout) / 2
    yield* Effect.gen(function*() {
      let before = attaching(connection.client)
      while (!state.wasConnected && !state.canceled) {
        yield* Effect.sleep(bound)
        if (state.wasConnected || state.canceled) return
        const now = attaching(connection.client)
        if (now !== undefined && before !== undefined && now.queue === before.queue && now.first === before.first) {
          reset(`a watch was not attached within ${bound} ms`)
        }
        before = now
      }
    }).pipe(Effect.forkScoped)
    return mailbox
  })

/** {@link watchMailbox} as a stream that always ends by failing with `WatchEnded`. */
export const watchPrefix = (
  connection: Connection,
  prefix: string,
  startRevision: number
): Stream.Stream<IWatchResponse, WatchEnded> =>
  Stream.unwrapScoped(Effect.map(watchMailbox(connection, prefix, startRevision), Mailbox.toStream)).pipe(
    Stream.mapEffect((item) => item instanceof WatchEnded ? Effect.fail(item) : Effect.succeed(item))
  )

/** Lets the event loop run once: I/O that is already due is delivered before the caller goes on. */
const yieldToEventLoop: Effect.Effect<void> = Effect.async<void>((resume) => {
  const handle = setImmediate(() => resume(Effect.void))
  return Effect.sync(() => clearImmediate(handle))
})

/** Reads the whole group once: the starting point of a watch, and the recovery after a compaction. */
export const readGroup = (
  connection: Connection,
  prefix: string
): Effect.Effect<View.View, EtcdUnavailable | EtcdRequestFailed> =>
  request(connection, "range", (client) => client.getAll().prefix(prefix).exec()).pipe(
    Effect.tap(() => Metric.increment(groupReads)),
    Effect.flatMap((response) => {
      const entries: Array<View.Entry> = []
      const foreign: Array<string> = []
      for (const kv of response.kvs) {
        const decoded = View.decode(prefix, toRaw(kv))
        if (decoded._tag === "Member") entries.push(decoded.entry)
        else foreign.push(`${decoded.key} (${decoded.reason})`)
      }
      return Effect.as(
        foreign.length === 0 ? Effect.void : Effect.logWarning("ignoring keys that are not members", foreign),
        View.fromSnapshot(entries, Number(response.header.revision))
      )
    })
  )

export const groupReads = Metric.counter("etcdseq_group_reads", {
  description: "Full reads of a group's members (start of a shared watch, or recovery after compaction)"
})
export const watchResponses = Metric.counter("etcdseq_watch_responses", {
  description: "Watch responses applied to shared views"
})

/**
 * Reads the group and starts its watch. The watch runs until the scope closes, through disconnections and
 * compactions; the view it feeds is what every member of the group on this client derives its Info from.
 */
export const make = (
  connection: Connection,
  group: string
): Effect.Effect<GroupWatch, EtcdUnavailable | EtcdRequestFailed, Scope.Scope> =>
  Effect.gen(function*() {
    const prefix = membersPrefix(group)
    const view = yield* SubscriptionRef.make(yield* readGroup(connection, prefix))
    const listeners = new Set<Listener>()
    const publish = (next: View.View) =>
      SubscriptionRef.set(view, next).pipe(
        Effect.zipRight(Effect.sync(() => {
          for (const listener of listeners) listener(next)
        })),
        Effect.zipRight(Effect.logDebug(`view: ${next.members.length} members at revision ${next.revision}`))
      )

    const reread = Effect.gen(function*() {
      const fresh = yield* readGroup(connection, prefix)
      const old = yield* SubscriptionRef.get(view)
      // Same members: keep the name the group already uses for this view.
      const same = old.members.length === fresh.members.length &&
        old.members.every((e, i) => e.id === fresh.members[i]!.id)
      yield* publish(same ? { ...fresh, revision: old.revision } : fresh)
      yield* Effect.logInfo("re-read group after its watch was cancelled")
    })

    const session = Effect.gen(function*() {
      const from = (yield* SubscriptionRef.get(view)).seen + 1
      const mailbox = yield* watchMailbox(connection, prefix, from)
      while (true) {
        const current = yield* SubscriptionRef.get(view)
        let next = current
        let applied = 0
        let ended: WatchEnded | undefined
        const apply = (items: Iterable<IWatchResponse | WatchEnded>) => {
          for (const item of items) {
            if (item instanceof WatchEnded) ended = item
            else if (ended === undefined) {
              next = View.applyEvents(next, prefix, toEvents(item))
              applied++
            }
          }
        }
        apply((yield* mailbox.takeAll)[0])
        // Responses that reach the event loop meanwhile join this view: every member is told of each view, so a
        // storm of a thousand joins must make a few views, not a thousand. Idle, this costs one loop turn.
        if (ended === undefined) {
          yield* yieldToEventLoop
          if (Option.getOrElse(mailbox.unsafeSize(), () => 0) > 0) apply((yield* mailbox.takeAll)[0])
        }
        yield* Metric.incrementBy(watchResponses, applied)
        if (next !== current) yield* publish(next)
        if (ended !== undefined) return yield* Effect.fail(ended)
      }
    }).pipe(
      Effect.scoped,
      Effect.catchTag("WatchEnded", (ended): Effect.Effect<void, WatchEnded | EtcdUnavailable | EtcdRequestFailed> =>
        ended.canceled
          ? reread
          : ended.wasConnected
          ? Effect.logDebug("watch disconnected; resuming", ended.cause)
          : Effect.fail(ended))
    )

    yield* session.pipe(
      Effect.retry(backoff),
      Effect.forever,
      Effect.annotateLogs({ group }),
      Effect.withSpan("EtcdSeq.groupWatch", { attributes: { group } }),
      Effect.forkScoped
    )
    return {
      group,
      membersPrefix: prefix,
      view,
      listen: (listener) =>
        Effect.flatMap(Effect.scope, (scope) => {
          listeners.add(listener)
          return Scope.addFinalizer(
            scope,
            Effect.sync(() =>
              listeners.delete(listener)
            )
          )
        })
    }
  })
