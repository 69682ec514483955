/**
 * Real-etcd test harness.
 *
 * - `startEtcd`     one etcd process from the `etcd` binary on PATH (free loopback ports, temp data dir)
 * - `startCluster`  an n-node etcd cluster of such processes
 * - `resolveEndpoints` / `EtcdEndpoints.layer`  the etcd the test suite should talk to:
 *     1. `ETCD_ENDPOINTS` (comma separated) — nothing is started
 *     2. an `etcd` binary on PATH          — one node via `startEtcd`
 *     3. a Docker engine                   — a `quay.io/coreos/etcd` container via testcontainers
 *     4. otherwise an `EtcdHarnessError` saying how to get etcd
 *
 * Every process, container and temp dir is tied to a `Scope`. All timing inside the harness runs on the
 * live clock, so it also works under `@effect/vitest`'s `it.effect` / `it.scoped` / `layer` (TestClock).
 * As a last resort a `process.once("exit")` hook SIGKILLs any etcd this module spawned that is still running
 * and removes its temp data dirs.
 *
 * @since 0.1.0
 */
import {
  Array as Arr,
  Clock,
  Context,
  Data,
  Duration,
  Effect,
  ExecutionStrategy,
  Exit,
  Layer,
  Option,
  Scope
} from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import { randomUUID } from "node:crypto"
import { constants as fsConstants, rmSync } from "node:fs"
import * as fs from "node:fs/promises"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { Etcd } from "./Etcd.js"
import type { EtcdSeqError } from "./EtcdSeqError.js"
import * as Bounded from "./internal/bounded.js"

// ---------------------------------------------------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------------------------------------------------

/**
 * The harness could not provide an etcd: no binary, no Docker engine, a process that would not start or get healthy.
 * The message says what happened and, when nothing was found, how to get etcd.
 *
 * @since 0.1.0
 * @category errors
 */
export class EtcdHarnessError extends Data.TaggedError("EtcdHarnessError")<{
  readonly message: string
  readonly cause?: unknown
}> {}

/**
 * One etcd process the harness started, with the faults a test can inject by its pid.
 *
 * @since 0.1.0
 * @category models
 */
export interface EtcdNode {
  readonly name: string
  /** pid of the current etcd process; `undefined` once it has exited (after `kill`, before `restart`). */
  readonly pid: number | undefined
  readonly clientUrl: string
  readonly peerUrl: string
  readonly dataDir: string
  /** SIGSTOP: the process stays alive but answers nothing (simulates a hung member / long GC pause). */
  readonly pause: Effect.Effect<void>
  /** SIGCONT. */
  readonly resume: Effect.Effect<void>
  /** SIGKILL, then wait for the process to exit. No-op if it is not running. */
  readonly kill: Effect.Effect<void>
  /** Start again on the same data dir and the same ports and wait until healthy (stops it gracefully first if running). */
  readonly restart: Effect.Effect<void, EtcdHarnessError>
  readonly isRunning: Effect.Effect<boolean>
}

/**
 * An etcd cluster of processes the harness started.
 *
 * @since 0.1.0
 * @category models
 */
export interface EtcdCluster {
  readonly nodes: ReadonlyArray<EtcdNode>
  /** Client URLs of all nodes, in node order. */
  readonly endpoints: ReadonlyArray<string>
  /** The node that currently is raft leader; waits (up to 10 s) while an election is going on. */
  readonly leader: Effect.Effect<EtcdNode, EtcdHarnessError>
  /** Gracefully stop every running node (concurrently). */
  readonly stopAll: Effect.Effect<void>
  /** Start every stopped node again (concurrently) and wait until all are healthy. */
  readonly startAll: Effect.Effect<void, EtcdHarnessError>
}

/**
 * The etcd a test suite uses, and where it came from.
 *
 * @since 0.1.0
 * @category models
 */
export interface ResolvedEtcdEndpoints {
  readonly endpoints: ReadonlyArray<string>
  readonly source: "env" | "binary" | "container"
}

/**
 * Subset of etcd's `/v3/maintenance/status` answer (grpc-gateway JSON; 64-bit ids come as strings).
 *
 * @since 0.1.0
 * @category models
 */
export interface EtcdStatus {
  readonly memberId: string
  readonly leader: string
  readonly raftTerm: string
  readonly version: string
}

