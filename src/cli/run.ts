/**
 * `etcdseq run`: joins a group and runs a command once per assignment, with the assignment in its environment. The
 * child runs as the leader of a process group of its own; the group is stopped (SIGTERM, then SIGKILL to the whole
 * group after `--grace`, and waited for until no process of it is left) before the next assignment's child starts,
 * when the member goes invalid, and when `etcdseq run` itself is stopped (SIGINT, SIGTERM: it then leaves the group
 * and exits). A child that exits 0 waits for the next assignment; one that exits otherwise ends `etcdseq run` with
 * its code, after the leave. Stopped by SIGINT or SIGTERM, the member drains first (`--drain-timeout`). On Linux
 * the child is started under `setpriv --pdeathsig KILL`, so it dies with a SIGKILLed wrapper too.
 */
import * as Args from "@effect/cli/Args"
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import * as ChildCommand from "@effect/platform/Command"
import * as FileSystem from "@effect/platform/FileSystem"
import { Console, Duration, Effect, Exit, Layer, Option } from "effect"
import { constants } from "node:os"
import type { Assignment } from "../Assignment.js"
import { EtcdSeq } from "../EtcdSeq.js"
import { Info } from "../Info.js"
import * as Bounded from "../internal/bounded.js"
import { fencingMargin } from "../internal/leaseTiming.js"
import * as Source from "../internal/source.js"
import { type Connection, etcdLayer } from "./connection.js"
import { CliExit, ExitCode } from "./exit.js"
import * as Flags from "./flags.js"
import { flags } from "./help.js"
import * as ProcessGroup from "./processGroup.js"

const say = (line: string) => Console.error(`etcdseq run: ${line}`)

const setpriv = "/usr/bin/setpriv"

interface Settings {
  readonly group: string
  readonly ttl: Duration.Duration
  readonly grace: Duration.Duration
  readonly command: string
  readonly args: ReadonlyArray<string>
  readonly instance: Option.Option<string>
  readonly pdeathsig: boolean
}

/** The signal number a child died of, from the platform's message, as a shell reports it: 128 + n. */
const signalExit = (message: string): number => {
  const name = /signal: (SIG[A-Z0-9]+)/.exec(message)?.[1]
  const number = name === undefined ? undefined : (constants.signals as Record<string, number>)[name]
  return number === undefined ? ExitCode.failed : 128 + number
}

/**
 * The grace a stop gives the child now. A member that is invalid while its membership is open was fenced (or lost
 * its lease): its lease may expire at etcd a fencing margin after the fence, and a successor start then, so the child
 * gets half that margin (the stop started a little after the fence, and the SIGKILL and the wait for the group take
 * the other half). Otherwise (a new assignment, a leave, the instance taken) the member's keys hold its place until
 * the child is gone, and it gets the whole `--grace`.
 */
const graceNow = (settings: Settings) =>
  Effect.gen(function*() {
    const source = Source.libraryOf(yield* EtcdSeq)
    const latest = source === undefined ? undefined : yield* source.current
    return latest?._tag === "Info" && !Info.isValid(latest.info)
      ? Duration.min(settings.grace, Duration.times(fencingMargin(settings.ttl), 0.5))
      : settings.grace
  })

/** One run of the command for one assignment. */
const runOnce = (settings: Settings, a: Assignment) =>
  Effect.gen(function*() {
    const { count, index, revision } = a.info
    const argv = settings.pdeathsig
      ? [setpriv, "--pdeathsig", "KILL", "--", settings.command, ...settings.args]
      : [settings.command, ...settings.args]
    const child = yield* Effect.acquireRelease(
      ChildCommand.make(argv[0]!, ...argv.slice(1)).pipe(
        ChildCommand.env({
          ETCDSEQ_GROUP: settings.group,
          ETCDSEQ_INDEX: String(index),
          ETCDSEQ_COUNT: String(count),
          ETCDSEQ_FENCE: String(a.fence),
          ETCDSEQ_REVISION: String(revision),
          // With --exclusive index: the run's lock key, whose create revision is the fence. A child's etcd writes that
          // compare it in their transaction fail once the lock is lost (the docs' `etcdctl txn`).
          ...(a.lockKey === undefined ? {} : { ETCDSEQ_LOCK_KEY: a.lockKey }),
          ...Option.match(settings.instance, { onNone: () => ({}), onSome: (i) => ({ ETCDSEQ_INSTANCE: i }) })
        }),
        // An empty stdin: a child that reads it gets EOF at once rather than waiting on a pipe nobody writes.
        ChildCommand.feed(""),
        ChildCommand.stdout("inherit"),
        ChildCommand.stderr("inherit"),
        ChildCommand.start,
        Effect.mapError((e) =>
          new CliExit({
            code: /EACCES/.test(e.message) ? ExitCode.cannotExecute : ExitCode.notFound,
            line: `cannot start ${settings.command}: ${e.message}`
          })
        )
      ),
      (child) =>
        Effect.flatMap(graceNow(settings), (grace) =>
          // The child's pid is its process group's id: it was started as the leader of a group of its own.
          ProcessGroup.stop(child.pid, grace, say))
    )
    yield* say(
      `${index}/${count} (revision ${revision}, fence ${a.fence}): started ${settings.command} as pid ${child.pid}`
    )
    const code = yield* child.exitCode.pipe(
      Effect.catchAll((e) => Effect.succeed(signalExit(e.message)))
    )
    if (code === 0) {
      return yield* say(`pid ${child.pid} exited with 0; waiting for the next assignment`)
    }
    yield* say(`pid ${child.pid} exited with ${code}; leaving the group`)
    return yield* new CliExit({ code })
  })

