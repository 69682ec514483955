/**
 * The etcd client as a scoped service.
 *
 * @since 0.1.0
 */
import { noop } from "cockatiel"
import { Config, Context, Duration, Effect, Layer, Option, RcMap, Redacted, type Scope } from "effect"
import type { ConfigError } from "effect/ConfigError"
import { Etcd3, EtcdPermissionDeniedError, type IOptions } from "etcd3"
import { X509Certificate } from "node:crypto"
import * as Tls from "node:tls"
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
  /**
   * TLS material, for `https://` endpoints: PEM buffers. Without `rootCertificate` the system's roots verify etcd;
   * `privateKey` and `certChain` (a client certificate) go together.
   */
  readonly tls?: {
    readonly rootCertificate?: Buffer | undefined
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
      if (typeof options !== "object" || options === null) {
        return yield* new InvalidOptions({ field: "options", reason: "must be an object with endpoints" })
      }
      const endpoints = yield* validateEndpoints(options.endpoints)
      // With several endpoints a request's attempts go to hosts picked anew, so each gets a share of the timeout (see
      // defaultCallOptions); with one, every attempt goes to the same host and may use all of it.
      const attemptsPerHost = endpoints.length === 1 ? 1 : attempts
      const connectTimeout = yield* validateTimeout("connectTimeout", options.connectTimeout)
      const requestTimeout = yield* validateTimeout("requestTimeout", options.requestTimeout)
      const auth = yield* validateAuth(options.auth)
      const credentials = yield* validateTls(options.tls, endpoints)

      const client = yield* Effect.acquireRelease(
        Effect.try({
          try: () =>
            new Etcd3({
              hosts: [...endpoints],
              ...(auth === undefined ? {} : { auth }),
              ...(credentials === undefined ? {} : { credentials }),
              grpcOptions: {
                // A stream (watch, keepalive) to an etcd member that stopped answering without closing the
                // connection (a paused or partitioned member) would wait forever: gRPC pings every 5 s (the most
                // often etcd allows by default, `--grpc-keepalive-min-time`) while calls are open, and a ping
                // unanswered for 2 s closes the connection, so its watch fails over to another member.
                "grpc.keepalive_time_ms": 5_000,
                "grpc.keepalive_timeout_ms": 2_000,
                // gRPC's default of 4 MiB per message would refuse a group read or a watch batch of a few large
                // members; etcd's own Go client allows math.MaxInt32, as etcd's server does for what it sends.
                "grpc.max_receive_message_length": 2_147_483_647
              },
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
            }),
          // Whatever etcd3 or gRPC still refuses of the options above is an option error, not a defect.
          catch: (cause) =>
            new InvalidOptions({ field: "options", reason: cause instanceof Error ? cause.message : String(cause) })
        }),
        (client) => Effect.sync(() => client.close())
      )
      const connection: Connection = { client, endpoints, requestTimeout }

      yield* Effect.tryPromise({
        // A read of one key, as `etcdctl endpoint health` proves a connection: it goes through consensus, and a user
        // whose role does not cover the key is refused only once etcd has checked their credentials, which is all
        // the proof needs. (`Maintenance.Status` is root-only with auth on from etcd 3.5.28.) Per-attempt deadlines
        // come from the client's options (above); the whole proof is bounded by connectTimeout.
        try: () =>
          client.get("health").exec().then(
            () => undefined,
            (error) => error instanceof EtcdPermissionDeniedError ? undefined : Promise.reject(error)
          ),
        catch: classify(connection, "connect", connectTimeout)
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

/** `scheme://host:port` with an explicit port (IPv6 hosts in brackets), nothing else. */
const endpointPattern = /^(https?):\/\/(\[[0-9A-Fa-f:.]+\]|[^/?#@:[\]]+):([0-9]{1,5})\/?$/

const validateEndpoints = (
  endpoints: ReadonlyArray<string> | undefined
): Effect.Effect<ReadonlyArray<string>, InvalidOptions> => {
  const invalid = (reason: string) => Effect.fail(new InvalidOptions({ field: "endpoints", reason }))
  if (!Array.isArray(endpoints) || endpoints.length === 0) return invalid("at least one endpoint is required")
  const schemes = new Set<string>()
  for (const [at, endpoint] of endpoints.entries()) {
    if (typeof endpoint !== "string") return invalid(`endpoint #${at + 1} is not a string`)
    // Credentials belong in `auth`; an endpoint carrying them would be printed in errors and spans, so it is refused
    // without being repeated.
    if (/^[a-z][a-z0-9+.-]*:\/\/[^/?#]*@/i.test(endpoint)) {
      return invalid(`endpoint #${at + 1} carries credentials (user:password@); give them as auth instead`)
    }
    const match = endpointPattern.exec(endpoint)
    const port = Number(match?.[3])
    if (match === null || !(port >= 1 && port <= 65535) || !URL.canParse(endpoint)) {
      return invalid(`"${endpoint}" is not an etcd client URL such as http://127.0.0.1:2379 (scheme, host and port)`)
    }
    schemes.add(match[1]!)
  }
  if (schemes.size > 1) return invalid("endpoints mix http:// and https://; one client uses one or the other")
  return Effect.succeed(endpoints.map((e) => e.replace(/\/$/, "")))
}

const validateAuth = (
  auth: EtcdOptions["auth"]
): Effect.Effect<{ readonly username: string; readonly password: string } | undefined, InvalidOptions> => {
  if (auth === undefined) return Effect.succeed(undefined)
  if (typeof auth !== "object" || auth === null) {
    return Effect.fail(new InvalidOptions({ field: "auth", reason: "must be { username, password }" }))
  }
  if (typeof auth.username !== "string" || auth.username.trim() === "") {
    return Effect.fail(new InvalidOptions({ field: "auth.username", reason: "must not be empty" }))
  }
  if (!Redacted.isRedacted(auth.password) || typeof Redacted.value(auth.password) !== "string") {
    return Effect.fail(
      new InvalidOptions({ field: "auth.password", reason: "must be a Redacted string: Redacted.make(password)" })
    )
  }
  return Effect.succeed({ username: auth.username, password: Redacted.value(auth.password) })
}

type Credentials = NonNullable<IOptions["credentials"]>

/**
 * Why `pem` is not a bundle of PEM certificates, if it is not. gRPC and OpenSSL skip what they cannot parse in a CA
 * bundle, so a wrong file would only show as failed handshakes, reported as an unreachable etcd.
 */
const certificateProblem = (pem: Buffer): string | undefined => {
  const blocks = pem.toString("utf8").match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []
  if (blocks.length === 0) return "holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
  for (const [at, block] of blocks.entries()) {
    try {
      new X509Certificate(block)
    } catch (cause) {
      return `certificate #${at + 1} is not valid: ${cause instanceof Error ? cause.message : String(cause)}`
    }
  }
  return undefined
}

/** The TLS material as etcd3 takes it, checked here: gRPC would throw on it when the client is built. */
const validateTls = (
  tls: EtcdOptions["tls"],
  endpoints: ReadonlyArray<string>
): Effect.Effect<Credentials | undefined, InvalidOptions> => {
  const invalid = (field: string, reason: string) => Effect.fail(new InvalidOptions({ field, reason }))
  if (tls === undefined) return Effect.succeed(undefined)
  if (typeof tls !== "object" || tls === null) {
    return invalid("tls", "must be { rootCertificate?, privateKey?, certChain? }")
  }
  if (!endpoints[0]!.startsWith("https://")) {
    return invalid("tls", "is given, but the endpoints are http://, not https://")
  }
  const { certChain, privateKey, rootCertificate } = tls
  if (rootCertificate !== undefined && !Buffer.isBuffer(rootCertificate)) {
    return invalid("tls.rootCertificate", "must be a Buffer of PEM")
  }
  if (certChain !== undefined && !Buffer.isBuffer(certChain)) return invalid("tls.certChain", "must be a Buffer of PEM")
  const key = privateKey === undefined ? undefined : Redacted.isRedacted(privateKey) ? Redacted.value(privateKey) : null
  if (key === null || (key !== undefined && !Buffer.isBuffer(key))) {
    return invalid("tls.privateKey", "must be a Redacted Buffer of PEM: Redacted.make(buffer)")
  }
  if (key !== undefined && certChain === undefined) return invalid("tls.certChain", "must come with privateKey")
  if (key === undefined && certChain !== undefined) return invalid("tls.privateKey", "must come with certChain")
  for (const [field, pem] of [["tls.rootCertificate", rootCertificate], ["tls.certChain", certChain]] as const) {
    const problem = pem === undefined ? undefined : certificateProblem(pem)
    if (problem !== undefined) return invalid(field, problem)
  }
  try {
    // What gRPC builds from the same material: malformed PEM fails here, with OpenSSL's reason (never the key).
    Tls.createSecureContext({
      ...(rootCertificate === undefined ? {} : { ca: rootCertificate }),
      ...(key === undefined ? {} : { key, cert: certChain })
    })
  } catch (cause) {
    return invalid("tls", `is not usable PEM: ${cause instanceof Error ? cause.message : String(cause)}`)
  }
  // etcd3's type asks for a root certificate, but passes it to gRPC's createSsl, which takes none as the system's roots.
  return Effect.succeed({
    ...(rootCertificate === undefined ? {} : { rootCertificate }),
    ...(key === undefined ? {} : { privateKey: key }),
    ...(certChain === undefined ? {} : { certChain })
  } as Credentials)
}
