/**
 * The etcd client as a scoped service.
 *
 * @since 0.1.0
 */
import { noop } from "cockatiel"
import { Config, Context, Duration, Effect, Layer, Option, RcMap, Redacted, type Scope } from "effect"
import type { ConfigError } from "effect/ConfigError"
import { Etcd3, type IOptions } from "etcd3"
import { EtcdUnavailable, InvalidOptions } from "./EtcdSeqError.js"
import type { EtcdSeqError } from "./EtcdSeqError.js"
import * as Handover from "./internal/handover.js"
import * as Lease from "./internal/lease.js"
import { classify, type Connection } from "./internal/request.js"
import * as GroupWatch from "./internal/watch.js"

/**
 * How to reach etcd.
 *
 * @since 0.1.0
 * @category models
 */
export interface EtcdOptions {
  /** etcd client URLs, `http://host:port` or `https://host:port`. */
  readonly endpoints: ReadonlyArray<string>
  /** etcd user and password, when etcd has auth enabled. */
  readonly auth?: { readonly username: string; readonly password: Redacted.Redacted<string> } | undefined
  /** TLS material; `https://` endpoints without it use the system's roots. */
  readonly tls?: {
    readonly rootCertificate: Buffer
    readonly privateKey?: Redacted.Redacted<Buffer> | undefined
    readonly certChain?: Buffer | undefined
  } | undefined
  /** Bound on proving the connection when the client is acquired (the dial timeout). Default 5 seconds. */
  readonly connectTimeout?: Duration.DurationInput | undefined
  /** Deadline of each etcd request. Default 5 seconds. */
  readonly requestTimeout?: Duration.DurationInput | undefined
}

/**
 * The service: an `Etcd3` client from the `etcd3` package, connected and proven, plus what effect-etcdseq shares
 * between the members that use it.
 *
 * @since 0.1.0
 * @category models
 */
export interface EtcdClient extends Connection {
  readonly client: Etcd3
  readonly endpoints: ReadonlyArray<string>
  readonly connectTimeout: Duration.Duration
  readonly requestTimeout: Duration.Duration
  /**
   * One shared watch per group, held while any member of the group on this client holds it.
   * @internal
   */
  readonly groups: RcMap.RcMap<string, GroupWatch.GroupWatch, EtcdSeqError>
  /**
   * One shared watch of each group's handover keys (`runAssigned` with `exclusive: "group"`).
   * @internal
   */
  readonly handovers: RcMap.RcMap<string, Handover.HandoverWatch, EtcdSeqError>
  /**
   * The client's leases, one per TTL, shared by its members.
   * @internal
   */
  readonly leases: Lease.LeasePool
}

/**
 * The etcd client. Many members may share one: members of one group on one client share one watch and one view.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Etcd } from "effect-etcdseq"
 *
 * const EtcdLive = Etcd.layer({ endpoints: ["http://127.0.0.1:2379"] })
 * const program = Effect.gen(function*() {
 *   const { client } = yield* Etcd
 *   return yield* Effect.promise(() => client.get("some/key").string())
 * }).pipe(Effect.provide(EtcdLive))
 * ```
 * @since 0.1.0
 * @category tags
 */