/**
 * What `resolveEndpoints` fails with when it finds no etcd at all.
 *
 * @since 0.1.0
 * @category constants
 */
export const NO_ETCD_MESSAGE =
  "No etcd available: set ETCD_ENDPOINTS, or install etcd (Debian/Ubuntu: apt-get update && apt-get install -y etcd-server), or run a Docker engine for testcontainers."

// ---------------------------------------------------------------------------------------------------------------------
// Timing knobs
// ---------------------------------------------------------------------------------------------------------------------

const HEALTHY_WITHIN = Duration.seconds(15)
const HEALTH_REQUEST_TIMEOUT_MS = 1_000
const POLL_EVERY = Duration.millis(100)
const GRACEFUL_STOP_WITHIN = Duration.seconds(5)
const LEADER_WITHIN = Duration.seconds(10)
const STDERR_TAIL_LINES = 50
const PORT_RETRIES = 3
const CONTAINER_IMAGE = "quay.io/coreos/etcd:v3.5.17"
const CONTAINER_STARTUP_MS = 120_000

// ---------------------------------------------------------------------------------------------------------------------
// Live clock: @effect/vitest provides a TestClock, under which sleeps/timeouts would never fire.
// ---------------------------------------------------------------------------------------------------------------------

const liveClock = Clock.make()
const live = <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> => Effect.withClock(self, liveClock)

const harnessError = (message: string, cause?: unknown): EtcdHarnessError =>
  cause === undefined ? new EtcdHarnessError({ message }) : new EtcdHarnessError({ message, cause })

const describeCause = (cause: unknown): string => (cause instanceof Error ? cause.message : String(cause))

// ---------------------------------------------------------------------------------------------------------------------
// Process bookkeeping + exit safety net
// ---------------------------------------------------------------------------------------------------------------------

const liveChildren = new Set<ChildProcess>()
const liveDirs = new Set<string>()
let exitHookInstalled = false

const installExitHook = (): void => {
  if (exitHookInstalled) return
  exitHookInstalled = true
  process.once("exit", () => {
    for (const child of liveChildren) {
      try {
        child.kill("SIGKILL")
      } catch {
        // already gone
      }
    }
    for (const dir of liveDirs) {
      try {
        rmSync(dir, { recursive: true, force: true })
      } catch {
        // best effort
      }
    }
  })
}

interface ProcExit {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
}

interface Proc {
  readonly child: ChildProcess
  readonly pid: number
  /** Last lines etcd wrote to stderr/stdout. */
  readonly tail: () => string
  readonly exit: () => ProcExit | undefined
  readonly exited: Promise<ProcExit>
}

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

