/**
 * The etcd client as a scoped service.
 *
 * @since 0.1.0
 */
import { Config, Context, Duration, Effect, Layer, Option, RcMap, Redacted, type Scope } from "effect"
import type { ConfigError } from "effect/ConfigError"
import { Etcd3 } from "etcd3"
import { EtcdUnavailable, InvalidOptions } from "./EtcdSeqError.js"
import type { EtcdSeqError } from "./EtcdSeqError.js"
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
            // Every unary request carries a deadline; streams (watch, keepalive) set their own.
            defaultCallOptions: (context) =>
              context.isStream ? {} : { deadline: Date.now() + Duration.toMillis(requestTimeout) }
          })
        ),
        (client) => Effect.sync(() => client.close())
      )
      const connection: Connection = { client, endpoints, requestTimeout }

      yield* Effect.tryPromise({
        try: () => client.maintenance.status({ deadline: Date.now() + Duration.toMillis(connectTimeout) }),
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
      return { client, endpoints, connectTimeout, requestTimeout, groups }
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