/**
 * On SIGINT or SIGTERM (the program interrupted), before the member leaves: it drains (`EtcdSeq.drain`) for at most
 * `timeout` (none when zero), so that a sharded group's shards move to the others while this member still holds its
 * place. Added after the membership, so run before its leave.
 */
const drainOnStop = (timeout: Duration.Duration) =>
  Layer.scopedDiscard(Effect.addFinalizer((exit) =>
    !Exit.isInterrupted(exit) || Duration.toMillis(timeout) === 0
      ? Effect.void
      : say(`draining before the leave (at most ${Duration.format(timeout)})`).pipe(
        Effect.zipRight(EtcdSeq.drain.pipe(Bounded.timeoutOption(timeout))),
        Effect.flatMap((done) =>
          say(Option.isSome(done) ? "drained" : `not drained within ${Duration.format(timeout)}; leaving anyway`)
        ),
        Effect.catchAll((e) => say(`drain failed (${e.message}); leaving`))
      )
  ))

/** The member, its runner, and the end: a child's failure or the member's error ends the command. */
const runMember = (
  connection: Connection,
  settings: Settings,
  options: {
    readonly ttl: Duration.Duration
    readonly exclusive: "none" | "index" | "group"
    readonly metadata: Option.Option<string>
    readonly keepPlaceOnLeave: boolean
    readonly weight: number
    readonly drainTimeout: Duration.Duration
  }
) =>
  EtcdSeq.runAssigned((a) => runOnce(settings, a), { exclusive: options.exclusive }).pipe(
    Effect.provide(
      Layer.provideMerge(
        drainOnStop(options.drainTimeout),
        EtcdSeq.layer({
          key: settings.group,
          ttl: options.ttl,
          instance: Option.getOrUndefined(settings.instance),
          metadata: Option.getOrUndefined(options.metadata),
          keepPlaceOnLeave: options.keepPlaceOnLeave,
          weight: options.weight
        })
      ).pipe(Layer.provide(etcdLayer(connection)))
    )
  )

export const run = Command.make(
  "run",
  {
    ...Flags.connection,
    group: Flags.group,
    ttl: Flags.durationOrDefault(flags.ttl),
    exclusive: Flags.choice(flags.exclusive, ["none", "index", "group"]),
    instance: Flags.optional(flags.instance),
    keepPlaceOnLeave: Flags.boolean(flags.keepPlaceOnLeave),
    metadata: Flags.optional(flags.metadata),
    weight: Flags.numberOrEnv(flags.weight),
    grace: Flags.duration(flags.grace).pipe(Options.optional),
    drainTimeout: Flags.duration(flags.drainTimeout).pipe(Options.optional),
    command: Flags.command,
    args: Args.text({ name: "args" }).pipe(Args.repeated)
  },
  (o) =>
    Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const pdeathsig = process.platform === "linux" &&
        (yield* fs.exists(setpriv).pipe(Effect.orElseSucceed(() => false)))
      // A leave waits at most the TTL for the child to stop before it deletes the member's keys: a longer grace would
      // let the successor's child start beside this one's.
      const grace = Option.getOrElse(o.grace, () => Duration.times(o.ttl, 0.5))
      if (!Duration.lessThan(grace, o.ttl)) {
        return yield* new CliExit({
          code: ExitCode.usage,
          line: `--grace ${Duration.format(grace)}: must be shorter than --ttl ${
            Duration.format(o.ttl)
          } (a leave waits at most the TTL for the child to stop)`
        })
      }
      const settings: Settings = {
        group: o.group,
        ttl: o.ttl,
        grace,
        command: o.command,
        args: o.args,
        instance: o.instance,
        pdeathsig
      }
      return yield* runMember(o, settings, {
        ttl: o.ttl,
        exclusive: o.exclusive,
        metadata: o.metadata,
        keepPlaceOnLeave: o.keepPlaceOnLeave,
        weight: o.weight,
        // Half the TTL by default, as the grace: a drain of a member that runs no shards ends as soon as the group
        // has seen its request; a sharded one's as its shards are started elsewhere.
        drainTimeout: Option.getOrElse(o.drainTimeout, () => Duration.times(o.ttl, 0.5))
      })
    })
)