const spawnProc = (binary: string, args: ReadonlyArray<string>): Effect.Effect<Proc, EtcdHarnessError> =>
  Effect.async<Proc, EtcdHarnessError>((resume) => {
    installExitHook()
    const tail = makeTail()
    const child = spawn(binary, [...args], { stdio: ["ignore", "pipe", "pipe"], env: process.env })
    let exitInfo: ProcExit | undefined
    const exited = new Promise<ProcExit>((resolve) => {
      child.once("exit", (code, signal) => {
        exitInfo = { code, signal }
        liveChildren.delete(child)
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
      liveChildren.add(child)
      resume(Effect.succeed({ child, pid, tail: tail.read, exit: () => exitInfo, exited }))
    }
    child.once("error", onError)
    child.once("spawn", onSpawn)
  })

const signalProc = (proc: Proc, signal: NodeJS.Signals): void => {
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
const stopProc = (proc: Proc): Effect.Effect<void> =>
  Effect.gen(function*() {
    if (proc.exit() !== undefined) return
    signalProc(proc, "SIGCONT")
    signalProc(proc, "SIGTERM")
    if (yield* awaitExit(proc, GRACEFUL_STOP_WITHIN)) return
    signalProc(proc, "SIGKILL")
    yield* awaitExit(proc, GRACEFUL_STOP_WITHIN)
  })

const killProc = (proc: Proc): Effect.Effect<void> =>
  Effect.gen(function*() {
    signalProc(proc, "SIGKILL")
    yield* awaitExit(proc, GRACEFUL_STOP_WITHIN)
  })

const describeExit = (exit: ProcExit): string =>
  exit.signal !== null ? `killed by ${exit.signal}` : `exited with code ${String(exit.code)}`

// ---------------------------------------------------------------------------------------------------------------------
// Small HTTP helpers (etcd's grpc-gateway JSON API)
// ---------------------------------------------------------------------------------------------------------------------

const fetchJson = (
  url: string,
  init: { method: "GET" | "POST"; body?: string },
  timeoutMs: number
): Effect.Effect<{ status: number; body: unknown }, EtcdHarnessError> =>
  Effect.tryPromise({
    try: async (signal) => {
      const response = await fetch(url, {
        method: init.method,
        ...(init.body === undefined ? {} : { body: init.body, headers: { "content-type": "application/json" } }),
        signal: AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)])
      })
      const text = await response.text()
      let body: unknown = text
      try {
        body = JSON.parse(text)
      } catch {
        // keep the text
      }
      return { status: response.status, body }
    },
    catch: (cause) => harnessError(`${init.method} ${url} failed: ${describeCause(cause)}`, cause)
  })

const isRecord = (u: unknown): u is Record<string, unknown> => typeof u === "object" && u !== null

/**
 * `GET <clientUrl>/health` → `true` iff etcd answers `{"health":"true"}` within `timeoutMs` (default 1 s).
 * In etcd 3.4 this needs a leader (and, in a cluster, quorum). Never fails.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { etcdHealthy, startEtcd } from "effect-etcdseq/testing"
 *
 * const healthy = Effect.gen(function*() {
 *   const node = yield* startEtcd()
 *   return yield* etcdHealthy(node.clientUrl) // true
 * }).pipe(Effect.scoped)
 * ```
 * @since 0.1.0
 * @category utils
 */
export const etcdHealthy = (clientUrl: string, timeoutMs: number = HEALTH_REQUEST_TIMEOUT_MS): Effect.Effect<boolean> =>
  fetchJson(`${clientUrl}/health`, { method: "GET" }, timeoutMs).pipe(
    Effect.map(({ body, status }) => status === 200 && isRecord(body) && body["health"] === "true"),
    Effect.orElseSucceed(() => false),
    live
  )

/**
 * `POST <clientUrl>/v3/maintenance/status` with `{}`: who leads, and the raft term.
 *
 * Errors: `EtcdHarnessError` when etcd does not answer as expected.
 *
 * @since 0.1.0
 * @category utils
 */
export const etcdStatus = (
  clientUrl: string,
  timeoutMs: number = HEALTH_REQUEST_TIMEOUT_MS
): Effect.Effect<EtcdStatus, EtcdHarnessError> =>
  fetchJson(`${clientUrl}/v3/maintenance/status`, { method: "POST", body: "{}" }, timeoutMs).pipe(
    Effect.flatMap(({ body, status }) => {
      const header = isRecord(body) ? body["header"] : undefined
      if (status !== 200 || !isRecord(body) || !isRecord(header) || header["member_id"] === undefined) {
        return Effect.fail(
          harnessError(`unexpected status answer from ${clientUrl} (${status}): ${JSON.stringify(body)}`)
        )
      }
      return Effect.succeed({
        memberId: String(header["member_id"]),
        leader: String(body["leader"] ?? ""),
        raftTerm: String(body["raftTerm"] ?? header["raft_term"] ?? "0"),
        version: String(body["version"] ?? "")
      })
    }),
    live
  )

/** Peer URLs of all members `clientUrl` knows about (`POST /v3/cluster/member/list`). */
const memberPeerUrls = (clientUrl: string): Effect.Effect<ReadonlyArray<string>, EtcdHarnessError> =>
  fetchJson(`${clientUrl}/v3/cluster/member/list`, { method: "POST", body: "{}" }, HEALTH_REQUEST_TIMEOUT_MS).pipe(
    Effect.map(({ body }) => {
      const members = isRecord(body) && Array.isArray(body["members"]) ? (body["members"] as Array<unknown>) : []
      return members.flatMap((m) =>
        isRecord(m) && Array.isArray(m["peerURLs"]) ? (m["peerURLs"] as Array<unknown>).map(String) : []
      )
    })
  )

// ---------------------------------------------------------------------------------------------------------------------
// Ports, temp dirs, binary lookup
// ---------------------------------------------------------------------------------------------------------------------

const listenOnFreePort = Effect.acquireRelease(
  Effect.async<net.Server, EtcdHarnessError>((resume) => {
    const server = net.createServer()
    server.once(
      "error",
      (error) => resume(Effect.fail(harnessError(`cannot find a free port: ${error.message}`, error)))
    )
    server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
  }),
  (server) =>
    Effect.async<void>((resume) => {
      server.close(() => resume(Effect.void))
    })
)

/** `count` distinct free loopback ports (all held open at once, then released). */
const freePorts = (count: number): Effect.Effect<ReadonlyArray<number>, EtcdHarnessError> =>
  Effect.forEach(Array.from({ length: count }), () => listenOnFreePort, { concurrency: "unbounded" }).pipe(
    Effect.map((servers) =>
      servers.map((server) => {
        const address = server.address()
        return typeof address === "object" && address !== null ? address.port : 0
      })
    ),
    Effect.filterOrFail(
      (ports) => ports.every((p) => p > 0),
      () => harnessError("cannot find free ports")
    ),
    Effect.scoped
  )

const tempDir = (prefix: string): Effect.Effect<string, EtcdHarnessError, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.tryPromise({
      try: async () => {
        installExitHook()
        const dir = await fs.mkdtemp(path.join(os.tmpdir(), `${prefix}-`))
        liveDirs.add(dir)
        return dir
      },
      catch: (cause) => harnessError(`cannot create temp dir: ${describeCause(cause)}`, cause)
    }),
    (dir) =>
      Effect.promise(async () => {
        await fs.rm(dir, { recursive: true, force: true }).catch(() => undefined)
        liveDirs.delete(dir)
      })
  )

