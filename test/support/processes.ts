/**
 * Members in child processes (the fixture `member-process.ts`), held by pid: their Infos read line by line from
 * stdout, `leave` for a graceful end, `crash` for SIGKILL, the way a pod dies.
 *
 * Every child is tied to a `Scope` (SIGKILLed when it closes, if still running) and, as a last resort, SIGKILLed by
 * a `process.once("exit")` hook, so no member outlives the test run.
 */
import { Duration, Effect, Option, type Scope, Stream, SubscriptionRef } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import { readdirSync, readFileSync } from "node:fs"
import * as path from "node:path"
import * as readline from "node:readline"
import { fileURLToPath } from "node:url"

const fixture = fileURLToPath(new URL("./member-process.ts", import.meta.url))
const root = path.resolve(path.dirname(fixture), "../..")

/** One line of the fixture's stdout. */
export type MemberEvent =
  | {
    readonly event: "info"
    readonly index: number
    readonly count: number
    readonly revision: number
    /** When the child emitted it (`Date.now()` there; same machine, same clock). */
    readonly at: number
  }
  | {
    readonly event: "shard"
    readonly phase: "start" | "stop"
    readonly shard: number
    readonly fence: number
    /** CLOCK_MONOTONIC in ms (`process.hrtime`): comparable across the machine's processes. */
    readonly mono: number
  }
  | {
    readonly event: "run"
    readonly phase: "start" | "stop"
    readonly index: number
    readonly count: number
    readonly fence: number
    readonly mono: number
  }
  | {
    /** A guarded write of `fence-member.ts`, once it ended: committed, refused (`stale`), or failed otherwise. */
    readonly event: "write"
    readonly member: string
    readonly resource: string
    readonly shard: number
    readonly fence: number
    readonly seq: number
    readonly outcome: "committed" | "stale" | "failed"
    readonly message?: string
    /** When its transaction began and when it ended (CLOCK_MONOTONIC, ms). */
    readonly began: number
    readonly mono: number
  }
  | {
    /** A guarded write of `fence-member.ts` as it begins (its `write` line follows when it ends). */
    readonly event: "begin"
    readonly member: string
    readonly shard: number
    readonly fence: number
    readonly seq: number
    readonly began: number
  }
  | { readonly event: "error"; readonly message: string; readonly tag?: string }
  | { readonly event: "done"; readonly at: number }
  /** With `joinOnRequest`: connected, waiting for `join`. */
  | { readonly event: "ready" }

export type InfoEvent = Extract<MemberEvent, { event: "info" }>

interface ProcessExit {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
  readonly at: number
  /** When the parent saw it end, on CLOCK_MONOTONIC (as the shard events' `mono`). */
  readonly mono: number
}

export interface MemberProcess {
  readonly pid: number
  /** Every line the member printed so far. */
  readonly events: Effect.Effect<ReadonlyArray<MemberEvent>>
  /** Its Infos so far, as `index/count` or `invalid`. */
  readonly infos: Effect.Effect<ReadonlyArray<string>>
  /** Waits on the member's own lines until its latest Info satisfies `predicate`; dies after `within`. */
  readonly waitFor: (
    predicate: (info: InfoEvent) => boolean,
    within: Duration.DurationInput,
    what?: string
  ) => Effect.Effect<InfoEvent>
  /** With `joinOnRequest`: asks it to join, and waits for its first valid Info (bounded like the spawn's join). */
  readonly join: Effect.Effect<void>
  /** Asks it to close its scope; the process must then end by itself. */
  readonly leave: Effect.Effect<void>
  /** SIGKILL, and wait until the process is gone. */
  readonly crash: Effect.Effect<ProcessExit>
  /** Waits up to `within` for the process to end on its own. */
  readonly exit: (within: Duration.DurationInput) => Effect.Effect<Option.Option<ProcessExit>>
  /** Last lines of its stderr (its logs), for failure messages. */
  readonly stderr: () => string
}

const children = new Set<ChildProcess>()
let exitHookInstalled = false

