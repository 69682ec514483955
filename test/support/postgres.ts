/**
 * A real PostgreSQL server for the fence tests, started and stopped like the etcd of `src/testing.ts`: Debian's
 * `postgresql` package (its binaries under /usr/lib/postgresql/<version>/bin), a data dir of its own made by initdb,
 * a free loopback port, the server held by its pid and stopped with the scope (SIGINT, a fast shutdown; SIGKILL if it
 * lingers), the dir removed. As root, initdb and the server run as the `postgres` user (PostgreSQL refuses root).
 *
 * Commit timestamps are on (`track_commit_timestamp`): the tests read the order in which transactions committed.
 */
import { Clock, Data, Duration, Effect, type Scope } from "effect"
import { type ChildProcess, execFileSync, spawn } from "node:child_process"
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import * as Bounded from "../../src/internal/bounded.js"

export class PostgresHarnessError extends Data.TaggedError("PostgresHarnessError")<{ readonly message: string }> {}

export interface Postgres {
  readonly pid: number
  readonly host: string
  readonly port: number
  readonly user: string
  readonly database: string
  /** `postgres://postgres@127.0.0.1:<port>/postgres` (trust authentication on loopback). */
  readonly url: string
  /** The directory of its binaries (`psql` is there). */
  readonly bin: string
}

const NO_POSTGRES_MESSAGE =
  "No PostgreSQL server binary: install Debian's postgresql package (apt-get update && apt-get install -y postgresql)"

/** The newest /usr/lib/postgresql/<version>/bin holding `postgres` and `initdb`, if any. */
const findBin = (): string | undefined => {
  const base = "/usr/lib/postgresql"
  if (!existsSync(base)) return undefined
  const versions = readdirSync(base).filter((v) => /^[0-9]+$/.test(v)).sort((a, b) => Number(b) - Number(a))
  return versions.map((v) => path.join(base, v, "bin")).find((bin) =>
    existsSync(path.join(bin, "postgres")) && existsSync(path.join(bin, "initdb"))
  )
}

/** Who runs the server: the `postgres` user when we are root (PostgreSQL refuses to run as root), else ourselves. */
const runAs = (): { readonly uid: number; readonly gid: number } | undefined => {
  if (process.getuid?.() !== 0) return undefined
  try {
    const uid = Number(execFileSync("id", ["-u", "postgres"], { encoding: "utf8" }).trim())
    const gid = Number(execFileSync("id", ["-g", "postgres"], { encoding: "utf8" }).trim())
    return { uid, gid }
  } catch {
    return undefined
  }
}

const freePort = Effect.async<number, PostgresHarnessError>((resume) => {
  const server = net.createServer()
  server.once("error", (e) => resume(Effect.fail(new PostgresHarnessError({ message: `no free port: ${e.message}` }))))
  server.listen(0, "127.0.0.1", () => {
    const address = server.address()
    const port = typeof address === "object" && address !== null ? address.port : 0
    server.close(() => resume(Effect.succeed(port)))
  })
})

const live = new Set<ChildProcess>()
const dirs = new Set<string>()
let hooked = false
const hookExit = () => {
  if (hooked) return
  hooked = true
  process.once("exit", () => {
    for (const child of live) child.kill("SIGKILL")
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true })
  })
}

/** A throwaway directory owned by the server's user, removed with the scope. */
const tempDir = (owner: { readonly uid: number; readonly gid: number } | undefined) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      hookExit()
      const dir = mkdtempSync(path.join(os.tmpdir(), "etcdseq-pg-"))
      dirs.add(dir)
      if (owner !== undefined) chownSync(dir, owner.uid, owner.gid)
      return dir
    }),
    (dir) =>
      Effect.sync(() => {
        rmSync(dir, { recursive: true, force: true })
        dirs.delete(dir)
      })
  )

const run = (
  binary: string,
  args: ReadonlyArray<string>,
  owner: { readonly uid: number; readonly gid: number } | undefined
) =>
  Effect.try({
    try: () =>
      execFileSync(binary, args, {
        encoding: "utf8",
        stdio: ["ignore", "pipe", "pipe"],
        timeout: 60_000,
        ...(owner ?? {}),
        env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin", LANG: "C", LC_ALL: "C" }
      }),
    catch: (e) =>
      new PostgresHarnessError({
        message: `${path.basename(binary)} failed: ${(e as { stderr?: string }).stderr ?? String(e)}`
      })
  })