/** Absolute path of an executable `etcd` on PATH, if any. */
const findEtcdBinary: Effect.Effect<Option.Option<string>> = Effect.promise(async () => {
  const dirs = (process.env["PATH"] ?? "").split(path.delimiter).filter((d) => d !== "")
  for (const dir of dirs) {
    const candidate = path.join(dir, "etcd")
    try {
      const stat = await fs.stat(candidate)
      if (!stat.isFile()) continue
      await fs.access(candidate, fsConstants.X_OK)
      return Option.some(candidate)
    } catch {
      // not here
    }
  }
  return Option.none()
})

const requireEtcdBinary: Effect.Effect<string, EtcdHarnessError> = findEtcdBinary.pipe(
  Effect.flatMap(
    Option.match({
      onNone: () => Effect.fail(harnessError(NO_ETCD_MESSAGE)),
      onSome: Effect.succeed
    })
  )
)

// ---------------------------------------------------------------------------------------------------------------------
// Nodes
// ---------------------------------------------------------------------------------------------------------------------

interface NodeConfig {
  readonly binary: string
  readonly name: string
  readonly clientPort: number
  readonly peerPort: number
  readonly initialCluster: string
  readonly clusterToken: string
  /** Extra etcd flags, after the harness's own (a later flag wins): `["--auth-token-ttl", "2"]`, say. */
  readonly args?: ReadonlyArray<string> | undefined
}

const clientUrlOf = (port: number) => `http://127.0.0.1:${port}`
const peerUrlOf = (port: number) => `http://127.0.0.1:${port}`

const etcdArgs = (config: NodeConfig, dataDir: string): ReadonlyArray<string> => [
  "--name",
  config.name,
  "--data-dir",
  dataDir,
  "--listen-client-urls",
  clientUrlOf(config.clientPort),
  "--advertise-client-urls",
  clientUrlOf(config.clientPort),
  "--listen-peer-urls",
  peerUrlOf(config.peerPort),
  "--initial-advertise-peer-urls",
  peerUrlOf(config.peerPort),
  "--initial-cluster",
  config.initialCluster,
  "--initial-cluster-state",
  "new",
  "--initial-cluster-token",
  config.clusterToken,
  // etcd 3.4 defaults to the deprecated capnslog logger (info level, very chatty); zap honours --log-level.
  "--logger",
  "zap",
  "--log-outputs",
  "stderr",
  "--log-level",
  "error",
  "--enable-v2=false",
  ...(config.args ?? [])
]

