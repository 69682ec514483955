/**
 * The etcd client as a scoped service: over a real etcd (`make`, `layer`, `layerConfig`) or over the in-memory etcd of
 * `MemoryEtcd` (`layerMemory`).
 *
 * @since 0.1.0
 */
import { Config, Context, type Duration, Effect, Layer, Option, Redacted, type Scope } from "effect"
import type { ConfigError } from "effect/ConfigError"
import type { EtcdRequestFailed, EtcdSeqError, EtcdUnavailable, InvalidOptions } from "./EtcdSeqError.js"
import * as Client from "./internal/client.js"
import * as Etcd3Api from "./internal/etcd/etcd3.js"
import type { Etcd3 } from "./internal/etcd/etcd3.js"
import * as Memory from "./internal/etcd/memory.js"
import * as Options from "./internal/etcd/options.js"
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

// EtcdClient's shape is internal/client.ts's, which MemoryEtcd.ts shares without importing this module.
/**
 * The service: a client of one etcd, connected and proven. The members of a group that share one client share its
 * watch of the group and its lease (one per TTL).
 *
 * - `endpoints`: where its requests go, the endpoints it was given, or `memory://client-<n>` for a client of
 *   `MemoryEtcd`;
 * - `connectTimeout`, `requestTimeout`: its bounds, as `Duration`s;
 * - `client`: the `etcd3` client behind it, for requests of your own; absent on a client of `MemoryEtcd`.
 *
 * @since 0.1.0
 * @category models
 */
export interface EtcdClient extends Client.EtcdClient {} // eslint-disable-line @typescript-eslint/no-empty-object-type

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
  static make(
    options: EtcdOptions
  ): Effect.Effect<Etcd3Client, InvalidOptions | EtcdUnavailable | EtcdRequestFailed, Scope.Scope> {
    return Effect.gen(function*() {
      const { pacing, settings } = yield* Options.decode(options)
      const { api, client } = yield* Etcd3Api.make(settings)
      const shared = yield* Client.make(api, pacing)
      const { connectTimeout, endpoints, requestTimeout } = settings
      return Client.attach<Etcd3Client>({ endpoints, connectTimeout, requestTimeout, client }, shared)
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
  static layer(options: EtcdOptions): Layer.Layer<Etcd, InvalidOptions | EtcdUnavailable | EtcdRequestFailed> {
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
      const pacing = yield* Options.validatePacing(options.viewPacing ?? false)
      const server = Memory.serverOf(yield* MemoryEtcd)
      const timeout = Options.defaultTimeout
      const api = server.api(server.connect(), timeout)
      const shared = yield* Client.make(api, pacing)
      return Client.attach<EtcdClient>(
        { endpoints: api.endpoints, connectTimeout: timeout, requestTimeout: timeout },
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
    auth: Config.all([Config.option(Config.string("ETCD_USERNAME")), Config.option(Config.redacted("ETCD_PASSWORD"))])
      .pipe(Config.map(([username, password]) =>
        Option.isSome(username)
          ? { username: username.value, password: Option.getOrElse(password, () => Redacted.make("")) }
          : undefined
      )),
    connectTimeout: optionalDuration("ETCD_CONNECT_TIMEOUT"),
    requestTimeout: optionalDuration("ETCD_REQUEST_TIMEOUT")
  })

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

function optionalDuration(name: string): Config.Config<Duration.Duration | undefined> {
  return Config.option(Config.duration(name)).pipe(Config.map(Option.getOrUndefined))
}