const STARTED_WITHIN = Duration.seconds(30)
const STOPPED_WITHIN = Duration.seconds(10)

/** One PostgreSQL server for the life of the scope. */
export const startPostgres: Effect.Effect<Postgres, PostgresHarnessError, Scope.Scope> = Effect.gen(function*() {
  const bin = findBin()
  if (bin === undefined) return yield* new PostgresHarnessError({ message: NO_POSTGRES_MESSAGE })
  const owner = runAs()
  if (process.getuid?.() === 0 && owner === undefined) {
    return yield* new PostgresHarnessError({ message: "running as root, but there is no postgres user to run as" })
  }
  const dir = yield* tempDir(owner)
  const data = path.join(dir, "data")
  yield* run(
    path.join(bin, "initdb"),
    ["-D", data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"],
    owner
  )
  const port = yield* freePort
  const tail: Array<string> = []
  const child = yield* Effect.acquireRelease(
    Effect.sync(() => {
      hookExit()
      const child = spawn(path.join(bin, "postgres"), [
        "-D",
        data,
        "-p",
        String(port),
        "-k",
        dir,
        "-c",
        "listen_addresses=127.0.0.1",
        // A throwaway server: durability is not what is tested, speed on a loaded machine is welcome.
        "-c",
        "fsync=off",
        "-c",
        "full_page_writes=off",
        "-c",
        "track_commit_timestamp=on",
        "-c",
        "max_connections=100"
      ], { stdio: ["ignore", "pipe", "pipe"], ...(owner ?? {}), env: { PATH: process.env["PATH"] ?? "", LC_ALL: "C" } })
      live.add(child)
      const keep = (chunk: Buffer) => {
        tail.push(...String(chunk).split("\n").filter((l) => l !== ""))
        tail.splice(0, Math.max(0, tail.length - 30))
      }
      child.stdout?.on("data", keep)
      child.stderr?.on("data", keep)
      child.on("error", (e) => tail.push(`spawn: ${e.message}`))
      child.once("exit", () => live.delete(child))
      return child
    }),
    (child) =>
      Effect.gen(function*() {
        if (child.exitCode !== null || child.signalCode !== null) return
        const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()))
        // SIGINT: the fast shutdown (open transactions rolled back, clients disconnected).
        child.kill("SIGINT")
        const stopped = yield* Effect.promise(() => exited).pipe(Bounded.timeoutOption(STOPPED_WITHIN))
        if (stopped._tag === "None") {
          child.kill("SIGKILL")
          yield* Effect.promise(() => exited).pipe(Bounded.timeoutOption(STOPPED_WITHIN))
        }
      })
  )
  const pid = child.pid
  if (pid === undefined) {
    return yield* new PostgresHarnessError({ message: `postgres did not start: ${tail.join("\n")}` })
  }
  // Ready once pg_isready says so over TCP, as the tests connect.
  const deadline = Date.now() + Duration.toMillis(STARTED_WITHIN)
  while (true) {
    if (child.exitCode !== null || child.signalCode !== null) {
      return yield* new PostgresHarnessError({ message: `postgres exited at start:\n${tail.join("\n")}` })
    }
    const ready = yield* run(path.join(bin, "pg_isready"), ["-h", "127.0.0.1", "-p", String(port), "-q"], undefined)
      .pipe(Effect.as(true), Effect.orElseSucceed(() => false))
    if (ready) break
    if (Date.now() > deadline) {
      return yield* new PostgresHarnessError({ message: `postgres not ready within 30 s:\n${tail.join("\n")}` })
    }
    yield* Effect.sleep("100 millis")
  }
  const host = "127.0.0.1"
  return {
    pid,
    host,
    port,
    user: "postgres",
    database: "postgres",
    url: `postgres://postgres@${host}:${port}/postgres`,
    bin
  }
}).pipe(
  // The harness waits on real time, also under the TestClock of `it.effect`.
  Effect.withClock(Clock.make())
)