/** Poll /health until it answers `true` (and the answering etcd is really ours). */
const waitHealthy = (
  name: string,
  clientUrl: string,
  peerUrl: string,
  proc: Proc
): Effect.Effect<void, EtcdHarnessError> =>
  Effect.gen(function*() {
    while (true) {
      const exit = proc.exit()
      if (exit !== undefined) {
        return yield* Effect.fail(
          harnessError(`etcd ${name} ${describeExit(exit)} before it became healthy; last output:\n${proc.tail()}`)
        )
      }
      if (yield* etcdHealthy(clientUrl)) {
        // Guard against another etcd that grabbed our port between the free-port probe and our bind.
        const peers = yield* memberPeerUrls(clientUrl).pipe(Effect.orElseSucceed(() => [] as ReadonlyArray<string>))
        if (peers.includes(peerUrl)) return
        if (proc.exit() !== undefined) continue
      }
      yield* Effect.sleep(POLL_EVERY)
    }
  }).pipe(
    Bounded.timeoutFail({
      duration: HEALTHY_WITHIN,
      onTimeout: () =>
        harnessError(
          `etcd ${name} at ${clientUrl} not healthy within ${
            Duration.format(HEALTHY_WITHIN)
          }; last output:\n${proc.tail()}`
        )
    })
  )

interface NodeHandle {
  readonly node: EtcdNode
  /** Graceful stop (SIGCONT, SIGTERM, SIGKILL after 5 s). */
  readonly stop: Effect.Effect<void>
}

/**
 * Creates the data dir, spawns etcd and waits until it is healthy. The process is stopped and the
 * data dir removed when the scope closes — also when starting fails.
 */
const makeNode = (config: NodeConfig): Effect.Effect<NodeHandle, EtcdHarnessError, Scope.Scope> =>
  Effect.gen(function*() {
    const dataDir = yield* tempDir(`etcdseq-${config.name}`)
    const clientUrl = clientUrlOf(config.clientPort)
    const peerUrl = peerUrlOf(config.peerPort)
    const lock = yield* Effect.makeSemaphore(1)
    const state: { proc: Proc | undefined } = { proc: undefined }

    const running = (): Proc | undefined => {
      const proc = state.proc
      return proc !== undefined && proc.exit() === undefined ? proc : undefined
    }

    const stopUnlocked = Effect.suspend(() => {
      const proc = state.proc
      return proc === undefined ? Effect.void : stopProc(proc)
    })

    const startUnlocked = Effect.gen(function*() {
      yield* stopUnlocked
      const proc = yield* spawnProc(config.binary, etcdArgs(config, dataDir))
      state.proc = proc
      yield* waitHealthy(config.name, clientUrl, peerUrl, proc)
    })

    const node: EtcdNode = {
      name: config.name,
      get pid() {
        return running()?.pid
      },
      clientUrl,
      peerUrl,
      dataDir,
      pause: Effect.sync(() => {
        const proc = running()
        if (proc !== undefined) signalProc(proc, "SIGSTOP")
      }),
      resume: Effect.sync(() => {
        const proc = running()
        if (proc !== undefined) signalProc(proc, "SIGCONT")
      }),
      kill: lock.withPermits(1)(
        Effect.suspend(() => {
          const proc = state.proc
          return proc === undefined ? Effect.void : killProc(proc)
        })
      ).pipe(live),
      restart: lock.withPermits(1)(startUnlocked).pipe(live),
      isRunning: Effect.sync(() => running() !== undefined)
    }

    const stop = lock.withPermits(1)(stopUnlocked).pipe(live)
    // Registered after the data dir, so it runs before the dir is removed.
    yield* Effect.addFinalizer(() => stop)
    yield* node.restart
    return { node, stop }
  })

/**
 * Runs `self` in a child scope of the current one; if it fails, the child scope is closed right away (so a failed
 * attempt leaves no process or dir behind), otherwise it lives as long as the outer scope.
 */
const inChildScope = <A, E, R>(self: Effect.Effect<A, E, R | Scope.Scope>): Effect.Effect<A, E, R | Scope.Scope> =>
  Effect.gen(function*() {
    const outer = yield* Effect.scope
    const inner = yield* Scope.fork(outer, ExecutionStrategy.sequential)
    return yield* Scope.extend(self, inner).pipe(
      Effect.onExit((exit) => (Exit.isFailure(exit) ? Scope.close(inner, exit) : Effect.void))
    )
  })

