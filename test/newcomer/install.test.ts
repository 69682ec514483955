/**
 * A newcomer's first contact, as the README tells it: the package packed as npm would publish it, installed into a
 * fresh app with the README's Install command exactly, the Quick start compiled with the README's commands, and run
 * against an etcd started here until it prints its first Info; then the same program against an etcd that refuses
 * connections, which must end in one line.
 *
 * Not part of `npm test` (`npm run test:newcomer`, and a step of `.ci/run`): it needs the npm registry and takes a
 * minute or two. Every step is bounded; the app, the tarball and every process are gone when it ends.
 */
import { expect, it } from "@effect/vitest"
import { Duration, Effect, type Scope } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { blockUnder } from "../../scripts/codeBlocks.js"
import { startEtcd } from "../support/etcd.js"

const root = fileURLToPath(new URL("../..", import.meta.url))
const readme = path.join(root, "README.md")
const { version } = JSON.parse(readFileSync(path.join(root, "package.json"), "utf8")) as { version: string }

/** The environment of a fresh shell: none of the `npm run` variables this test may have been started with. */
const freshEnv = (extra: Record<string, string> = {}): NodeJS.ProcessEnv => ({
  ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("npm_") && k !== "NODE_OPTIONS")),
  ...extra
})

interface Running {
  readonly child: ChildProcess
  readonly stdout: () => string
  readonly stderr: () => string
  readonly exited: Promise<number | null>
}

/** A process that is SIGKILLed, by its pid, when the scope closes if it still runs. */
const start = (command: string, args: ReadonlyArray<string>, cwd: string, env: NodeJS.ProcessEnv) =>
  Effect.acquireRelease(
    Effect.sync((): Running => {
      const child = spawn(command, args, { cwd, env, stdio: ["ignore", "pipe", "pipe"] })
      let out = ""
      let err = ""
      child.stdout!.on("data", (chunk) => void (out += String(chunk)))
      child.stderr!.on("data", (chunk) => void (err += String(chunk)))
      const exited = new Promise<number | null>((resolve) => child.once("close", resolve))
      return { child, stdout: () => out, stderr: () => err, exited }
    }),
    ({ child }) => Effect.sync(() => child.exitCode === null && child.signalCode === null && child.kill("SIGKILL"))
  )

/** Runs `sh -c <script>` to its end within `within`; fails with its output unless it exits 0. */
const sh = (script: string, cwd: string, within: Duration.DurationInput, env = freshEnv()) =>
  Effect.scoped(Effect.gen(function*() {
    const run = yield* start("sh", ["-c", script], cwd, env)
    const code = yield* Effect.promise(() => run.exited).pipe(
      Effect.timeoutFail({ duration: within, onTimeout: () => `not done within ${Duration.format(within)}` }),
      Effect.catchAll((why) => Effect.dieMessage(`${script}: ${why}\n${run.stdout()}\n${run.stderr()}`))
    )
    if (code !== 0) return yield* Effect.dieMessage(`${script}: exit ${code}\n${run.stdout()}\n${run.stderr()}`)
    return run.stdout()
  }))

/** Waits until `check` holds of a running process's stdout, bounded. */
const until = (run: Running, check: (stdout: string) => boolean, what: string, within: Duration.DurationInput) =>
  Effect.gen(function*() {
    const deadline = Date.now() + Duration.toMillis(within)
    while (!check(run.stdout())) {
      if (run.child.exitCode !== null || Date.now() > deadline) {
        return yield* Effect.dieMessage(`no ${what}; stdout:\n${run.stdout()}\nstderr:\n${run.stderr()}`)
      }
      yield* Effect.sleep("50 millis")
    }
  })

const tempDir = (prefix: string): Effect.Effect<string, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => mkdtempSync(path.join(os.tmpdir(), prefix))),
    (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
  )

/** A loopback port nothing listens on. */
const closedPort = Effect.promise(() =>
  new Promise<number>((resolve) => {
    const server = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo
      server.close(() => resolve(port))
    })
  })
)

