/**
 * One member in a process of its own, so a test can SIGKILL it like a crashed pod.
 *
 *   node --import tsx test/support/member-process.ts --endpoints http://127.0.0.1:2379,... --group test/x --ttl "3 seconds"
 *
 * stdout carries one JSON object per line and nothing else (logs go to stderr):
 *   {"event":"info","index":0,"count":3,"revision":12,"at":1700000000000}   every Info `changes` emits
 *   {"event":"error","message":"..."}                                         joining failed or `changes` failed
 *   {"event":"done","at":...}                                                the scope is closed
 * With `--shards N` it also runs `EtcdSeq.runShards` over N shards, each shard's work printing its run (`mono`: the
 * machine's CLOCK_MONOTONIC in ms, comparable across processes); `--stop-millis` is how long a work takes to stop:
 *   {"event":"shard","phase":"start","shard":3,"fence":41,"mono":123456.7}
 *   {"event":"shard","phase":"stop","shard":3,"fence":41,"mono":123789.1}
 *
 * With `--exclusive none|index|group` it runs `EtcdSeq.runAssigned` in that mode, each run printed the same way:
 *   {"event":"run","phase":"start","index":1,"count":3,"fence":41,"mono":123456.7}
 * `--instance <name>` gives the member an instance (`--keep-place-on-leave`: its leave parks the place); an error
 * line carries the error's tag (`InstanceTaken`).
 *
 * With `--join-on-stdin` it connects and prints `{"event":"ready"}`, then joins only once a line `join` comes on stdin:
 * a restart whose new process is started beforehand, so that the time between the old one's leave and the new one's
 * join is the join's, not Node's start (several seconds on a loaded machine).
 *
 * A line `leave` on stdin (or stdin closing: the parent is gone) closes the member's scope. The process then ends
 * on its own, without `process.exit`: if a watcher, a timer or a socket were left behind it would keep running,
 * which is what the leak test looks for.
 */
import { Deferred, type Duration, Effect, Exit, Logger, LogLevel, Stream } from "effect"
import * as readline from "node:readline"
import { Etcd, EtcdSeq, Info } from "../../src/index.js"

const argument = (name: string): string | undefined => {
  const at = process.argv.indexOf(`--${name}`)
  return at >= 0 ? process.argv[at + 1] : undefined
}

const print = (line: Record<string, unknown>) => process.stdout.write(JSON.stringify(line) + "\n")

const endpoints = (argument("endpoints") ?? "http://127.0.0.1:2379").split(",")
const group = argument("group") ?? "test/member-process"
const ttl = (argument("ttl") ?? "3 seconds") as Duration.DurationInput
const shards = argument("shards") === undefined ? undefined : Number(argument("shards"))
const stopMillis = Number(argument("stop-millis") ?? 0)
const instance = argument("instance")
const keepPlaceOnLeave = process.argv.includes("--keep-place-on-leave")
const exclusive = argument("exclusive") as "none" | "index" | "group" | undefined
const joinOnStdin = process.argv.includes("--join-on-stdin")
const mono = () => Number(process.hrtime.bigint()) / 1e6

// Where each timer still pending was set, to say what holds the process if it does not end.
const timers = new Map<NodeJS.Timeout, string>()
const originalSetTimeout = globalThis.setTimeout
globalThis.setTimeout = ((callback: (...args: Array<unknown>) => void, ms?: number, ...args: Array<unknown>) => {
  const timer: NodeJS.Timeout = originalSetTimeout(() => {
    timers.delete(timer)
    callback(...args)
  }, ms)
  if ((ms ?? 0) >= 500) timers.set(timer, `${ms} ms: ${new Error().stack?.split("\n").slice(2, 7).join(" <- ")}`)
  return timer
}) as typeof setTimeout
const originalClearTimeout = globalThis.clearTimeout
globalThis.clearTimeout = ((timer: NodeJS.Timeout | undefined) => {
  if (timer !== undefined) timers.delete(timer)
  originalClearTimeout(timer)
}) as typeof clearTimeout

