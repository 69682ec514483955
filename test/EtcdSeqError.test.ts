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
  ShardCountMismatch,
  ShardPolicyMismatch
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
    new ShardPolicyMismatch({
      group: "g",
      maxMoves: Infinity,
      settle: Duration.zero,
      requestedMaxMoves: 2,
      requestedSettle: Duration.seconds(5)
    }),
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
      message: "etcd at http://127.0.0.1:2379 refused the connection: is etcd running and listening there?",
      error: "Error: 14 UNAVAILABLE: connect ECONNREFUSED 127.0.0.1:2379"
    })
  })

  // What the etcd client reports (etcd3 1.1 over gRPC, as seen against etcd 3.5), and the line each becomes: what
  // failed, where, and what to check.
  it.each([
    [
      new EtcdUnavailable({
        endpoints: ["http://10.0.0.1:2379", "http://10.0.0.2:2379"],
        timeout: Duration.seconds(5)
      }),
      "etcd at http://10.0.0.1:2379, http://10.0.0.2:2379 did not answer within 5s: is etcd running there, and " +
      "reachable from here?"
    ],
    [
      new EtcdUnavailable({
        endpoints: ["http://127.0.0.1:9"],
        timeout: Duration.seconds(5),
        error: new GRPCUnavailableError(
          "14 UNAVAILABLE: No connection established. Last error: Error: connect ECONNREFUSED 127.0.0.1:9. " +
            "Resolution note: "
        )
      }),
      "etcd at http://127.0.0.1:9 refused the connection: is etcd running and listening there?"
    ],
    [
      new EtcdUnavailable({
        endpoints: ["http://etcd.invalid:2379"],
        timeout: Duration.seconds(5),
        error: new GRPCUnavailableError("14 UNAVAILABLE: Name resolution failed for target dns:etcd.invalid:2379")
      }),
      "etcd at http://etcd.invalid:2379: the host name does not resolve: check the endpoints"
    ],
    [
      new EtcdUnavailable({
        endpoints: ["https://127.0.0.1:2379"],
        timeout: Duration.seconds(5),
        error: new GRPCUnavailableError(
          "14 UNAVAILABLE: No connection established. Last error: Error: Client network socket disconnected before " +
            "secure TLS connection was established. Resolution note: "
        )
      }),
      "etcd at https://127.0.0.1:2379: TLS failed (Client network socket disconnected before secure TLS connection " +
      "was established): check http:// or https:// and the certificates"
    ],
    [
      new EtcdUnavailable({
        endpoints: ["http://127.0.0.1:2379"],
        timeout: Duration.seconds(5),
        error: new GRPCUnavailableError("14 UNAVAILABLE: Connection dropped")
      }),
      "etcd at http://127.0.0.1:2379 is unavailable (Connection dropped): is etcd running there, and reachable from here?"
    ],
    [
      new EtcdRequestFailed({
        operation: "connect",
        error: new Error("3 INVALID_ARGUMENT: etcdserver: authentication failed, invalid user ID or password")
      }),
      `etcd refused request "connect": authentication failed, invalid user ID or password: check the user and password`
    ],
    [
      new EtcdRequestFailed({
        operation: "connect",
        error: new Error("3 INVALID_ARGUMENT: etcdserver: user name is empty")
      }),
      `etcd refused request "connect": user name is empty: etcd has authentication on: give a user and password`
    ],
    [
      new EtcdRequestFailed({
        operation: "range",
        error: new Error("7 PERMISSION_DENIED: etcdserver: permission denied")
      }),
      `etcd refused request "range": permission denied: the user's role must grant read and write on the group's keys`
    ],
    [
      new EtcdRequestFailed({
        operation: "connect",
        error: new Error("12 UNIMPLEMENTED: Received HTTP status code 404")
      }),
      `etcd refused request "connect": Received HTTP status code 404: is that etcd's client URL?`
    ]
  ])("%s", (error, line) => {
    expect(error.message).toBe(line)
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
        expect(line).toBe(
          `  EtcdUnavailable: etcd at http://127.0.0.1:${port} refused the connection: is etcd running and listening there?`
        )
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