const installExitHook = () => {
  if (exitHookInstalled) return
  exitHookInstalled = true
  process.once("exit", () => {
    for (const child of children) {
      try {
        child.kill("SIGKILL")
      } catch {
        // already gone
      }
    }
  })
}

/** The state letter and process group of a pid from `/proc/<pid>/stat` (Linux), or undefined when there is none. */
const procStat = (pid: number): { readonly state: string; readonly pgrp: number } | undefined => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8")
    // `pid (comm) state ppid pgrp ...`: comm may hold spaces and parentheses.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
    return { state: fields[0] ?? "", pgrp: Number(fields[2]) }
  } catch {
    return undefined
  }
}

/**
 * True when no live process with this pid is left. On Linux a zombie counts as gone: it is dead, only not reaped, and
 * pid 1 here reaps nobody, so an orphan (a grandchild whose parent died) killed stays a zombie for good, and a signal
 * 0 would still find it.
 */
export const pidIsGone = (pid: number): boolean => {
  if (process.platform === "linux") {
    const stat = procStat(pid)
    return stat === undefined || stat.state === "Z" || stat.state === "X"
  }
  try {
    process.kill(pid, 0)
    return false
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "ESRCH"
  }
}

/** The live (not zombie) processes of process group `pgid`, from /proc (Linux only). */
export const liveGroupPids = (pgid: number): Array<number> =>
  readdirSync("/proc").filter((e) => /^[0-9]+$/.test(e)).map(Number).filter((pid) => {
    const stat = procStat(pid)
    return stat !== undefined && stat.pgrp === pgid && stat.state !== "Z" && stat.state !== "X"
  })

const infoString = (info: InfoEvent): string => info.index < 0 ? "invalid" : `${info.index}/${info.count}`

/**
 * Starts a member in a child process (`node --import tsx test/support/member-process.ts`) and waits for its first
 * valid Info (it joined). The child is SIGKILLed when the scope closes, if it is still running.
 */