it.live("the README's Install and Quick start work as printed in a fresh app", () =>
  Effect.gen(function*() {
    const work = yield* tempDir("etcdseq-newcomer-")

    // --- The package, as `npm publish` would pack it (prepack builds dist/).
    const packed = yield* sh(`npm pack --silent --pack-destination ${work}`, root, "3 minutes")
    const tarball = path.join(work, packed.trim().split("\n").pop()!)
    const files = (yield* sh(`tar tzf ${tarball}`, work, "30 seconds")).split("\n")
    expect(files).toEqual(expect.arrayContaining([
      "package/LICENSE",
      "package/dist/index.js",
      "package/dist/index.d.ts",
      "package/dist/testing.js",
      "package/dist/sql.js",
      "package/dist/cli/main.js"
    ]))

    // --- A fresh app, an ES module as the README asks, and its Install command exactly (the package from the tarball).
    const app = path.join(work, "app")
    yield* sh(`mkdir ${app} && cd ${app} && npm init -y && npm pkg set type=module`, work, "1 minute")
    const install = blockUnder(readme, "Install", "sh").code.trim()
    expect(install).toMatch(/^npm install effect-etcdseq /)
    yield* sh(install.replace("effect-etcdseq", tarball), app, "5 minutes")
    expect(yield* sh("npx etcdseq --version", app, "1 minute")).toContain(version)

    // --- The Quick start, compiled and run with the README's commands, against an etcd of this test.
    writeFileSync(path.join(app, "worker.ts"), blockUnder(readme, "Quick start", "ts").code)
    const commands = blockUnder(readme, "Quick start", "sh").code.trim().split("\n")
    const runLine = commands.pop()!
    expect(runLine).toMatch(/^ETCDSEQ_KEY=\S+ ETCD_ENDPOINTS=\S+ node worker\.js$/)
    for (const command of commands) yield* sh(command, app, "5 minutes")
    expect(readdirSync(app)).toContain("worker.js")

    const etcd = yield* startEtcd()
    const worker = yield* start(
      process.execPath,
      ["worker.js"],
      app,
      freshEnv({
        ETCDSEQ_KEY: `newcomer/${Date.now().toString(36)}`,
        ETCD_ENDPOINTS: etcd.clientUrl
      })
    )
    yield* until(
      worker,
      (out) => /INFO .*I am 0 of 1: I take every key where hash % 1 == 0/.test(out),
      "first Info",
      "1 minute"
    )
    // SIGTERM: runMain interrupts the program, the member leaves, and the process ends by itself.
    worker.child.kill("SIGTERM")
    expect(yield* Effect.promise(() => worker.exited).pipe(Effect.timeout("30 seconds"))).toBe(0)

    // --- The same program, installed, against an etcd that refuses connections: one line, not a stack trace.
    const port = yield* closedPort
    const refused = yield* start(
      process.execPath,
      ["worker.js"],
      app,
      freshEnv({
        ETCDSEQ_KEY: "newcomer",
        ETCD_ENDPOINTS: `http://127.0.0.1:${port}`,
        ETCD_CONNECT_TIMEOUT: "2 seconds"
      })
    )
    expect(yield* Effect.promise(() => refused.exited).pipe(Effect.timeout("30 seconds"))).toBe(1)
    // runMain reports through Effect's pretty logger, which writes to stdout.
    const [header, line, ...trace] = refused.stdout().trimEnd().split("\n")
    expect(header).toMatch(/^\[[\d:.]+\] ERROR \(#\d+\):$/)
    expect(line).toBe(
      `  EtcdUnavailable: etcd at http://127.0.0.1:${port} refused the connection: is etcd running and listening there?`
    )
    expect(trace).toEqual([expect.stringMatching(/^ {6}at Etcd\.connect \(.*node_modules\/effect-etcdseq\/dist\//)])
  }).pipe(Effect.scoped), { timeout: 12 * 60_000 })
