/** The in-memory etcd's watch hub: each write's events to the watches they concern, history replayed to a new one. */
import { Effect, type Mailbox, type Scope } from "effect"
import * as Api from "../api.js"
import { matches, type State, type Watch } from "./state.js"

/** A write's events, to every watch of a key among them. */
export const publish = (state: State, events: ReadonlyArray<Api.Event>): void => {
  for (const watch of state.watches) {
    const mine = events.filter((e) => matches(watch.target, Api.eventKey(e)))
    if (mine.length > 0) watch.mailbox.unsafeOffer({ events: mine })
  }
}

/**
 * A watch of `client` from `startRevision`: what history holds from it, then each write as it happens. `reachable`:
 * whether the client reaches the server, asked once the mailbox is made. Removed from the hub when the scope closes.
 */
export const open = (
  state: State,
  client: number,
  reachable: () => boolean,
  target: Api.Target,
  startRevision: number
): Effect.Effect<Mailbox.ReadonlyMailbox<Api.WatchResponse | Api.WatchEnded>, never, Scope.Scope> =>
  Effect.gen(function*() {
    const { end, mailbox } = yield* Api.watchMailbox
    if (!reachable()) {
      end(new Api.WatchEnded({ compacted: false, wasConnected: false, cause: "unreachable" }))
      return mailbox
    }
    if (startRevision < state.compactedBelow) {
      end(
        new Api.WatchEnded({
          compacted: true,
          wasConnected: true,
          cause: new Api.Compacted({ revision: state.compactedBelow })
        })
      )
      return mailbox
    }
    for (const entry of state.history) {
      if (entry.revision < startRevision) continue
      const mine = entry.events.filter((e) => matches(target, Api.eventKey(e)))
      if (mine.length > 0) mailbox.unsafeOffer({ events: mine })
    }
    const watch: Watch = { client, target, mailbox, end }
    yield* Effect.acquireRelease(
      Effect.sync(() => state.watches.add(watch)),
      () => Effect.sync(() => state.watches.delete(watch))
    )
    return mailbox
  })

/** Ends the watches of the clients `affected` as a dropped connection does. */
export const drop = (state: State, affected: (client: number) => boolean): void => {
  for (const watch of [...state.watches]) {
    if (!affected(watch.client)) continue
    state.watches.delete(watch)
    watch.end(new Api.WatchEnded({ compacted: false, wasConnected: true, cause: "unreachable" }))
  }
}
