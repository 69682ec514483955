/**
 * The etcd client as a scoped service: over a real etcd (`make`, `layer`, `layerConfig`) or over the in-memory etcd of
 * `MemoryEtcd` (`layerMemory`).
 *
 * @since 0.1.0
 */
import { Config, Context, Duration, Effect, Layer, Option, Redacted, type Scope } from "effect"
import type { ConfigError } from "effect/ConfigError"
import type { Etcd3, IOptions } from "etcd3"
import { X509Certificate } from "node:crypto"
import * as Tls from "node:tls"
import { InvalidOptions } from "./EtcdSeqError.js"
import type { EtcdSeqError } from "./EtcdSeqError.js"
import * as Client from "./internal/client.js"
import * as Etcd3Api from "./internal/etcd/etcd3.js"
import * as Memory from "./internal/etcd/memory.js"
import { MemoryEtcd } from "./MemoryEtcd.js"

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
  /** Bound on proving the connection when the client is acquired (the dial timeout). Default 5 seconds, at most 1 hour. */
  readonly connectTimeout?: Duration.DurationInput | undefined
  /** Deadline of each etcd request. Default 5 seconds, at most 1 hour. */
  readonly requestTimeout?: Duration.DurationInput | undefined
  /**
   * How a burst of group changes (a join storm) reaches the members on this client. A change after a quiet moment
   * reaches them at once; while changes follow each other within the interval (at first `initial`), members get the
   * latest view once per interval. The interval doubles up to `max` while changes come fast (several per interval,
   * more often than one per tenth of `max`) and halves back towards `initial` when they do not, so a storm costs
   * each member a few dozen views instead of one per join, and changes a few hundred ms apart after it go out alone.
   * Default `{ initial: "10 millis", max: "1 second" }`; `false` sends every view at once.
   */
  readonly viewPacing?: false | {
    readonly initial?: Duration.DurationInput | undefined
    readonly max?: Duration.DurationInput | undefined
  } | undefined
}

/**
 * The service: a client of one etcd, connected and proven. The members of a group that share one client share its
 * watch of the group and its lease (one per TTL).
 *
 * @since 0.1.0
 * @category models
 */
export interface EtcdClient {
  /** Where its requests go: the endpoints it was given, or `memory://client-<n>` for a client of `MemoryEtcd`. */
  readonly endpoints: ReadonlyArray<string>
  readonly connectTimeout: Duration.Duration
  readonly requestTimeout: Duration.Duration
  /** The `etcd3` client behind it, for requests of your own; absent on a client of `MemoryEtcd`. */
  readonly client?: Etcd3 | undefined
}

/**
 * A client of a real etcd, as `Etcd.make` returns it: with its `etcd3` client.
 *
 * @since 0.1.0
 * @category models
 */
export interface Etcd3Client extends EtcdClient {
  readonly client: Etcd3
}

/**
 * The etcd client. Many members may share one: members of one group on one client share one watch and one view.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Etcd, EtcdSeq } from "effect-etcdseq"
 *
 * const EtcdLive = Etcd.layer({ endpoints: ["http://127.0.0.1:2379"] })
 * const program = EtcdSeq.make({ key: "indexer" }).pipe(Effect.scoped, Effect.provide(EtcdLive))
 * ```
 * @since 0.1.0
 * @category tags
 */
export class Etcd extends Context.Tag("effect-etcdseq/Etcd")<Etcd, EtcdClient>() {
  /**
   * Creates the client, proves the connection with one cheap request bounded by `connectTimeout` (a read of one key,
   * as `etcdctl endpoint health`: a user whose role does not cover it still connects), and closes the client when the
   * scope closes.
   *
   * Errors: `InvalidOptions` for malformed endpoints, credentials, TLS material or timeouts (before any I/O),
   * `EtcdUnavailable` when no endpoint answers within `connectTimeout`, `EtcdRequestFailed` when etcd answers with
   * an error (bad credentials, ...).
   *
   * @example
   * ```ts
   * import { Effect } from "effect"
   * import { Etcd } from "effect-etcdseq"
   *
   * const read = Effect.gen(function*() {
   *   const etcd = yield* Etcd.make({ endpoints: ["http://127.0.0.1:2379"], connectTimeout: "2 seconds" })
   *   return yield* Effect.promise(() => etcd.client.get("some/key").string())
   * }).pipe(Effect.scoped)
   * ```
   * @since 0.1.0
   * @category constructors
   */
  static make(options: EtcdOptions): Effect.Effect<Etcd3Client, EtcdSeqError, Scope.Scope> {
    return Effect.gen(function*() {
      if (typeof options !== "object" || options === null) {
        return yield* new InvalidOptions({ field: "options", reason: "must be an object with endpoints" })
      }
      const endpoints = yield* validateEndpoints(options.endpoints)
      const connectTimeout = yield* validateTimeout("connectTimeout", options.connectTimeout)
      const requestTimeout = yield* validateTimeout("requestTimeout", options.requestTimeout)
      const auth = yield* validateAuth(options.auth)
      const credentials = yield* validateTls(options.tls, endpoints)
      const pacing = yield* validatePacing(options.viewPacing)
      const { api, client } = yield* Etcd3Api.make({ endpoints, auth, credentials, connectTimeout, requestTimeout })
      const shared = yield* Client.make(api, pacing)
      return Client.attach({ endpoints, connectTimeout, requestTimeout, client }, shared)
    })
  }

