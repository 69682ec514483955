/**
 * A prefix followed for the life of a scope: read once (paged, at one revision), then watched from that revision + 1,
 * each watch response folded into a state. A watch that drops resumes from the last revision the state applied, so
 * no change is missed; one whose start revision was compacted re-reads. Used for the group's members (the view) and
 * for its handover values.
 */
import { Effect, Mailbox, Option, type Scope, Stream } from "effect"
import * as Api from "./etcd/api.js"
import { yieldToEventLoop } from "./eventLoop.js"
import { backoff } from "./retry.js"

/** How a cache turns what it reads into its state. */
export interface Fold<S> {
  /** The state read at `revision` when following starts. */
  readonly initial: (kvs: ReadonlyArray<Api.KeyValue>, revision: number) => S
  /** The state re-read at `revision` once the watch's history was compacted away. */
  readonly reread: (previous: S, kvs: ReadonlyArray<Api.KeyValue>, revision: number) => S
  /** The state after one batch of events, the same object when they changed nothing. */
  readonly apply: (state: S, events: ReadonlyArray<Api.Event>) => S
  /** The highest revision the state has applied: the watch resumes after it. */
  readonly seen: (state: S) => number
}

export interface Options<S> {
  /** Told of every state that changed, in the cache's fiber (batches are coalesced: see below). */
  readonly onChange: (state: S) => Effect.Effect<void>
  /** Runs before every watch starts; failing, it is retried with the next attempt (a rename, for the group view). */
  readonly beforeWatch?: ((state: S) => Effect.Effect<void, Api.RequestError>) | undefined
  /** Told of every read (metrics, logs). */
  readonly onRead?: ((kvs: ReadonlyArray<Api.KeyValue>) => Effect.Effect<void>) | undefined
  /** Told how many responses each batch held (metrics). */
  readonly onResponses?: ((count: number) => Effect.Effect<void>) | undefined
  readonly pageSize?: number | undefined
  /** The span the cache's fiber runs in, with the prefix as attribute. */
  readonly span: string
}

/**
 * Keys per page of a read. A value can be large (member metadata up to 1 MiB), so a read is paged to bound what one
 * response holds; the pages are read at the first one's revision, so together they are one snapshot.
 */
const defaultPageSize = 500

/** Every key under `prefix`, page by page at one revision: the key-values and that revision. */
export const readPrefix = (
  api: Api.EtcdApi,
  prefix: string,
  pageSize: number = defaultPageSize
): Effect.Effect<{ readonly kvs: ReadonlyArray<Api.KeyValue>; readonly revision: number }, Api.RequestError> =>
  Effect.gen(function*() {
    const kvs: Array<Api.KeyValue> = []
    let revision: number | undefined
    let from: string | undefined
    while (true) {
      const page = yield* api.range({ target: { prefix }, from, limit: pageSize, revision })
      revision ??= page.revision
      kvs.push(...page.kvs)
      const last = page.kvs.at(-1)
      if (!page.more || last === undefined) break
      from = `${last.key}\0`
    }
    return { kvs, revision }
  }).pipe(
    // Compacted between two pages: read again from the start, at a newer revision.
    Effect.retry({ while: Api.isCompacted, times: 3 })
  )

/** A watch as a stream of responses that always ends by failing with `WatchEnded`. */
export const watchStream = (
  api: Api.EtcdApi,
  target: Api.Target,
  startRevision: number
): Stream.Stream<Api.WatchResponse, Api.WatchEnded> =>
  Stream.unwrapScoped(Effect.map(api.watch(target, startRevision), Mailbox.toStream)).pipe(
    Stream.mapEffect((item) => item instanceof Api.WatchEnded ? Effect.fail(item) : Effect.succeed(item))
  )

/**
 * Reads the prefix and follows it until the scope closes, through disconnections and compactions. Returns the
 * current state, read synchronously.
 */
export const follow = <S>(
  api: Api.EtcdApi,
  prefix: string,
  fold: Fold<S>,
  options: Options<S>
): Effect.Effect<{ readonly current: () => S }, Api.RequestError, Scope.Scope> =>
  Effect.gen(function*() {
    const read = readPrefix(api, prefix, options.pageSize).pipe(
      Effect.tap(({ kvs }) => options.onRead === undefined ? Effect.void : options.onRead(kvs))
    )
    // Every member of the client that follows this prefix waits on the first read: a timeout would fail them all at
    // once (five hundred joins of one process, say), and each would retry its whole join. A read is safe to repeat.
    const first = yield* read.pipe(
      Effect.retry({ schedule: backoff, times: 2, while: (e) => e._tag === "EtcdUnavailable" })
    )
    let state = fold.initial(first.kvs, first.revision)

    const session = Effect.gen(function*() {
      if (options.beforeWatch !== undefined) yield* options.beforeWatch(state)
      const mailbox = yield* api.watch({ prefix }, fold.seen(state) + 1)
      while (true) {
        const before = state
        let responses = 0
        let ended: Api.WatchEnded | undefined
        const apply = (items: Iterable<Api.WatchResponse | Api.WatchEnded>) => {
          for (const item of items) {
            if (item instanceof Api.WatchEnded) ended = item
            else if (ended === undefined) {
              state = fold.apply(state, item.events)
              responses++
            }
          }
        }
        apply((yield* mailbox.takeAll)[0])
        // Responses that reach the event loop meanwhile join this batch: a listener is told of each state, so a
        // storm of a thousand changes must make a few states, not a thousand. Idle, this costs one loop turn.
        if (ended === undefined) {
          yield* yieldToEventLoop
          if (Option.getOrElse(mailbox.unsafeSize(), () => 0) > 0) apply((yield* mailbox.takeAll)[0])
        }
        if (options.onResponses !== undefined) yield* options.onResponses(responses)
        if (state !== before) yield* options.onChange(state)
        if (ended !== undefined) return yield* Effect.fail(ended)
      }
    }).pipe(
      Effect.scoped,
      Effect.catchTag("WatchEnded", (ended): Effect.Effect<void, Api.WatchEnded | Api.RequestError> =>
        ended.compacted
          ? Effect.flatMap(read, (fresh) => {
            state = fold.reread(state, fresh.kvs, fresh.revision)
            return options.onChange(state)
          })
          : ended.wasConnected
          ? Effect.logDebug("watch disconnected; resuming", ended.cause)
          : Effect.fail(ended))
    )

    yield* session.pipe(
      Effect.retry(backoff),
      Effect.forever,
      Effect.withSpan(options.span, { attributes: { prefix } }),
      Effect.forkScoped
    )
    return { current: () => state }
  })