/** Retry with fresh ports when another process took one of ours between probing and etcd's bind. */
const retryOnPortClash = <A, R>(
  self: Effect.Effect<A, EtcdHarnessError, R | Scope.Scope>
): Effect.Effect<A, EtcdHarnessError, R | Scope.Scope> =>
  inChildScope(self).pipe(
    Effect.retry({
      times: PORT_RETRIES - 1,
      while: (error) => error.message.includes("address already in use")
    })
  )

const parseTerm = (raw: string): bigint => (/^\d+$/.test(raw) ? BigInt(raw) : 0n)

const clusterToken = () => `etcdseq-${randomUUID().slice(0, 8)}`

const startEtcdWith = (
  binary: string,
  name: string,
  args?: ReadonlyArray<string>
): Effect.Effect<EtcdNode, EtcdHarnessError, Scope.Scope> =>
  retryOnPortClash(
    Effect.gen(function*() {
      const ports = yield* freePorts(2)
      const [clientPort = 0, peerPort = 0] = ports
      const handle = yield* makeNode({
        binary,
        name,
        clientPort,
        peerPort,
        initialCluster: `${name}=${peerUrlOf(peerPort)}`,
        clusterToken: clusterToken(),
        args
      })
      return handle.node
    })
  )

/**
 * A single-node etcd from the `etcd` binary on PATH, on free loopback ports with a temp data dir. `args` are extra
 * etcd flags, kept across `restart`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const startEtcd = (
  options?: { readonly name?: string; readonly args?: ReadonlyArray<string> }
): Effect.Effect<EtcdNode, EtcdHarnessError, Scope.Scope> =>
  Effect.gen(function*() {
    const binary = yield* requireEtcdBinary
    return yield* startEtcdWith(binary, options?.name ?? "etcd", options?.args)
  }).pipe(live)

/**
 * An etcd cluster of `size` nodes (`etcd-1` … `etcd-<size>`), all started concurrently; every node is healthy on
 * success, and all are stopped when the scope closes.
 *
 * Errors: `EtcdHarnessError` as `startEtcd`, or for a size that is not a positive integer.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { startCluster } from "effect-etcdseq/testing"
 *
 * const leaderLoss = Effect.gen(function*() {
 *   const cluster = yield* startCluster(3)
 *   const leader = yield* cluster.leader
 *   yield* leader.kill
 * }).pipe(Effect.scoped)
 * ```
 * @since 0.1.0
 * @category constructors
 */