const program = Effect.gen(function*() {
  const leave = yield* Deferred.make<void>()
  const join = yield* Deferred.make<void>()
  if (!joinOnStdin) Deferred.unsafeDone(join, Exit.void)
  const lines = readline.createInterface({ input: process.stdin })
  lines.on("line", (line) => {
    if (line.trim() === "leave") Deferred.unsafeDone(leave, Exit.void)
    if (line.trim() === "join") Deferred.unsafeDone(join, Exit.void)
  })
  lines.on("close", () => Deferred.unsafeDone(leave, Exit.void))

  yield* Effect.scoped(Effect.gen(function*() {
    const etcd = yield* Etcd.make({ endpoints })
    if (joinOnStdin) print({ event: "ready" })
    yield* Deferred.await(join)
    const seq = yield* EtcdSeq.make({ key: group, ttl, instance, keepPlaceOnLeave }).pipe(
      Effect.provideService(Etcd, etcd)
    )
    const failed = (error: { readonly _tag: string }) =>
      Effect.sync(() => print({ event: "error", tag: error._tag, message: String(error) }))
    yield* seq.changes.pipe(
      Stream.runForEach((info) =>
        Effect.sync(() =>
          print({
            event: "info",
            index: info.index,
            count: info.count,
            revision: Info.isValid(info) ? info.revision : 0,
            at: Date.now()
          })
        )
      ),
      Effect.catchAll(failed),
      Effect.forkScoped
    )
    const stopping = (line: Record<string, unknown>) =>
      Effect.sleep(stopMillis).pipe(Effect.zipRight(Effect.sync(() => print({ ...line, phase: "stop", mono: mono() }))))
    if (exclusive !== undefined) {
      yield* EtcdSeq.runAssigned((a) => {
        const line = { event: "run", index: a.info.index, count: a.info.count, fence: a.fence }
        return Effect.acquireRelease(
          Effect.sync(() => print({ ...line, phase: "start", mono: mono() })),
          () => stopping(line)
        ).pipe(Effect.zipRight(Effect.never))
      }, { exclusive }).pipe(
        Effect.provideService(EtcdSeq, seq),
        Effect.catchAll(failed),
        Effect.forkScoped
      )
    }
    if (shards !== undefined) {
      yield* EtcdSeq.runShards({ shards }, (shard) =>
        Effect.acquireRelease(
          Effect.sync(() =>
            print({ event: "shard", phase: "start", shard: shard.id, fence: shard.fence, mono: mono() })
          ),
          () => stopping({ event: "shard", shard: shard.id, fence: shard.fence })
        ).pipe(Effect.zipRight(Effect.never))).pipe(
          Effect.provideService(EtcdSeq, seq),
          Effect.catchAll(failed),
          Effect.forkScoped
        )
    }
    yield* Deferred.await(leave)
  })).pipe(
    // Stdin must not keep the process alive once the member is gone.
    Effect.ensuring(Effect.sync(() => {
      lines.close()
      process.stdin.destroy()
    }))
  )
  print({ event: "done", at: Date.now() })
  // If the process is still alive a while later, say what holds it (this timer itself does not).
  setTimeout(() => {
    process.stderr.write(
      `still alive after leaving; active resources: ${process.getActiveResourcesInfo().join(", ")}\n`
    )
    for (const [timer, stack] of timers) {
      if (timer.hasRef()) process.stderr.write(`ref'd timer from ${stack}\n`)
    }
  }, 3_000).unref()
})

Effect.runPromiseExit(
  program.pipe(
    Effect.provide(Logger.replace(Logger.defaultLogger, Logger.withConsoleError(Logger.logfmtLogger))),
    Logger.withMinimumLogLevel(LogLevel.Info)
  )
).then((exit) => {
  if (Exit.isFailure(exit)) {
    print({ event: "error", message: String(exit.cause) })
    process.exitCode = 1
  }
})
