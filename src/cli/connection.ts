/**
 * The `Etcd` client the connection flags (flags.ts) describe. Files (password, TLS material) are read with the
 * platform's `FileSystem`; a file that cannot be read is a usage error naming the flag.
 */
import * as FileSystem from "@effect/platform/FileSystem"
import { type Duration, Effect, Layer, Option, Redacted } from "effect"
import { Etcd } from "../Etcd.js"
import type { EtcdSeqError } from "../EtcdSeqError.js"
import { CliExit, ExitCode } from "./exit.js"
import { flags } from "./help.js"

export interface Connection {
  /** none: neither `--endpoints` nor `ETCD_ENDPOINTS` was given. */
  readonly endpoints: Option.Option<string>
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

/**
 * The client the flags describe, proven reachable within the connect timeout (as `Etcd.layer` does). When no endpoint
 * was given, an unreachable etcd's line says that the default was used, and where to set another.
 */
export const etcdLayer = (c: Connection): Layer.Layer<Etcd, EtcdSeqError | CliExit, FileSystem.FileSystem> =>
  Layer.scoped(
    Etcd,
    Effect.flatMap(options(c), Etcd.make).pipe(
      Effect.mapError((e) =>
        e._tag === "EtcdUnavailable" && Option.isNone(c.endpoints)
          ? new CliExit({
            code: ExitCode.etcdUnavailable,
            line: `${e.message} (the default endpoint: set --endpoints or ETCD_ENDPOINTS)`,
            error: e.error
          })
          : e
      )
    )
  )

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
      endpoints: Option.getOrElse(c.endpoints, () => flags.endpoints.default).split(",").map((e) => e.trim()).filter((
        e
      ) => e !== ""),
      auth: Option.isSome(c.user)
        ? { username: c.user.value, password: Redacted.make(password!.toString("utf8").replace(/\r?\n$/, "")) }
        : undefined,
      tls,
      connectTimeout: c.connectTimeout
    }
  })
