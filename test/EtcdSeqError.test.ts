/**
 * The errors a program ends with print as one line where Effect reports a failure (`Cause.pretty`, behind
 * `NodeRuntime.runMain` and every logger): never the etcd client's stack, which is 35 lines of gRPC and cockatiel.
 */
import { describe, expect, it } from "@effect/vitest"
import { Cause, Duration, Effect } from "effect"
import { GRPCUnavailableError } from "etcd3"
import { spawn } from "node:child_process"
import { mkdtempSync, rmSync, writeFileSync } from "node:fs"
import * as net from "node:net"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { blockUnder } from "../scripts/codeBlocks.js"
import {
  AlreadyRunning,
  EtcdRequestFailed,
  EtcdUnavailable,
  InstanceTaken,
  InvalidOptions,
  ShardCountMismatch
} from "../src/index.js"

const root = fileURLToPath(new URL("..", import.meta.url))

describe("EtcdSeqError", () => {
  const refused = new GRPCUnavailableError("14 UNAVAILABLE: connect ECONNREFUSED 127.0.0.1:2379")
  const errors = [
    new InvalidOptions({ field: "ttl", reason: "must be at least 1 second" }),
    new EtcdUnavailable({ endpoints: ["http://127.0.0.1:2379"], timeout: Duration.seconds(5), error: refused }),
    new EtcdRequestFailed({ operation: "range", error: new Error("etcdserver: permission denied") }),
    new AlreadyRunning({ group: "g" }),
    new ShardCountMismatch({ group: "g", shards: 64, requested: 32 }),
    new InstanceTaken({ group: "g", instance: "i" })
  ]

  it.each(errors)("$_tag prints as its one line, without the client's error", (error) => {
    expect(Cause.pretty(Cause.fail(error), { renderErrorCause: true })).toBe(`${error._tag}: ${error.message}`)
  })

  it("the client's error is kept, and serialized as its message", () => {
    const error = errors[1] as EtcdUnavailable
    expect(error.error).toBe(refused)
    expect(JSON.parse(JSON.stringify(error))).toEqual({
      _tag: "EtcdUnavailable",
      message: "etcd unavailable at http://127.0.0.1:2379 within 5s",
      error: "Error: 14 UNAVAILABLE: connect ECONNREFUSED 127.0.0.1:2379"
    })
  })

  it.live(
    "the README's Quick start, pointed at an etcd that refuses connections, prints one line",
    () =>
      Effect.gen(function*() {
        const port = yield* Effect.promise(() => closedPort())
        const dir = yield* Effect.acquireRelease(
          Effect.sync(() => mkdtempSync(path.join(root, ".tmp", "edge-"))),
          (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
        )
        const program = path.join(dir, "worker.ts")
        writeFileSync(program, blockUnder(path.join(root, "README.md"), "Quick start", "ts").code)
        const { code, stdout } = yield* run(program, {
          ETCDSEQ_KEY: "indexer",
          ETCD_ENDPOINTS: `http://127.0.0.1:${port}`,
          ETCD_CONNECT_TIMEOUT: "2 seconds"
        })
        expect(code).toBe(1)
        // runMain reports through Effect's pretty logger (on stdout): its header, the error's line, and Effect's trace
        // of the span it failed in; no JavaScript stack, no cause.
        const [header, line, ...trace] = stdout.trimEnd().split("\n")
        expect(header).toMatch(/^\[[\d:.]+\] ERROR \(#\d+\):$/)
        expect(line).toBe(`  EtcdUnavailable: etcd unavailable at http://127.0.0.1:${port} within 2s`)
        expect(trace).toEqual([expect.stringMatching(/^ {6}at Etcd\.connect \(/)])
      }).pipe(Effect.scoped),
    { timeout: 60_000 }
  )
})

/** A loopback port nothing listens on: connections to it are refused. */
const closedPort = () =>
  new Promise<number>((resolve) => {
    const server = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo
      server.close(() => resolve(port))
    })
  })

/** Runs a TypeScript program as `node` would (through tsx, the package's name resolving to `src/`), bounded. */
const run = (program: string, env: Record<string, string>) =>
  Effect.async<{ readonly code: number | null; readonly stdout: string }>((resume) => {
    const child = spawn(process.execPath, ["--import", "tsx", program], {
      cwd: root,
      stdio: ["ignore", "pipe", "inherit"],
      env: { ...process.env, NODE_OPTIONS: "", ...env }
    })
    let stdout = ""
    child.stdout.on("data", (chunk) => void (stdout += String(chunk)))
    child.once("close", (code) => resume(Effect.succeed({ code, stdout })))
    return Effect.sync(() => void child.kill("SIGKILL"))
  }).pipe(
    Effect.timeoutFail({ duration: "30 seconds", onTimeout: () => new Error("the program did not end") }),
    Effect.orDie
  )