export const startCluster = (size: number = 3): Effect.Effect<EtcdCluster, EtcdHarnessError, Scope.Scope> =>
  Effect.gen(function*() {
    if (!Number.isInteger(size) || size < 1) {
      return yield* Effect.fail(harnessError(`cluster size must be a positive integer, got ${size}`))
    }
    const binary = yield* requireEtcdBinary
    return yield* retryOnPortClash(
      Effect.gen(function*() {
        const ports = yield* freePorts(size * 2)
        const token = clusterToken()
        const configs = Array.from({ length: size }, (_, i): Omit<NodeConfig, "initialCluster"> => ({
          binary,
          name: `etcd-${i + 1}`,
          clientPort: ports[2 * i] ?? 0,
          peerPort: ports[2 * i + 1] ?? 0,
          clusterToken: token
        }))
        const initialCluster = configs.map((c) => `${c.name}=${peerUrlOf(c.peerPort)}`).join(",")
        const handles = yield* Effect.forEach(configs, (c) => makeNode({ ...c, initialCluster }), {
          concurrency: "unbounded"
        })
        const nodes = handles.map((h) => h.node)

        const claimLeader = (n: EtcdNode, timeoutMs: number) =>
          etcdStatus(n.clientUrl, timeoutMs).pipe(
            Effect.map((s) =>
              s.leader !== "" && s.leader === s.memberId
                ? Option.some({ node: n, term: parseTerm(s.raftTerm) })
                : Option.none()
            ),
            Effect.orElseSucceed(() => Option.none<{ node: EtcdNode; term: bigint }>())
          )

        /** One round of asking every running node; the self-declared leader with the highest term, if any. */
        const leaderNow = (timeoutMs: number) =>
          Effect.gen(function*() {
            const runningNodes = yield* Effect.filter(nodes, (n) => n.isRunning)
            const claims = yield* Effect.forEach(runningNodes, (n) => claimLeader(n, timeoutMs), {
              concurrency: "unbounded"
            })
            const best = Arr.getSomes(claims).reduce<{ node: EtcdNode; term: bigint } | undefined>(
              (acc, c) => (acc === undefined || c.term > acc.term ? c : acc),
              undefined
            )
            return Option.fromNullable(best?.node)
          })

        const leader = Effect.gen(function*() {
          while (true) {
            const found = yield* leaderNow(HEALTH_REQUEST_TIMEOUT_MS)
            if (Option.isSome(found)) return found.value
            yield* Effect.sleep(POLL_EVERY)
          }
        }).pipe(
          Bounded.timeoutFail({
            duration: LEADER_WITHIN,
            onTimeout: () => harnessError(`no etcd leader within ${Duration.format(LEADER_WITHIN)}`)
          }),
          live
        )

        // Followers first, leader last: a leader that gets SIGTERM tries to hand leadership to a peer it still
        // sees as connected and, if that peer is dying too, blocks for ~7 s (etcd 3.4 request timeout) before exiting.
        // Once its peers are gone it exits at once.
        const stopAll = Effect.gen(function*() {
          const current = yield* leaderNow(500)
          const isLeader = (h: NodeHandle) => Option.isSome(current) && current.value === h.node
          yield* Effect.forEach(handles.filter((h) => !isLeader(h)), (h) => h.stop, {
            concurrency: "unbounded",
            discard: true
          })
          yield* Effect.forEach(handles.filter(isLeader), (h) => h.stop, { discard: true })
        }).pipe(live)
        // Runs before the per-node finalizers, which then only remove the data dirs.
        yield* Effect.addFinalizer(() => stopAll)

        const startAll = Effect.forEach(
          nodes,
          (n) => Effect.flatMap(n.isRunning, (running) => (running ? Effect.void : n.restart)),
          { concurrency: "unbounded", discard: true }
        ).pipe(live)

        const cluster: EtcdCluster = {
          nodes,
          endpoints: nodes.map((n) => n.clientUrl),
          leader,
          stopAll,
          startAll
        }
        return cluster
      })
    )
  }).pipe(live)

// ---------------------------------------------------------------------------------------------------------------------
// Endpoint resolution
// ---------------------------------------------------------------------------------------------------------------------

const endpointsFromEnv = (): Option.Option<ReadonlyArray<string>> => {
  const raw = process.env["ETCD_ENDPOINTS"]
  if (raw === undefined) return Option.none()
  const endpoints = raw
    .split(",")
    .map((e) => e.trim())
    .filter((e) => e !== "")
  return endpoints.length === 0 ? Option.none() : Option.some(endpoints)
}

/** `Some(endpoint)` if a Docker engine answered and the container started, `None` if there is no engine. */
const startContainer: Effect.Effect<Option.Option<string>, EtcdHarnessError, Scope.Scope> = Effect.gen(function*() {
  const tc = yield* Effect.tryPromise({
    try: () => import("testcontainers"),
    catch: (cause) => harnessError(`cannot load testcontainers: ${describeCause(cause)}`, cause)
  }).pipe(Effect.option)
  if (Option.isNone(tc)) return Option.none()
  const { GenericContainer, Wait, getContainerRuntimeClient } = tc.value

  const runtime = yield* Effect.tryPromise(() => getContainerRuntimeClient()).pipe(
    Bounded.timeout("15 seconds"),
    Effect.option
  )
  if (Option.isNone(runtime)) return Option.none()

  const container = yield* Effect.acquireRelease(
    Effect.tryPromise({
      try: () =>
        new GenericContainer(CONTAINER_IMAGE)
          .withCommand([
            "/usr/local/bin/etcd",
            "--name=etcd0",
            "--data-dir=/etcd-data",
            "--listen-client-urls=http://0.0.0.0:2379",
            "--advertise-client-urls=http://127.0.0.1:2379",
            "--listen-peer-urls=http://0.0.0.0:2380",
            "--initial-advertise-peer-urls=http://127.0.0.1:2380",
            "--initial-cluster=etcd0=http://127.0.0.1:2380",
            "--initial-cluster-state=new",
            `--initial-cluster-token=${clusterToken()}`,
            "--log-level=error"
          ])
          .withExposedPorts(2379)
          .withWaitStrategy(Wait.forHttp("/health", 2379).forStatusCode(200))
          .withStartupTimeout(CONTAINER_STARTUP_MS)
          .start(),
      catch: (cause) =>
        harnessError(
          `a Docker engine answered but the ${CONTAINER_IMAGE} container did not start: ${describeCause(cause)}`,
          cause
        )
    }).pipe(
      Bounded.timeoutFail({
        duration: Duration.millis(CONTAINER_STARTUP_MS + 30_000),
        onTimeout: () => harnessError(`the ${CONTAINER_IMAGE} container did not start in time`)
      })
    ),
    (c) => Effect.promise(() => c.stop().then(() => undefined, () => undefined))
  )
  return Option.some(`http://${container.getHost()}:${container.getMappedPort(2379)}`)
})

