/**
 * The connection flags every subcommand takes, and the `Etcd` client they make. Files (password, TLS material) are
 * read with the platform's `FileSystem`; a file that cannot be read is a usage error naming the flag.
 */
import { Options } from "@effect/cli"
import { FileSystem } from "@effect/platform"
import { Config, Duration, Effect, Layer, Option, Redacted } from "effect"
import { Etcd } from "../Etcd.js"
import type { EtcdSeqError } from "../EtcdSeqError.js"
import { CliExit, ExitCode } from "./exit.js"
import { durationOption } from "./flags.js"

export const connectionOptions = {
  endpoints: Options.text("endpoints").pipe(
    Options.withDescription("etcd endpoints, comma separated (default: ETCD_ENDPOINTS, then http://127.0.0.1:2379)"),
    Options.withFallbackConfig(Config.string("ETCD_ENDPOINTS")),
    Options.withDefault("http://127.0.0.1:2379")
  ),
  user: Options.text("user").pipe(Options.withDescription("etcd user name"), Options.optional),
  passwordFile: Options.text("password-file").pipe(
    Options.withDescription("a file holding the etcd user's password"),
    Options.optional
  ),
  cacert: Options.text("cacert").pipe(
    Options.withDescription("CA certificate (PEM) that verifies etcd"),
    Options.optional
  ),
  cert: Options.text("cert").pipe(Options.withDescription("client certificate (PEM)"), Options.optional),
  key: Options.text("key").pipe(Options.withDescription("client certificate's private key (PEM)"), Options.optional),
  connectTimeout: durationOption("connect-timeout", "how long to wait for etcd to answer at first").pipe(
    Options.withDefault(Duration.seconds(5))
  )
}

export interface Connection {
  readonly endpoints: string
  readonly user: Option.Option<string>
  readonly passwordFile: Option.Option<string>
  readonly cacert: Option.Option<string>
  readonly cert: Option.Option<string>
  readonly key: Option.Option<string>
  readonly connectTimeout: Duration.Duration
}

const readFile = (fs: FileSystem.FileSystem, flag: string, path: Option.Option<string>) =>
  Option.match(path, {
    onNone: () => Effect.succeed(undefined),
    onSome: (p) =>
      fs.readFile(p).pipe(
        Effect.map((bytes) => Buffer.from(bytes)),
        Effect.mapError((e) => new CliExit({ code: ExitCode.usage, line: `cannot read --${flag} ${p}: ${e.message}` }))
      )
  })

/** The client the flags describe, proven reachable within the connect timeout (as `Etcd.layer` does). */
export const etcdLayer = (c: Connection): Layer.Layer<Etcd, EtcdSeqError | CliExit, FileSystem.FileSystem> =>
  Layer.scoped(Etcd, Effect.flatMap(options(c), Etcd.make))

const options = (c: Connection) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const password = yield* readFile(fs, "password-file", c.passwordFile)
    if (Option.isSome(c.user) && password === undefined) {
      return yield* new CliExit({ code: ExitCode.usage, line: "--user needs --password-file" })
    }
    const [rootCertificate, certChain, privateKey] = [
      yield* readFile(fs, "cacert", c.cacert),
      yield* readFile(fs, "cert", c.cert),
      yield* readFile(fs, "key", c.key)
    ]
    const tls = rootCertificate === undefined && certChain === undefined && privateKey === undefined
      ? undefined
      : { rootCertificate, certChain, privateKey: privateKey === undefined ? undefined : Redacted.make(privateKey) }
    return {
      endpoints: c.endpoints.split(",").map((e) => e.trim()).filter((e) => e !== ""),
      auth: Option.isSome(c.user)
        ? { username: c.user.value, password: Redacted.make(password!.toString("utf8").replace(/\r?\n$/, "")) }
        : undefined,
      tls,
      connectTimeout: c.connectTimeout
    }
  })
