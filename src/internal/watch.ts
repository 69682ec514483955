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
import { type IKeyValue, type IWatchResponse, Range, type Watcher } from "etcd3"
import type { EtcdRequestFailed, EtcdUnavailable } from "../EtcdSeqError.js"
import * as Keys from "./keys.js"
import { type Connection, request } from "./request.js"
import { backoff } from "./retry.js"
import * as View from "./view.js"
import { attaching, resetWatchStream } from "./watchStream.js"

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

/** What a watch follows: the keys under a prefix, or one key. */
export type WatchTarget = string | { readonly key: string }

/**
 * The watch responses for keys under `target` from `startRevision`, in a mailbox that ends with a `WatchEnded`
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
  target: WatchTarget,
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
        const builder = connection.client.watch()
        const watcher: Watcher = (typeof target === "string" ? builder.prefix(target) : builder.key(target.key))
          .startRevision(String(startRevision))
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
            // Refused at creation (a dead auth token): etcd3's attach queue is stuck behind this watcher (see
            // resetWatchStream), and the watch is tried again on a new stream, as after a disconnection. Cancelled
            // once created: its start revision was compacted, and only a re-read can catch up.
            const refused = !state.attached
            if (refused) reset(`etcd refused a watch (${String(cause)})`)
            end(new WatchEnded({ canceled: !refused, wasConnected: state.wasConnected, cause }))
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
  target: WatchTarget,
  startRevision: number
): Stream.Stream<IWatchResponse, WatchEnded> =>
  Stream.unwrapScoped(Effect.map(watchMailbox(connection, target, startRevision), Mailbox.toStream)).pipe(
    Stream.mapEffect((item) => item instanceof WatchEnded ? Effect.fail(item) : Effect.succeed(item))
  )

/** Lets the event loop run once: I/O that is already due is delivered before the caller goes on. */
const yieldToEventLoop: Effect.Effect<void> = Effect.async<void>((resume) => {
  const handle = setImmediate(() => resume(Effect.void))
  return Effect.sync(() => clearImmediate(handle))
})

/**
 * Keys per page of a group read. A member record can be large (metadata up to 1 MiB), so the read is paged to bound
 * what one response holds; the pages are read at the first one's revision, so together they are one snapshot.
 */
const readPageSize = 500

/** etcd's answer to a read at a revision compaction has removed. */
const isCompacted = (error: EtcdUnavailable | EtcdRequestFailed): boolean =>
  error._tag === "EtcdRequestFailed" && String(error.cause).includes("required revision has been compacted")

/**
 * Reads the group's members once (the starting point of a watch, and the recovery after a compaction), page by
 * page at one revision: the members, and the revision they are read at.
 */
export const readMembers = (
  connection: Connection,
  prefix: string,
  pageSize: number = readPageSize
): Effect.Effect<
  { readonly entries: ReadonlyArray<View.Entry>; readonly revision: number },
  EtcdUnavailable | EtcdRequestFailed
> =>
  Effect.gen(function*() {
    const range = Range.prefix(prefix)
    const entries: Array<View.Entry> = []
    const foreign: Array<string> = []
    let revision: number | undefined
    let from = range.start
    while (true) {
      const page = yield* request(connection, "range", (client) =>
        client.kv.range({
          key: from,
          range_end: range.end,
          limit: pageSize,
          ...(revision === undefined ? {} : { revision: String(revision) })
        }))
      revision ??= Number(page.header.revision)
      for (const kv of page.kvs) {
        const raw = toRaw(kv)
        // A rename key left behind by a client that died between its put and its delete: not a member, no news.
        if (raw.key === prefix + Keys.renameSegment) continue
        const decoded = View.decode(prefix, raw)
        if (decoded._tag === "Member") entries.push(decoded.entry)
        else foreign.push(`${decoded.key} (${decoded.reason})`)
      }
      const last = page.kvs.at(-1)
      if (!page.more || last === undefined) break
      from = Buffer.concat([last.key, Buffer.from([0])])
    }
    if (foreign.length > 0) yield* Effect.logWarning("ignoring keys that are not members", foreign)
    yield* Metric.increment(groupReads)
    return { entries, revision }
  }).pipe(
    // Compacted between two pages: read again from the start, at a newer revision.
    Effect.retry({ while: isCompacted, times: 3 })
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
    const watchScope = yield* Effect.scope
    const prefix = Keys.membersPrefix(group)
    const initial = yield* readMembers(connection, prefix)
    // What members see: only views that carry the group's name for them.
    const view = yield* SubscriptionRef.make(View.fromSnapshot(initial.entries, initial.revision))
    // Everything the watch has applied, including a re-read view that still waits for its name.
    let applied = yield* SubscriptionRef.get(view)
    const listeners = new Set<Listener>()
    const publish = (next: View.View) =>
      SubscriptionRef.set(view, next).pipe(
        Effect.zipRight(Effect.sync(() => {
          for (const listener of listeners) listener(next)
        })),
        Effect.zipRight(Effect.logDebug(`view: ${next.members.length} members at revision ${next.revision}`))
      )

    // The rename key is deleted at once: it only has to produce its event. A failed delete is retried, and a key
    // left by a crash in between is overwritten and deleted by the next rename.
    const renameKey = Keys.renameKey(group)
    const rename = request(connection, "view.rename", (client) => client.put(renameKey).value("").exec()).pipe(
      Effect.zipRight(
        request(connection, "view.rename", (client) => client.delete().key(renameKey).exec()).pipe(
          Effect.retry(backoff),
          Effect.forkIn(watchScope)
        )
      )
    )
    const reread = Effect.gen(function*() {
      const fresh = yield* readMembers(connection, prefix)
      applied = View.reread(applied, fresh.entries, fresh.revision)
      yield* Effect.logInfo("re-read group after its watch history was compacted; renaming the view")
    })

    const session = Effect.gen(function*() {
      // Until the rename lands, nobody gets an Info: a failed rename is tried again with the next session.
      if (applied.awaitingName) yield* rename
      const mailbox = yield* watchMailbox(connection, prefix, applied.seen + 1)
      while (true) {
        const before = applied
        let applied_ = 0
        let ended: WatchEnded | undefined
        const apply = (items: Iterable<IWatchResponse | WatchEnded>) => {
          for (const item of items) {
            if (item instanceof WatchEnded) ended = item
            else if (ended === undefined) {
              applied = View.applyEvents(applied, prefix, toEvents(item))
              applied_++
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
        yield* Metric.incrementBy(watchResponses, applied_)
        // Members hear of a view when its members or its name changed: not of keys that are not members, nor of a
        // rename key's delete (the view's `seen` alone moves).
        const shown = yield* SubscriptionRef.get(view)
        if (
          applied !== before && !applied.awaitingName &&
          (applied.members !== shown.members || applied.revision !== shown.revision)
        ) yield* publish(applied)
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