/**
 * The etcd endpoints the tests should use: `ETCD_ENDPOINTS` (nothing started), else an `etcd` binary on PATH
 * (one node, stopped with the scope), else a testcontainers etcd (stopped with the scope; `testcontainers` is an
 * optional peer dependency), else an error that says how to get etcd.
 *
 * Errors: `EtcdHarnessError` with `NO_ETCD_MESSAGE` when none of them is there.
 *
 * @since 0.1.0
 * @category constructors
 */
export const resolveEndpoints: Effect.Effect<ResolvedEtcdEndpoints, EtcdHarnessError, Scope.Scope> = Effect.gen(
  function*() {
    const fromEnv = endpointsFromEnv()
    if (Option.isSome(fromEnv)) return { endpoints: fromEnv.value, source: "env" } as const

    const binary = yield* findEtcdBinary
    if (Option.isSome(binary)) {
      const node = yield* startEtcdWith(binary.value, "etcd")
      return { endpoints: [node.clientUrl], source: "binary" } as const
    }

    const container = yield* startContainer
    if (Option.isSome(container)) return { endpoints: [container.value], source: "container" } as const

    return yield* Effect.fail(harnessError(NO_ETCD_MESSAGE))
  }
).pipe(live)

/**
 * The etcd of a test suite, as a service: one etcd per test file.
 *
 * @example
 * ```ts
 * import { expect, layer } from "@effect/vitest"
 * import { Effect } from "effect"
 * import { EtcdSeq } from "effect-etcdseq"
 * import { EtcdEndpoints } from "effect-etcdseq/testing"
 *
 * layer(EtcdEndpoints.layer, { timeout: "60 seconds", excludeTestServices: true })("my suite", (it) => {
 *   it.effect("joins", () =>
 *     Effect.gen(function*() {
 *       const seq = yield* EtcdSeq.make({ key: "my-suite/joins" })
 *       expect((yield* seq.current).count).toBe(1)
 *       // Scoped inside the client: a member leaves through its client, so the client must close after it.
 *     }).pipe(Effect.scoped, Effect.provide(EtcdEndpoints.etcd)))
 * })
 * ```
 * @since 0.1.0
 * @category tags
 */
export class EtcdEndpoints extends Context.Tag("effect-etcdseq/testing/EtcdEndpoints")<
  EtcdEndpoints,
  ResolvedEtcdEndpoints
>() {
  /**
   * The endpoints from {@link resolveEndpoints}, held for the life of the layer.
   *
   * @since 0.1.0
   * @category layers
   */
  static readonly layer: Layer.Layer<EtcdEndpoints, EtcdHarnessError> = Layer.scoped(EtcdEndpoints, resolveEndpoints)

  /**
   * A new `Etcd` client of the suite's etcd each time it is built.
   *
   * @since 0.1.0
   * @category layers
   */
  static readonly etcd: Layer.Layer<Etcd, EtcdSeqError, EtcdEndpoints> = Layer.scoped(
    Etcd,
    Effect.flatMap(EtcdEndpoints, ({ endpoints }) => Etcd.make({ endpoints }))
  )
}