export const spawnMember = (options: {
  readonly endpoints: ReadonlyArray<string>
  readonly group: string
  readonly ttl: Duration.DurationInput
  /** Bound on starting node + tsx and joining; the machine may be loaded. Default 20 s. */
  readonly joinWithin?: Duration.DurationInput
  /** Runs `EtcdSeq.runShards` over this many shards too, printing each shard's runs. */
  readonly shards?: number
  /** Runs `EtcdSeq.runAssigned` in this mode too, printing each run. */
  readonly exclusive?: "none" | "index" | "group"
  /** How long a shard's or a run's work takes to stop. */
  readonly stopMillis?: number
  readonly instance?: string
  readonly keepPlaceOnLeave?: boolean
  /**
   * Starts the process and connects it, but joins only on `join`: a restart whose new process is ready beforehand,
   * so that the old one's leave and the new one's join are not apart by Node's start (seconds on a loaded machine).
   */
  readonly joinOnRequest?: boolean
  /** Another fixture than `member-process.ts` that prints the same lines (`fence-member.ts`), and its own flags. */
  readonly fixture?: { readonly path: string; readonly args: ReadonlyArray<string> }
}): Effect.Effect<MemberProcess, never, Scope.Scope> =>
  Effect.gen(function*() {
    const events = yield* SubscriptionRef.make<ReadonlyArray<MemberEvent>>([])
    const stderrLines: Array<string> = []
    const { child, exited } = yield* Effect.acquireRelease(
      Effect.sync(() => {
        installExitHook()
        const child = spawn(
          process.execPath,
          [
            "--import",
            "tsx",
            options.fixture?.path ?? fixture,
            ...(options.fixture?.args ?? []),
            "--endpoints",
            options.endpoints.join(","),
            "--group",
            options.group,
            "--ttl",
            `${Duration.toMillis(Duration.decode(options.ttl))} millis`,
            ...(options.shards === undefined ? [] : ["--shards", String(options.shards)]),
            ...(options.exclusive === undefined ? [] : ["--exclusive", options.exclusive]),
            ...(options.instance === undefined ? [] : ["--instance", options.instance]),
            ...(options.keepPlaceOnLeave === true ? ["--keep-place-on-leave"] : []),
            ...(options.joinOnRequest === true ? ["--join-on-stdin"] : []),
            "--stop-millis",
            String(options.stopMillis ?? 0)
          ],
          { cwd: root, stdio: ["pipe", "pipe", "pipe"], env: { ...process.env, NODE_OPTIONS: "" } }
        )
        children.add(child)
        const exited = new Promise<ProcessExit>((resolve) => {
          child.once("exit", (code, signal) => {
            children.delete(child)
            resolve({ code, signal, at: Date.now(), mono: Number(process.hrtime.bigint()) / 1e6 })
          })
        })
        child.on("error", () => {})
        child.stdin?.on("error", () => {})
        readline.createInterface({ input: child.stdout! }).on("line", (line) => {
          let parsed: MemberEvent
          try {
            parsed = JSON.parse(line) as MemberEvent
          } catch {
            stderrLines.push(`stdout (not JSON): ${line}`)
            return
          }
          Effect.runSync(SubscriptionRef.update(events, (all) => [...all, parsed]))
        })
        readline.createInterface({ input: child.stderr! }).on("line", (line) => {
          stderrLines.push(line)
          if (stderrLines.length > 40) stderrLines.shift()
        })
        return { child, exited }
      }),
      ({ child, exited }) =>
        Effect.suspend(() => {
          if (child.exitCode !== null || child.signalCode !== null) return Effect.void
          child.kill("SIGKILL")
          return Effect.promise(() => exited).pipe(Effect.timeout("5 seconds"), Effect.ignore)
        })
    )
    const pid = child.pid
    if (pid === undefined) return yield* Effect.dieMessage("the member process got no pid")
    const stderr = () => stderrLines.join("\n")

    const waitFor = (predicate: (info: InfoEvent) => boolean, within: Duration.DurationInput, what = "Info") =>
      events.changes.pipe(
        // A member that failed or ended will never emit the awaited Info: give up at once.
        Stream.takeUntil((all) => all.some((e) => e.event === "error" || e.event === "done")),
        Stream.map((all) => all.filter((e): e is InfoEvent => e.event === "info").at(-1)),
        Stream.filter((last): last is InfoEvent => last !== undefined && predicate(last)),
        Stream.runHead,
        Effect.flatten,
        Effect.timeout(within),
        Effect.orDieWith(() =>
          new Error(
            `member ${pid}: no ${what} within ${Duration.format(Duration.decode(within))}; its lines: ${
              JSON.stringify(Effect.runSync(SubscriptionRef.get(events)))
            }; its stderr:\n${stderr()}`
          )
        )
      )

    const exit = (within: Duration.DurationInput) => Effect.promise(() => exited).pipe(Effect.timeoutOption(within))

    const member: MemberProcess = {
      pid,
      events: SubscriptionRef.get(events),
      infos: Effect.map(
        SubscriptionRef.get(events),
        (all) => all.flatMap((e) => e.event === "info" ? [infoString(e)] : [])
      ),
      waitFor,
      join: Effect.zipRight(
        Effect.sync(() => void child.stdin?.write("join\n")),
        waitFor((info) => info.index >= 0, options.joinWithin ?? "20 seconds", "first valid Info")
      ),
      leave: Effect.sync(() => {
        child.stdin?.end("leave\n")
      }),
      crash: Effect.suspend(() => {
        child.kill("SIGKILL")
        return Effect.promise(() => exited)
      }).pipe(Effect.timeout("5 seconds"), Effect.orDie),
      exit,
      stderr
    }
    if (options.joinOnRequest === true) {
      yield* events.changes.pipe(
        Stream.filter((all) => all.some((e) => e.event === "ready")),
        Stream.runHead,
        Effect.timeout(options.joinWithin ?? "20 seconds"),
        Effect.orDieWith(() => new Error(`member ${pid}: not ready; its stderr:\n${stderr()}`))
      )
    } else {
      yield* waitFor((info) => info.index >= 0, options.joinWithin ?? "20 seconds", "first valid Info")
    }
    return member
  })