export class Etcd extends Context.Tag("effect-etcdseq/Etcd")<Etcd, EtcdClient>() {
  /**
   * Creates the client, proves the connection with one cheap request bounded by `connectTimeout`, and closes the
   * client when the scope closes.
   *
   * Errors: `InvalidOptions` for malformed endpoints or timeouts (before any I/O), `EtcdUnavailable` when no
   * endpoint answers within `connectTimeout`, `EtcdRequestFailed` when etcd answers with an error (bad auth, ...).
   *
   * @example
   * ```ts
   * const client = yield* Etcd.make({ endpoints: ["http://127.0.0.1:2379"], connectTimeout: "2 seconds" })
   * ```
   * @since 0.1.0
   * @category constructors
   */
  static make(options: EtcdOptions): Effect.Effect<EtcdClient, EtcdSeqError, Scope.Scope> {
    return Effect.gen(function*() {
      const endpoints = yield* validateEndpoints(options.endpoints)
      // With several endpoints a request's attempts go to hosts picked anew, so each gets a share of the timeout (see
      // defaultCallOptions); with one, every attempt goes to the same host and may use all of it.
      const attemptsPerHost = endpoints.length === 1 ? 1 : attempts
      const connectTimeout = yield* validateTimeout("connectTimeout", options.connectTimeout)
      const requestTimeout = yield* validateTimeout("requestTimeout", options.requestTimeout)
      if (options.auth !== undefined && options.auth.username.trim() === "") {
        return yield* new InvalidOptions({ field: "auth.username", reason: "must not be empty" })
      }

      const client = yield* Effect.acquireRelease(
        Effect.sync(() =>
          new Etcd3({
            hosts: [...endpoints],
            ...(options.auth === undefined ? {} : {
              auth: { username: options.auth.username, password: Redacted.value(options.auth.password) }
            }),
            ...(options.tls === undefined ? {} : {
              credentials: {
                rootCertificate: options.tls.rootCertificate,
                ...(options.tls.privateKey === undefined ? {} : { privateKey: Redacted.value(options.tls.privateKey) }),
                ...(options.tls.certChain === undefined ? {} : { certChain: options.tls.certChain })
              }
            }),
            // A stream (watch, keepalive) to an etcd member that stopped answering without closing the connection (a
            // paused or partitioned member) would wait forever: gRPC pings every 5 s (the most often etcd allows by
            // default, `--grpc-keepalive-min-time`) while calls are open, and a ping unanswered for 2 s closes the
            // connection, so its watch fails over to another member.
            grpcOptions: { "grpc.keepalive_time_ms": 5_000, "grpc.keepalive_timeout_ms": 2_000 },
            // etcd3 re-establishes a failed watch stream on a timer of its own, backing off up to 30 s by default;
            // that timer holds the Node process open after the client is closed (seen after an etcd outage). The
            // group watch re-subscribes by itself (src/internal/watch.ts), so etcd3's timer only needs to be short.
            faultHandling: {
              watchBackoff: watchBackoff(50),
              // With one endpoint there is nowhere else to go: etcd3's per-host circuit breaker would turn a slow
              // moment (three timeouts) into 5 s of refused requests, keepalives included. With several, it keeps
              // requests away from a silent host, so it stays.
              ...(endpoints.length === 1 ? { host: () => noop } : {})
            },
            // Every unary request carries a deadline; streams (watch, keepalive) set their own. etcd3 makes up to
            // three attempts, each on a host picked anew, and computes these options per attempt: a third of the
            // request timeout each, so a host that accepts a request but never answers (a paused or partitioned
            // etcd member) costs one attempt, and the next attempt still reaches a member that answers within the
            // request timeout. With the whole timeout on every attempt, the first would use it all up.
            defaultCallOptions: (context) =>
              context.isStream ? {} : { deadline: Date.now() + Duration.toMillis(requestTimeout) / attemptsPerHost }
          })
        ),
        (client) => Effect.sync(() => client.close())
      )
      const connection: Connection = { client, endpoints, requestTimeout }

      yield* Effect.tryPromise({
        // Per-attempt deadlines from the client's options (above); the whole proof is bounded by connectTimeout.
        try: () => client.maintenance.status(),
        catch: classify(connection, "status", connectTimeout)
      }).pipe(
        Effect.timeoutFail({
          duration: connectTimeout,
          onTimeout: () => new EtcdUnavailable({ endpoints, timeout: connectTimeout })
        }),
        Effect.withSpan("Etcd.connect", { attributes: { endpoints: endpoints.join(",") } })
      )

      const groups = yield* RcMap.make({
        lookup: (group: string) => GroupWatch.make(connection, group)
      })
      const handovers = yield* RcMap.make({
        lookup: (group: string) => Handover.watch(connection, group)
      })
      const leases = yield* Lease.makePool(connection)
      return { client, endpoints, connectTimeout, requestTimeout, groups, handovers, leases }
    })
  }

  /**
   * The client as a layer: acquired when the layer is built, closed when its scope closes.
   *
   * @example
   * ```ts
   * const EtcdLive = Etcd.layer({ endpoints: ["http://127.0.0.1:2379"] })
   * ```
   * @since 0.1.0
   * @category layers
   */
  static layer(options: EtcdOptions): Layer.Layer<Etcd, EtcdSeqError> {
    return Layer.scoped(Etcd, Etcd.make(options))
  }

