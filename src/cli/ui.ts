/**
 * `etcdseq ui`: a live page of a group, served over HTTP (ui/server.ts) from one observe of the group (ui/feed.ts).
 * Read-only, and loopback only unless `--listen-any`: the page has no login (ui/listen.ts says why).
 */
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import { Console, Effect, Either, Stream } from "effect"
import { Etcd } from "../Etcd.js"
import { EtcdSeq } from "../EtcdSeq.js"
import * as Client from "../internal/client.js"
import * as Keys from "../internal/keys.js"
import { etcdLayer } from "./connection.js"
import { CliExit, ExitCode } from "./exit.js"
import * as Flags from "./flags.js"
import { flags as help } from "./help.js"
import * as Feed from "./ui/feed.js"
import { isLoopback, type Listen, parseListen, urlOf } from "./ui/listen.js"
import { serve } from "./ui/server.js"

const usage = (line: string) => new CliExit({ code: ExitCode.usage, line })

/** One read of the group's key: it fails with `EtcdUnavailable` while etcd does not answer. */
const probe = (group: string) =>
  Effect.gen(function*() {
    const shared = yield* Client.required(yield* Etcd)
    yield* shared.api.range({ target: { key: group }, keysOnly: true, limit: 1 })
  })

export const ui = Command.make(
  "ui",
  {
    ...Flags.connection,
    group: Flags.group,
    listen: Options.text(help.listen.name).pipe(Options.withDefault(help.listen.default)),
    listenAny: Flags.boolean(help.listenAny)
  },
  (o) =>
    Effect.gen(function*() {
      const problem = Keys.invalidGroup(o.group)
      if (problem !== undefined) return yield* usage(`--group: ${problem}`)
      const listen = yield* Either.mapLeft(parseListen(o.listen), (reason) => usage(`--listen: ${reason}`))
      if (!o.listenAny && !isLoopback(listen.host)) {
        return yield* usage(
          `--listen: ${listen.host} is not a loopback address; the page has no login: add --listen-any to serve it there`
        )
      }
      return yield* serveGroup(o.group, listen, o.listenAny, o.listen).pipe(Effect.scoped, Effect.provide(etcdLayer(o)))
    })
)

/** The feed and the server, for the life of the scope: prints the URL, then serves until interrupted. */
const serveGroup = (group: string, listen: Listen, anyHost: boolean, asked: string) =>
  Effect.gen(function*() {
    const etcd = yield* Etcd
    const feed = yield* Feed.make({
      views: EtcdSeq.observe(group).pipe(Stream.provideService(Etcd, etcd)),
      probe: probe(group).pipe(Effect.provideService(Etcd, etcd))
    })
    const bound = yield* serve({ group, feed, listen, anyHost }).pipe(
      Effect.mapError((e) =>
        new CliExit({ code: ExitCode.failed, line: `cannot listen on ${asked}: ${String(e.cause)}`, error: e })
      )
    )
    yield* Console.log(`etcdseq ui: group ${group} at ${urlOf(bound)}`)
    return yield* Effect.never
  })
