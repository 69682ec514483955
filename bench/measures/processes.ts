/**
 * Child processes of the fleet benchmarks: a script bundled once, then spawned as plain `node` processes (so the pid
 * held is the process), driven over stdin and reporting one JSON object per line on stdout; stopped by the pids held,
 * and judged gone by `/proc/<pid>/stat` (a zombie counts as gone: it holds no CPU, no socket, no lease).
 */
import { Duration, Effect, Option } from "effect"
import * as esbuild from "esbuild"
import { type ChildProcess, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as readline from "node:readline"
import { fileURLToPath } from "node:url"
import { BenchError } from "./etcdMetrics.js"

const root = fileURLToPath(new URL("../..", import.meta.url))

/**
 * A child script bundled once into plain JavaScript (its packages left to node_modules): a hundred processes started
 * through tsx would each carry its transpiler, and memory and start-up would measure that, not the library.
 */
export const bundle = (script: string, name: string): Effect.Effect<string, BenchError> => {
  const outfile = `${root}node_modules/.cache/etcdseq-bench/${name}.mjs`
  return Effect.tryPromise({
    try: () =>
      esbuild.build({
        entryPoints: [script],
        bundle: true,
        platform: "node",
        format: "esm",
        target: "node20",
        packages: "external",
        outfile,
        logLevel: "error"
      }),
    catch: (cause) => new BenchError({ message: `bundling ${name} failed`, cause })
  }).pipe(Effect.as(outfile))
}

export type Line = { readonly e: string; readonly [key: string]: unknown }

export interface Proc {
  readonly pid: number
  readonly send: (command: string) => void
  /**
   * Waits (bounded) for the next line satisfying `match` from now on (or from the `from`-th line, see `seen`); none
   * when the bound passed.
   */
  readonly next: (
    match: (line: Line) => boolean,
    within: Duration.DurationInput,
    from?: number
  ) => Effect.Effect<Option.Option<Line>>
  /** How many lines came so far: a `from` for `next` taken before sending a command, so the answer cannot be missed. */
  readonly seen: () => number
  /** Calls `listener` with every line from now on. */
  readonly onLine: (listener: (line: Line) => void) => void
  readonly kill: () => void
  readonly exited: Promise<void>
}

export interface SpawnOptions {
  /** The bundled script. */
  readonly file: string
  readonly args: ReadonlyArray<string>
  /** Flags of node itself, before the script. */
  readonly nodeArgs?: ReadonlyArray<string>
  /** Where the child's stderr goes: this process's, or a file. */
  readonly stderrFile?: string | undefined
  readonly env?: Readonly<Record<string, string>>
  /** The child's niceness (0: this process's). */
  readonly niceness?: number
}

export const spawnChild = (options: SpawnOptions): Proc => {
  const child: ChildProcess = spawn(process.execPath, [...(options.nodeArgs ?? []), options.file, ...options.args], {
    cwd: root,
    stdio: ["pipe", "pipe", options.stderrFile === undefined ? "inherit" : fs.openSync(options.stderrFile, "w")],
    env: { ...process.env, NODE_OPTIONS: "", ...options.env }
  })
  if ((options.niceness ?? 0) !== 0) os.setPriority(child.pid!, options.niceness!)
  const lines: Array<Line> = []
  const waiters = new Set<() => void>()
  const listeners: Array<(line: Line) => void> = []
  readline.createInterface({ input: child.stdout! }).on("line", (text) => {
    let line: Line
    try {
      line = JSON.parse(text) as Line
    } catch {
      return
    }
    lines.push(line)
    for (const listener of listeners) listener(line)
    for (const wake of [...waiters]) wake()
  })
  child.stdin!.on("error", () => {})
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()))
  return {
    pid: child.pid!,
    send: (command) => void child.stdin!.write(command + "\n"),
    next: (match, within, from) =>
      Effect.async<Option.Option<Line>>((resume) => {
        let seen = from ?? lines.length
        const look = () => {
          for (; seen < lines.length; seen++) {
            if (match(lines[seen]!)) {
              waiters.delete(look)
              clearTimeout(timer)
              resume(Effect.succeed(Option.some(lines[seen]!)))
              return
            }
          }
        }
        const timer = setTimeout(() => {
          waiters.delete(look)
          resume(Effect.succeed(Option.none()))
        }, Duration.toMillis(Duration.decode(within)))
        waiters.add(look)
        look()
        return Effect.sync(() => {
          waiters.delete(look)
          clearTimeout(timer)
        })
      }),
    seen: () => lines.length,
    onLine: (listener) => void listeners.push(listener),
    kill: () => void child.kill("SIGKILL"),
    exited
  }
}

/** Every process's next line matching `match`: the latest `at` among them, and how many answered. */
export const allOf = (procs: ReadonlyArray<Proc>, match: (line: Line) => boolean, within: Duration.DurationInput) =>
  Effect.map(
    Effect.forEach(procs, (p) => p.next(match, within), { concurrency: "unbounded" }),
    (found) => {
      const ats = found.flatMap((o) => Option.isSome(o) ? [Number(o.value["at"])] : [])
      return { answered: ats.length, last: Math.max(...ats) }
    }
  )

/** Whether the process `pid` is gone: no `/proc/<pid>/stat`, or a zombie or dead state. */
const isGone = (pid: number): boolean => {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
    // The state follows the command name, which is in parentheses and may itself hold spaces or parentheses.
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3)
    return state === "Z" || state === "X"
  } catch {
    return true
  }
}

/**
 * Asks every process to exit (`exit` on stdin), waits for them up to `within` (a real timer, so the wait is bounded
 * even in an uninterruptible release), kills the rest by pid, and returns the pids still not gone a second later.
 */
export const stopAll = async (procs: ReadonlyArray<Proc>, within: Duration.DurationInput): Promise<Array<number>> => {
  for (const p of procs) p.send("exit")
  let timer: ReturnType<typeof setTimeout> | undefined
  const timeout = new Promise<void>((resolve) => timer = setTimeout(resolve, Duration.toMillis(within)))
  await Promise.race([Promise.all(procs.map((p) => p.exited)), timeout])
  clearTimeout(timer)
  for (const p of procs) if (!isGone(p.pid)) p.kill()
  const deadline = Date.now() + 1_000
  while (Date.now() < deadline && procs.some((p) => !isGone(p.pid))) await new Promise((r) => setTimeout(r, 50))
  return procs.filter((p) => !isGone(p.pid)).map((p) => p.pid)
}
