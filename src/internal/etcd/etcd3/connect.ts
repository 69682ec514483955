/**
 * The etcd3 client: built with the options that make it fail over and give up as the library needs, proven with one
 * cheap request, closed with the scope.
 */
import { noop } from "cockatiel"
import { Duration, Effect, type Scope } from "effect"
import { Etcd3, EtcdPermissionDeniedError, type IOptions } from "etcd3"
import { EtcdUnavailable, InvalidOptions } from "../../../EtcdSeqError.js"
import * as Bounded from "../../bounded.js"
import { backoff } from "../../retry.js"
import type * as Api from "../api.js"
import { classify } from "./errors.js"
import { dropStrayResponses, keepConnections } from "./internals.js"
import type { Settings } from "./settings.js"

/** With several endpoints a request's attempts go to hosts picked anew (etcd3's retry policy makes three). */
const attempts = 3

/** etcd3's watch reconnect backoff: doubling from `millis`, at most 2 s (a cockatiel `IBackoff`, written out). */
const watchBackoff = (millis: number): WatchBackoff => ({
  duration: millis,
  next: () => watchBackoff(Math.min(2_000, millis * 2))
})
type WatchBackoff = NonNullable<NonNullable<IOptions["faultHandling"]>["watchBackoff"]>

export const client = (settings: Settings): Effect.Effect<Etcd3, InvalidOptions, Scope.Scope> => {
  // With several endpoints each attempt gets a share of the timeout (see defaultCallOptions); with one, every attempt
  // goes to the same host and may use all of it.
  const attemptsPerHost = settings.endpoints.length === 1 ? 1 : attempts
  return Effect.acquireRelease(
    Effect.try({
      try: () =>
        new Etcd3({
          hosts: [...settings.endpoints],
          ...(settings.auth === undefined ? {} : { auth: settings.auth }),
          ...(settings.credentials === undefined ? {} : { credentials: settings.credentials }),
          grpcOptions: {
            // A stream to an etcd member that stopped answering without closing the connection would wait forever:
            // unanswered pings close it, so its watch fails over. Not shorter: a process starved of CPU would close
            // healthy connections (docs/how-it-works.md, "Under load").
            "grpc.keepalive_time_ms": 5_000,
            "grpc.keepalive_timeout_ms": 6_000,
            // gRPC's default of 4 MiB per message would refuse a group read or a watch batch of a few large
            // members; etcd's own Go client allows math.MaxInt32, as etcd's server does for what it sends.
            "grpc.max_receive_message_length": 2_147_483_647
          },
          faultHandling: {
            // etcd3 re-establishes a failed watch stream on a timer of its own, backing off up to 30 s by default;
            // that timer holds the Node process open after the client is closed (seen after an etcd outage). The
            // group watch re-subscribes by itself, so etcd3's timer only needs to be short.
            watchBackoff: watchBackoff(50),
            // With one endpoint there is nowhere else to go: etcd3's per-host circuit breaker would turn a slow
            // moment (three timeouts) into 5 s of refused requests, keepalives included. With several, it keeps
            // requests away from a silent host, so it stays.
            ...(settings.endpoints.length === 1 ? { host: () => noop } : {})
          },
          // Every unary request carries a deadline; streams (watch, keepalive) set their own. etcd3 makes up to
          // three attempts, each on a host picked anew, and computes these options per attempt: a third of the
          // request timeout each, so a host that accepts a request but never answers (a paused or partitioned etcd
          // member) costs one attempt, and the next attempt still reaches a member that answers within the request
          // timeout. With the whole timeout on every attempt, the first would use it all up.
          defaultCallOptions: (context) =>
            context.isStream
              ? {}
              : { deadline: Date.now() + Duration.toMillis(settings.requestTimeout) / attemptsPerHost }
        }),
      // Whatever etcd3 or gRPC still refuses of the options is an option error, not a defect.
      catch: (cause) =>
        new InvalidOptions({ field: "options", reason: cause instanceof Error ? cause.message : String(cause) })
    }).pipe(Effect.tap((etcd) =>
      Effect.sync(() => {
        dropStrayResponses(etcd)
        keepConnections(etcd)
      })
    )),
    (etcd) => Effect.sync(() => etcd.close())
  )
}

/**
 * Proves the connection with a read of one key, as `etcdctl endpoint health` does: it goes through consensus, and a
 * user whose role does not cover the key is refused only once etcd has checked their credentials, which is all the
 * proof needs. (`Maintenance.Status` is root-only with auth on from etcd 3.5.28.)
 */
export const prove = (settings: Settings, etcd: Etcd3): Effect.Effect<void, Api.RequestError> =>
  Effect.tryPromise({
    // Per-attempt deadlines from the client's options; the whole proof is bounded by connectTimeout.
    try: () =>
      etcd.get("health").exec().then(
        () => undefined,
        (error) => error instanceof EtcdPermissionDeniedError ? undefined : Promise.reject(error)
      ),
    catch: classify(settings.endpoints, "connect", settings.connectTimeout)
  }).pipe(
    // A cluster electing a leader refuses the (linearizable) read at every member that is up, and one that is down
    // refuses the connection: every attempt etcd3 makes can fail although the cluster is back in a second. With
    // several endpoints the proof is tried again within the connect timeout; with one, a refusal is the answer.
    Effect.retry({
      schedule: backoff,
      while: (e) => settings.endpoints.length > 1 && e._tag === "EtcdUnavailable"
    }),
    Bounded.timeoutFail({
      duration: settings.connectTimeout,
      onTimeout: () => new EtcdUnavailable({ endpoints: settings.endpoints, timeout: settings.connectTimeout })
    }),
    Effect.withSpan("Etcd.connect", { attributes: { endpoints: settings.endpoints.join(",") } })
  )
