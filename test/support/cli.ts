/**
 * The `etcdseq` command in a process of its own, as the command-line tests drive it, and the lines of the program it
 * runs (`cli-child.mjs`): when each child started, what it was told, what ran beside it, when SIGTERM reached it.
 */
import { type Duration, Effect, type Scope } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import { pidIsGone } from "./processes.js"
import type { ShardRun } from "./shardChecker.js"

const main = fileURLToPath(new URL("../../src/cli/main.ts", import.meta.url))
/** The program the tests run under `etcdseq run`. */
export const child = fileURLToPath(new URL("./cli-child.mjs", import.meta.url))
export const root = fileURLToPath(new URL("../..", import.meta.url))

/** Milliseconds on CLOCK_MONOTONIC, as the children's `mono`: comparable across the machine's processes. */
export const mono = () => Number(process.hrtime.bigint()) / 1e6

export interface Cli {
  readonly pid: number
  /** stdout so far, line by line. */
  readonly lines: () => ReadonlyArray<string>
  readonly stderr: () => string
  /** stderr so far, line by line, each with when it was read here (`mono`). */
  readonly stderrLines: () => ReadonlyArray<{ readonly text: string; readonly mono: number }>
  /** Waits (bounded) for the process to end: its exit code, or the signal that ended it. */
  readonly exit: (within?: Duration.DurationInput) => Effect.Effect<number | NodeJS.Signals>
  readonly signal: (signal: NodeJS.Signals) => Effect.Effect<void>
  /** Waits (bounded) until `check` holds of its stdout lines. */
  readonly until: (check: (lines: ReadonlyArray<string>) => boolean, what: string) => Effect.Effect<void>
}

/** `etcdseq <args>` in a process of its own, SIGKILLed when the scope closes if it still runs. */
export const cli = (
  args: ReadonlyArray<string>,
  env: Record<string, string> = {}
): Effect.Effect<Cli, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const proc: ChildProcess = spawn(process.execPath, ["--import", "tsx", main, ...args], {
        cwd: root,
        stdio: ["ignore", "pipe", "pipe"],
        env: { ...process.env, NODE_OPTIONS: "", ETCD_ENDPOINTS: "", ...env }
      })
      let out = ""
      let err = ""
      const errLines: Array<{ text: string; mono: number }> = []
      let partial = ""
      proc.stdout!.on("data", (chunk) => void (out += String(chunk)))
      proc.stderr!.on("data", (chunk) => {
        const at = mono()
        err += String(chunk)
        const parts = (partial + String(chunk)).split("\n")
        partial = parts.pop()!
        for (const text of parts) if (text.trim() !== "") errLines.push({ text, mono: at })
      })
      const ended = new Promise<number | NodeJS.Signals>((resolve) =>
        proc.once("exit", (code, signal) => resolve(code ?? signal!))
      )
      // Its stdout and stderr are read to the end: "exit" may come before the last chunks are.
      const drained = new Promise<void>((resolve) => proc.once("close", () => resolve()))
      const lines = () => out.split("\n").filter((l) => l !== "")
      const self: Cli = {
        pid: proc.pid!,
        lines,
        stderr: () => err,
        stderrLines: () => partial.trim() === "" ? errLines : [...errLines, { text: partial, mono: mono() }],
        exit: (within = "20 seconds") =>
          Effect.promise(() => ended).pipe(
            Effect.timeoutFail({
              duration: within,
              onTimeout: () =>
                new Error(`etcdseq ${args[0]} (pid ${proc.pid}) still running; stdout:\n${out}\nstderr:\n${err}`)
            }),
            Effect.orDie,
            // A process it left behind may hold the pipes open: the exit is not held up for long by that.
            Effect.tap(() => Effect.promise(() => drained).pipe(Effect.timeout("2 seconds"), Effect.ignore))
          ),
        signal: (signal) => Effect.sync(() => void proc.kill(signal)),
        until: (check, what) => eventually(() => check(lines()), `${what}; stdout:\n${out}\nstderr:\n${err}`)
      }
      return { proc, self }
    }),
    ({ proc }) => Effect.sync(() => proc.exitCode === null && proc.signalCode === null && proc.kill("SIGKILL"))
  ).pipe(Effect.map(({ self }) => self))

/** Waits until `check` holds, looking every 25 ms; dies with `what` after `within` ms. */
export const eventually = (check: () => boolean, what: string, within = 30_000): Effect.Effect<void> =>
  Effect.gen(function*() {
    const deadline = Date.now() + within
    while (!check()) {
      if (Date.now() > deadline) return yield* Effect.dieMessage(`not within ${within} ms: ${what}`)
      yield* Effect.sleep("25 millis")
    }
  })

/** A live process of the same program and group, as a child saw it when it started. */
export interface Other {
  readonly pid: number
  readonly index: number
  readonly count: number
}

export interface ChildLine {
  /** `term`: SIGTERM reached a child that ignores it. */
  readonly event: "start" | "stop" | "term"
  readonly pid: number
  readonly index: number
  readonly count: number
  readonly fence: number
  readonly mono: number
  /** On `start`: the children of the group alive then (zombies are gone). */
  readonly others?: ReadonlyArray<Other>
}

export const childLines = (w: Cli): ReadonlyArray<ChildLine> =>
  w.lines().flatMap((l) => l.startsWith("{") ? [JSON.parse(l) as ChildLine] : [])

export const starts = (w: Cli) => childLines(w).filter((l) => l.event === "start")

export const assignments = (w: Cli) => starts(w).map((l) => `${l.index}/${l.count}`)

/** The children's runs, as the checker's (the index for the shard): a run without a stop ends at `ended`. */
export const runsOf = (name: string, w: Cli, ended: ReadonlyMap<number, number>): Array<ShardRun> => {
  const runs: Array<ShardRun> = []
  for (const line of childLines(w)) {
    if (line.event === "start") {
      runs.push({
        member: name,
        shard: line.index,
        fence: line.fence,
        start: line.mono,
        end: ended.get(line.pid) ?? Infinity
      })
    } else if (line.event === "stop") {
      const run = runs.find((r) => r.fence === line.fence && r.end === Infinity)
      if (run !== undefined) run.end = line.mono
    }
  }
  return runs
}

/** Waits until the pid is gone (a zombie counts as gone); when it went (on the monotonic clock), seen every 10 ms. */
export const gone = (pid: number, within = 5_000) =>
  Effect.gen(function*() {
    const deadline = Date.now() + within
    while (!pidIsGone(pid)) {
      if (Date.now() > deadline) return yield* Effect.dieMessage(`pid ${pid} still alive after ${within} ms`)
      yield* Effect.sleep("10 millis")
    }
    return mono()
  })
