/**
 * A watch over etcd3 as a mailbox (see `EtcdApi.watch`). Every listener is removed and the watcher cancelled when the
 * scope closes. A watch etcd refuses at creation (a dead auth token) resets the client's watch stream at once (see
 * watchStream.ts); so does a watch not attached after a quarter of the request timeout while the stream attached
 * nothing else meanwhile (a watch of someone else's was refused ahead of it, or its host went silent). Either way the
 * mailbox then ends as after a disconnection, and its consumer starts a new watch on the new stream.
 */
import { Duration, Effect, type Mailbox, Runtime, type Scope } from "effect"
import type { Etcd3, IWatchResponse, Watcher } from "etcd3"
import * as Bounded from "../../bounded.js"
import * as Monotonic from "../../monotonic.js"
import * as Api from "../api.js"
import { toEvents } from "./convert.js"
import { attaching, resetWatchStream } from "./internals.js"
import type { Settings } from "./settings.js"

/** Where a watcher stands. `attached`: on the current stream (etcd3 re-attaches one after a disconnection). */
interface WatchState {
  wasConnected: boolean
  attached: boolean
  canceled: boolean
}

/** Opens the client's watch stream again (once, however many watches ask at once), saying why. */
type Reset = (why: string) => void

export const watch = (
  etcd: Etcd3,
  settings: Settings,
  target: Api.Target,
  startRevision: number
): Effect.Effect<Mailbox.ReadonlyMailbox<Api.WatchResponse | Api.WatchEnded>, never, Scope.Scope> =>
  Effect.gen(function*() {
    const { end, mailbox } = yield* Api.watchMailbox
    const runFork = Runtime.runFork(yield* Effect.runtime<never>())
    const reset: Reset = (why) => {
      if (resetWatchStream(etcd)) {
        runFork(Effect.logWarning(`${why}; opening the client's watch stream again, with a fresh auth token`))
      }
    }
    const { state } = yield* Effect.acquireRelease(
      Effect.sync(() => openWatcher(etcd, target, startRevision, mailbox, end, reset)),
      (opened) => closeWatcher(settings, opened)
    )
    yield* unstickAttach(etcd, settings, state, reset).pipe(Effect.forkScoped)
    return mailbox
  })

// --- Opening: the watcher and its listeners ---

type Opened = ReturnType<typeof openWatcher>

const openWatcher = (
  etcd: Etcd3,
  target: Api.Target,
  startRevision: number,
  mailbox: Mailbox.Mailbox<Api.WatchResponse | Api.WatchEnded>,
  end: (ended: Api.WatchEnded) => void,
  reset: Reset
) => {
  const state: WatchState = { wasConnected: false, attached: false, canceled: false }
  const builder = etcd.watch()
  const watcher: Watcher = ("key" in target ? builder.key(target.key) : builder.prefix(target.prefix))
    .startRevision(String(startRevision))
    .watcher()
  const listeners = {
    connected: () => {
      state.wasConnected = true
      state.attached = true
    },
    data: (response: IWatchResponse) => void mailbox.unsafeOffer({ events: toEvents(response) }),
    disconnected: (cause: unknown) => {
      state.attached = false
      end(new Api.WatchEnded({ compacted: false, wasConnected: state.wasConnected, cause }))
    },
    error: (cause: unknown) => {
      state.canceled = true
      // Refused at creation (a dead auth token): etcd3's attach queue is stuck behind this watcher (see
      // watchStream.ts), and the watch is tried again on a new stream, as after a disconnection. Cancelled
      // once created: its start revision was compacted, and only a re-read can catch up.
      const refused = !state.attached
      if (refused) reset(`etcd refused a watch (${String(cause)})`)
      end(new Api.WatchEnded({ compacted: !refused, wasConnected: state.wasConnected, cause }))
    }
  }
  for (const [event, listener] of Object.entries(listeners)) watcher.on(event as "data", listener)
  return { watcher, listeners, state }
}

// --- Closing: listeners off, the watcher cancelled ---

const closeWatcher = (settings: Settings, { listeners, state, watcher }: Opened): Effect.Effect<void> =>
  Effect.gen(function*() {
    for (const [event, listener] of Object.entries(listeners)) watcher.removeListener(event, listener)
    // A watch etcd cancelled is already detached; cancelling it again would wait for an answer never sent.
    if (state.canceled) return
    // A late server-side cancel must not surface as an unhandled "error" event.
    const ignore = () => {}
    watcher.on("error", ignore)
    yield* Effect.promise(() => watcher.cancel()).pipe(
      Bounded.timeout(settings.requestTimeout),
      Effect.ignore,
      Effect.ensuring(Effect.sync(() => watcher.removeListener("error", ignore)))
    )
  })

// --- Until attached: a stuck stream is opened again ---

/**
 * Until the watch is attached: a stream that attaches nothing for a whole bound is stuck (see attaching), on a
 * silent host (a paused etcd member) or refused. A healthy one answers each create within a round trip, so a long
 * queue of creates still moves on and is left alone. Each new stream goes to a host picked at random: with one of
 * three silent, a quarter of the request timeout per try makes a join's watch attach within the timeout but in
 * one case in a hundred.
 */
const unstickAttach = (
  etcd: Etcd3,
  settings: Settings,
  state: WatchState,
  reset: Reset
): Effect.Effect<void> =>
  Effect.gen(function*() {
    const bound = Duration.toMillis(settings.requestTimeout) / 4
    let stuck = attaching(etcd)
    let since = yield* Monotonic.millis
    while (!state.wasConnected && !state.canceled) {
      yield* Effect.sleep(bound / 5)
      if (state.wasConnected || state.canceled) return
      const now = attaching(etcd)
      const at = yield* Monotonic.millis
      if (now === undefined || stuck === undefined || now.queue !== stuck.queue || now.first !== stuck.first) {
        stuck = now
        since = at
      } else if (at - since >= bound) {
        reset(`a watch was not attached within ${bound} ms`)
        stuck = undefined
      }
    }
  })
