/**
 * Child processes the harness spawns: spawn with a tail of their output, signal, wait for exit, stop gracefully.
 * Every spawned process is tracked by the exit hook until it exits.
 */
import { Duration, Effect, Option } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import * as Bounded from "../bounded.js"
import { type EtcdHarnessError, harnessError } from "./error.js"
import { ensureExitHook, trackChild, untrackChild } from "./exitHook.js"

const GRACEFUL_STOP_WITHIN = Duration.seconds(5)
const STDERR_TAIL_LINES = 50

export interface ProcExit {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
}

export interface Proc {
  readonly child: ChildProcess
  readonly pid: number
  /** Last lines the process wrote to stderr/stdout. */
  readonly tail: () => string
  readonly exit: () => ProcExit | undefined
  readonly exited: Promise<ProcExit>
}

/** The last `STDERR_TAIL_LINES` non-blank lines of a stream of chunks. */
const makeTail = () => {
  const lines: Array<string> = []
  let partial = ""
  const push = (chunk: Buffer | string) => {
    const text = partial + chunk.toString()
    const parts = text.split("\n")
    partial = parts.pop() ?? ""
    for (const line of parts) {
      if (line.trim() === "") continue
      lines.push(line)
      if (lines.length > STDERR_TAIL_LINES) lines.shift()
    }
  }
  const read = () => [...lines, ...(partial.trim() === "" ? [] : [partial])].slice(-STDERR_TAIL_LINES).join("\n")
  return { push, read }
}

/** Spawns `binary`; succeeds once the OS reports the spawn (with a pid), fails if it could not be spawned. */
export const spawnProc = (binary: string, args: ReadonlyArray<string>): Effect.Effect<Proc, EtcdHarnessError> =>
  Effect.async<Proc, EtcdHarnessError>((resume) => {
    ensureExitHook()
    const tail = makeTail()
    const child = spawn(binary, [...args], { stdio: ["ignore", "pipe", "pipe"], env: process.env })
    let exitInfo: ProcExit | undefined
    const exited = new Promise<ProcExit>((resolve) => {
      child.once("exit", (code, signal) => {
        exitInfo = { code, signal }
        untrackChild(child)
        resolve(exitInfo)
      })
    })
    child.stdout?.on("data", tail.push)
    child.stderr?.on("data", tail.push)
    const onError = (error: Error) => {
      child.off("spawn", onSpawn)
      resume(Effect.fail(harnessError(`failed to spawn ${binary}: ${error.message}`, error)))
    }
    const onSpawn = () => {
      child.off("error", onError)
      // keep a listener so a late 'error' never becomes an uncaught exception
      child.on("error", () => {})
      const pid = child.pid
      if (pid === undefined) {
        resume(Effect.fail(harnessError(`spawned ${binary} but got no pid`)))
        return
      }
      trackChild(child)
      resume(Effect.succeed({ child, pid, tail: tail.read, exit: () => exitInfo, exited }))
    }
    child.once("error", onError)
    child.once("spawn", onSpawn)
  })

/** Sends `signal` unless the process has exited already. */
export const signalProc = (proc: Proc, signal: NodeJS.Signals): void => {
  if (proc.exit() !== undefined) return
  try {
    proc.child.kill(signal)
  } catch {
    // raced with exit
  }
}

/** Waits for exit; `true` if the process exited within `within`. */
const awaitExit = (proc: Proc, within: Duration.DurationInput): Effect.Effect<boolean> =>
  proc.exit() !== undefined
    ? Effect.succeed(true)
    : Effect.promise(() => proc.exited).pipe(
      Bounded.timeoutOption(within),
      Effect.map(Option.isSome)
    )

/** SIGCONT (in case it is paused), SIGTERM, wait up to 5 s, then SIGKILL. Never fails. */
export const stopProc = (proc: Proc): Effect.Effect<void> =>
  Effect.gen(function*() {
    if (proc.exit() !== undefined) return
    signalProc(proc, "SIGCONT")
    signalProc(proc, "SIGTERM")
    if (yield* awaitExit(proc, GRACEFUL_STOP_WITHIN)) return
    signalProc(proc, "SIGKILL")
    yield* awaitExit(proc, GRACEFUL_STOP_WITHIN)
  })

/** SIGKILL, then wait (up to 5 s) for the exit. Never fails. */
export const killProc = (proc: Proc): Effect.Effect<void> =>
  Effect.gen(function*() {
    signalProc(proc, "SIGKILL")
    yield* awaitExit(proc, GRACEFUL_STOP_WITHIN)
  })

export const describeExit = (exit: ProcExit): string =>
  exit.signal !== null ? `killed by ${exit.signal}` : `exited with code ${String(exit.code)}`
