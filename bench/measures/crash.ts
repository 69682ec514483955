/**
 * Starts `crashMember.ts` in a child process and kills it with SIGKILL: a member that stops keeping its lease alive
 * without revoking it. The child is killed with the scope in any case.
 */
import { Duration, Effect, Option, type Scope } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import { BenchError } from "./etcdMetrics.js"

export interface CrashMember {
  readonly pid: number
  /** SIGKILL, then wait (bounded) for the process to be gone. */
  readonly kill: Effect.Effect<void>
}

const script = fileURLToPath(new URL("../children/crashMember.ts", import.meta.url))
const readyWithin = Duration.seconds(30)
const exitWithin = Duration.seconds(5)

/** The loader flags this process runs under (tsx), without profiling or debugging flags. */
const loaderArgs = (): ReadonlyArray<string> => {
  const out: Array<string> = []
  const args = process.execArgv
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!
    if ((arg === "--require" || arg === "--import" || arg === "--loader") && i + 1 < args.length) {
      out.push(arg, args[i + 1]!)
      i++
    } else if (/^--(require|import|loader)=/.test(arg)) {
      out.push(arg)
    }
  }
  return out
}

const exited = (child: ChildProcess): Effect.Effect<void> =>
  child.exitCode !== null || child.signalCode !== null
    ? Effect.void
    : Effect.async<void>((resume) => {
      const done = () => resume(Effect.void)
      child.once("exit", done)
      return Effect.sync(() => child.off("exit", done))
    })

const killed = (child: ChildProcess): Effect.Effect<void> =>
  Effect.sync(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
  }).pipe(Effect.zipRight(exited(child).pipe(Effect.timeout(exitWithin), Effect.ignore)))

export const spawnCrashMember = (
  impl: "library" | "baseline",
  endpoint: string,
  group: string,
  ttlSeconds: number
): Effect.Effect<CrashMember, BenchError, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const child = spawn(process.execPath, [...loaderArgs(), script, impl, endpoint, group, String(ttlSeconds)], {
        stdio: ["pipe", "pipe", "inherit"]
      })
      // A late spawn error must not become an uncaught exception; the ready wait below reports it.
      child.on("error", () => {})
      return child
    }),
    killed
  ).pipe(
    Effect.tap((child) =>
      Effect.async<void, BenchError>((resume) => {
        let output = ""
        const onData = (chunk: Buffer) => {
          output += chunk.toString()
          if (output.includes("ready\n")) resume(Effect.void)
        }
        const onExit = (code: number | null) =>
          resume(Effect.fail(new BenchError({ message: `the crash member exited (${code}) before it joined` })))
        const onError = (cause: Error) =>
          resume(Effect.fail(new BenchError({ message: "cannot start the crash member", cause })))
        child.stdout?.on("data", onData)
        child.once("exit", onExit)
        child.once("error", onError)
        return Effect.sync(() => {
          child.stdout?.off("data", onData)
          child.off("exit", onExit)
          child.off("error", onError)
        })
      }).pipe(
        Effect.timeoutFail({
          duration: readyWithin,
          onTimeout: () =>
            new BenchError({ message: `the crash member did not join within ${Duration.format(readyWithin)}` })
        })
      )
    ),
    Effect.flatMap((child) =>
      Option.match(Option.fromNullable(child.pid), {
        onNone: () => Effect.fail(new BenchError({ message: "the crash member has no pid" })),
        onSome: (pid) => Effect.succeed({ pid, kill: killed(child) })
      })
    )
  )