  /**
   * The client as a layer: acquired when the layer is built, closed when its scope closes.
   *
   * @example
   * ```ts
   * import { Etcd } from "effect-etcdseq"
   *
   * const EtcdLive = Etcd.layer({ endpoints: ["http://127.0.0.1:2379"] })
   * ```
   * @since 0.1.0
   * @category layers
   */
  static layer(options: EtcdOptions): Layer.Layer<Etcd, EtcdSeqError> {
    return Layer.scoped(Etcd, Etcd.make(options))
  }

  /**
   * A client of the in-memory etcd in context (`MemoryEtcd.layer`). Each build of this layer is one more client, as
   * one more process would be, with leases of its own; `MemoryEtcd` can crash it, cut it off, or revoke its leases.
   * Requests time out after 5 seconds of the `Clock` in context.
   *
   * @example
   * ```ts
   * import { Layer } from "effect"
   * import { Etcd, EtcdSeq, MemoryEtcd } from "effect-etcdseq"
   *
   * const TestLive = EtcdSeq.layer({ key: "indexer" }).pipe(
   *   Layer.provide(Etcd.layerMemory),
   *   Layer.provideMerge(MemoryEtcd.layer)
   * )
   * ```
   * @since 0.1.0
   * @category layers
   */
  static readonly layerMemory: Layer.Layer<Etcd, never, MemoryEtcd> = Layer.scoped(
    Etcd,
    Effect.orDie(Etcd.makeMemory())
  )

  /**
   * One more client of the in-memory etcd in context, for the life of the scope (see `layerMemory`). Views are not
   * paced unless `viewPacing` asks for it: under the `TestClock` every change then reaches members without time
   * moving. With pacing, a burst's views go out as the `Clock` in context moves.
   *
   * Errors: `InvalidOptions` for a malformed `viewPacing`.
   *
   * @example
   * ```ts
   * import { Effect } from "effect"
   * import { Etcd, EtcdSeq, MemoryEtcd } from "effect-etcdseq"
   *
   * const joined = Effect.gen(function*() {
   *   const client = yield* Etcd.makeMemory({ viewPacing: { initial: "10 millis", max: "1 second" } })
   *   const seq = yield* EtcdSeq.make({ key: "g" }).pipe(Effect.provideService(Etcd, client))
   *   return yield* seq.current
   * }).pipe(Effect.scoped, Effect.provide(MemoryEtcd.layer))
   * ```
   * @since 0.1.0
   * @category constructors
   */
  static makeMemory(
    options: { readonly viewPacing?: EtcdOptions["viewPacing"] } = {}
  ): Effect.Effect<EtcdClient, InvalidOptions, MemoryEtcd | Scope.Scope> {
    return Effect.gen(function*() {
      const pacing = yield* validatePacing(options.viewPacing ?? false)
      const server = Memory.serverOf(yield* MemoryEtcd)
      const api = server.api(server.connect(), defaultTimeout)
      const shared = yield* Client.make(api, pacing)
      return Client.attach<EtcdClient>(
        { endpoints: api.endpoints, connectTimeout: defaultTimeout, requestTimeout: defaultTimeout },
        shared
      )
    })
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
   * import { Etcd } from "effect-etcdseq"
   *
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
  // Node's timers hold at most 2^31 - 1 ms (24.8 days): past it every timer fires at once, and every request with it.
  if (Duration.greaterThan(duration.value, maxTimeout)) {
    return Effect.fail(new InvalidOptions({ field, reason: `must be at most ${Duration.format(maxTimeout)}` }))
  }
  return Effect.succeed(duration.value)
}

const maxTimeout = Duration.hours(1)

const defaultPacing = { initial: Duration.millis(10), max: Duration.seconds(1) }

const validatePacing = (
  input: EtcdOptions["viewPacing"]
): Effect.Effect<
  { readonly initial: Duration.Duration; readonly max: Duration.Duration } | undefined,
  InvalidOptions
> =>
  Effect.gen(function*() {
    if (input === false) return undefined
    if (input === undefined) return defaultPacing
    if (typeof input !== "object" || input === null) {
      return yield* new InvalidOptions({ field: "viewPacing", reason: "must be false or { initial, max }" })
    }
    const initial = input.initial === undefined
      ? defaultPacing.initial
      : yield* validateTimeout("viewPacing.initial", input.initial)
    const max = input.max === undefined ? Duration.max(defaultPacing.max, initial) : yield* validateTimeout(
      "viewPacing.max",
      input.max
    )
    if (Duration.lessThan(max, initial)) {
      return yield* new InvalidOptions({ field: "viewPacing.max", reason: "must be at least viewPacing.initial" })
    }
    return { initial, max }
  })

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
