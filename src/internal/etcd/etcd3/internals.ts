/**
 * etcd3's shared watch stream, how to start it over when etcd3 cannot, and its hosts' connections: the one place that
 * reaches into etcd3's internals (1.1.2), each checked before use, so that a change there makes the adjustment a
 * no-op, not a crash.
 */
import type { Etcd3 } from "etcd3"

/**
 * The parts of etcd3 1.1.2's `WatchManager` (lib/watch.js) and `ConnectionPool` (lib/connection-pool.js) that this
 * file uses. None is public: each is checked before use, and missing ones make the adjustment that needs them a no-op.
 */
interface EtcdInternals {
  readonly watchManager?: {
    /** 0 idle, 1 connecting, 2 connected. */
    readonly state?: number
    /** The gRPC watch stream, while connected. */
    readonly stream?: { readonly cancel?: () => void; readonly end?: () => void }
    /** The `AttachQueue` of the stream: watchers whose create request is in flight (the first) or not sent yet. */
    readonly queue?: { readonly queue?: ReadonlyArray<unknown> }
    /** The watchers etcd3 knows, each with the id etcd gave it (`null` until attached). */
    readonly watchers?: ReadonlyArray<{ readonly id?: unknown }>
    /** Dispatches a response of the stream to its watcher; throws when it knows no watcher of that id. */
    handleResponse?: (response: { readonly watch_id?: unknown }) => void
  }
  readonly pool?: {
    readonly authenticator?: { readonly invalidateMetadata?: () => void }
    /** One per endpoint, each holding the gRPC clients of its connection. */
    readonly hosts?: ReadonlyArray<Host>
  }
}

/** etcd3's `Host`: its gRPC clients, one per service, all on one channel's connection. */
interface Host {
  readonly cachedServices?: Record<
    string,
    { readonly getChannel?: () => { getConnectivityState: (connect: boolean) => number } } | undefined
  >
  resetAllServices?: () => void
  /** Closes its gRPC clients for good, through `resetAllServices`. */
  close?: () => void
}

/** grpc-js's `connectivityState.READY`. */
const ready = 2

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
  abandon(stream)
  return true
}

/**
 * Ends a stream of etcd3's that the library gives up on (a keepalive past its deadline, a watch stream started over,
 * or one no longer wanted). etcd3 takes an error on a stream still open for writing for a failure of its host
 * (`markFailed` in lib/rpc.js): it would close the host's connection (see `keepConnections`) and count a strike
 * against the host in its circuit breaker. A cancel is such an error, so the stream is ended for writing first:
 * giving up is the library's choice, not a sign of a failing host.
 */
export const abandon = (stream: { readonly end?: () => void; readonly cancel?: () => void }): void => {
  stream.end?.()
  stream.cancel?.()
}

/**
 * What the stream is attaching now: the first watcher of the current `AttachQueue`. The same pair for a whole bound
 * means etcd3 sent no create request, or got no answer to one, for that long.
 */
export const attaching = (client: Etcd3): { readonly queue: object; readonly first: unknown } | undefined => {
  const manager = (client as unknown as EtcdInternals).watchManager
  const queue = manager?.queue
  return manager?.state === connectedState && queue?.queue !== undefined && queue.queue.length > 0
    ? { queue, first: queue.queue[0] }
    : undefined
}

/**
 * Drops a watch response for a watcher etcd3 no longer knows, instead of letting etcd3 throw.
 *
 * etcd can still send on a watch that etcd3 has let go: events or a cancel already in flight when the watcher was
 * cancelled (its scope closed, or its start revision compacted), or when the stream was reset. etcd3 1.1.2's
 * `WatchManager.handleResponse` throws then ("Failed to find watcher for IWatchResponse"), inside the stream's data
 * handler, where nothing can catch it: an unhandled rejection for the whole process, though no watcher of its is
 * affected. Returns whether the guard is in place (not when etcd3's internals are not as expected).
 */
export const dropStrayResponses = (client: Etcd3): boolean => {
  const manager = (client as unknown as EtcdInternals).watchManager
  const handle = manager?.handleResponse
  if (manager === undefined || typeof handle !== "function" || !Array.isArray(manager.watchers)) return false
  manager.handleResponse = function(response) {
    const watchers = manager.watchers ?? []
    if (!watchers.some((w) => w.id === response.watch_id)) return
    handle.call(manager, response)
  }
  return true
}

/** Host lists already adjusted: adjusted twice, `close` would restore the adjusted reset. */
const adjusted = new WeakSet<object>()

/**
 * Keeps a host's connection open when one of its calls fails while the connection is up. etcd3 closes every gRPC
 * client of a host when a call to it fails with an error it counts as recoverable (`resetAllServices`, from
 * `withConnection` and `markFailed`): a deadline exceeded, a cancel. That closes the connection the client's watch,
 * its keepalives and its other requests share, and under load one slow request cost every request in flight on the
 * client, which made more slow requests: in a 100 x 10 fleet run, processes whose keepalives were slow lost their
 * connection, then their watch, and fenced. A connection that is not up (connecting, failed, idle) is still reset as
 * etcd3 does: grpc-js has no timeout on a connection attempt (one to a proxy whose backend is gone hangs), and a new
 * channel reconnects at once, not after its backoff. Returns whether the guard is in place.
 */
export const keepConnections = (client: Etcd3): boolean => {
  const hosts = (client as unknown as EtcdInternals).pool?.hosts
  if (hosts === undefined || adjusted.has(hosts)) return false
  const adjustable = (h: Host) =>
    typeof h.resetAllServices === "function" && typeof h.close === "function" && typeof h.cachedServices === "object"
  if (!hosts.every(adjustable)) return false
  adjusted.add(hosts)
  for (const host of hosts) {
    const reset = host.resetAllServices!
    host.resetAllServices = () => {
      const services = Object.values(host.cachedServices ?? {})
      const up = services.length > 0 &&
        services.every((service) => service?.getChannel?.().getConnectivityState(false) === ready)
      if (!up) reset.call(host)
    }
    const close = host.close!
    // Closing the client closes every connection, up or not.
    host.close = () => {
      host.resetAllServices = reset
      close.call(host)
    }
  }
  return true
}