  /**
   * The client's options from configuration: `ETCD_ENDPOINTS` (comma separated, default
   * `http://127.0.0.1:2379`), `ETCD_USERNAME` and `ETCD_PASSWORD` (optional), `ETCD_CONNECT_TIMEOUT` and
   * `ETCD_REQUEST_TIMEOUT` (durations such as `5 seconds`, optional).
   *
   * @since 0.1.0
   * @category config
   */
  static readonly config: Config.Config<EtcdOptions> = Config.all({
    endpoints: Config.string("ETCD_ENDPOINTS").pipe(
      Config.withDefault("http://127.0.0.1:2379"),
      Config.map((s) => s.split(",").map((e) => e.trim()))
    ),
    username: Config.option(Config.string("ETCD_USERNAME")),
    password: Config.option(Config.redacted("ETCD_PASSWORD")),
    connectTimeout: Config.option(Config.duration("ETCD_CONNECT_TIMEOUT")),
    requestTimeout: Config.option(Config.duration("ETCD_REQUEST_TIMEOUT"))
  }).pipe(Config.map(({ connectTimeout, endpoints, password, requestTimeout, username }) => ({
    endpoints,
    auth: Option.isSome(username)
      ? { username: username.value, password: Option.getOrElse(password, () => Redacted.make("")) }
      : undefined,
    connectTimeout: Option.getOrUndefined(connectTimeout),
    requestTimeout: Option.getOrUndefined(requestTimeout)
  })))

  /**
   * The client as a layer, its options read through `Config` (by default {@link Etcd.config}).
   *
   * Errors: `ConfigError` when the configuration cannot be read, then as {@link Etcd.make}.
   *
   * @example
   * ```ts
   * // ETCD_ENDPOINTS=http://10.0.0.1:2379,http://10.0.0.2:2379
   * const EtcdLive = Etcd.layerConfig()
   * ```
   * @since 0.1.0
   * @category layers
   */
  static layerConfig(
    config: Config.Config<EtcdOptions> = Etcd.config
  ): Layer.Layer<Etcd, EtcdSeqError | ConfigError> {
    return Layer.scoped(Etcd, Effect.flatMap(config, Etcd.make))
  }
}

// internal

const defaultTimeout = Duration.seconds(5)

/** etcd3's watch reconnect backoff: doubling from `millis`, at most 2 s (a cockatiel `IBackoff`, written out). */
const watchBackoff = (millis: number): WatchBackoff => ({
  duration: millis,
  next: () => watchBackoff(Math.min(2_000, millis * 2))
})
type WatchBackoff = NonNullable<NonNullable<IOptions["faultHandling"]>["watchBackoff"]>

/** Attempts etcd3's default global retry policy makes for a unary request (its `retry(..., { maxAttempts: 3 })`). */
const attempts = 3

const validateTimeout = (
  field: string,
  input: Duration.DurationInput | undefined
): Effect.Effect<Duration.Duration, InvalidOptions> => {
  if (input === undefined) return Effect.succeed(defaultTimeout)
  const duration = Duration.decodeUnknown(input)
  if (Option.isNone(duration)) {
    return Effect.fail(new InvalidOptions({ field, reason: `${String(input)} is not a duration` }))
  }
  if (!Duration.isFinite(duration.value) || Duration.toMillis(duration.value) <= 0) {
    return Effect.fail(new InvalidOptions({ field, reason: "must be a positive, finite duration" }))
  }
  return Effect.succeed(duration.value)
}

const validateEndpoints = (
  endpoints: ReadonlyArray<string> | undefined
): Effect.Effect<ReadonlyArray<string>, InvalidOptions> => {
  if (endpoints === undefined || endpoints.length === 0) {
    return Effect.fail(new InvalidOptions({ field: "endpoints", reason: "at least one endpoint is required" }))
  }
  for (const endpoint of endpoints) {
    let url: URL | undefined
    try {
      url = new URL(endpoint)
    } catch {
      url = undefined
    }
    if (
      url === undefined || (url.protocol !== "http:" && url.protocol !== "https:") || url.hostname === "" ||
      url.port === "" || (url.pathname !== "/" && url.pathname !== "") || url.search !== "" || url.username !== ""
    ) {
      return Effect.fail(
        new InvalidOptions({
          field: "endpoints",
          reason: `"${endpoint}" is not an etcd client URL such as http://127.0.0.1:2379`
        })
      )
    }
  }
  return Effect.succeed(endpoints.map((e) => e.replace(/\/$/, "")))
}
