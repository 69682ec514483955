/**
 * One etcd process: its command line, its start-up (spawn, then wait until it is healthy and really ours), and the
 * `EtcdNode` handle with the faults a test injects (pause, resume, kill, restart).
 */
import { Duration, Effect, type Scope } from "effect"
import { randomUUID } from "node:crypto"
import * as Bounded from "../bounded.js"
import { requireEtcdBinary } from "./binary.js"
import { live, POLL_EVERY } from "./clock.js"
import { type EtcdHarnessError, harnessError } from "./error.js"
import { etcdHealthy, memberPeerUrls } from "./gateway.js"
import type { EtcdNode } from "./model.js"
import { freePorts, retryOnPortClash } from "./ports.js"
import { describeExit, killProc, type Proc, signalProc, spawnProc, stopProc } from "./processes.js"
import { tempDir } from "./tempDir.js"

const HEALTHY_WITHIN = Duration.seconds(15)

export interface NodeConfig {
  readonly binary: string
  readonly name: string
  readonly clientPort: number
  readonly peerPort: number
  readonly initialCluster: string
  readonly clusterToken: string
  /** Extra etcd flags, after the harness's own (a later flag wins): `["--auth-token-ttl", "2"]`, say. */
  readonly args?: ReadonlyArray<string> | undefined
}

export interface NodeHandle {
  readonly node: EtcdNode
  /** Graceful stop (SIGCONT, SIGTERM, SIGKILL after 5 s). */
  readonly stop: Effect.Effect<void>
}

const clientUrlOf = (port: number) => `http://127.0.0.1:${port}`
export const peerUrlOf = (port: number) => `http://127.0.0.1:${port}`

/** A fresh `--initial-cluster-token`, so that members of different clusters never join each other. */
export const clusterToken = () => `etcdseq-${randomUUID().slice(0, 8)}`

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

/**
 * Creates the data dir, spawns etcd and waits until it is healthy. The process is stopped and the
 * data dir removed when the scope closes — also when starting fails.
 */
export const makeNode = (config: NodeConfig): Effect.Effect<NodeHandle, EtcdHarnessError, Scope.Scope> =>
  Effect.gen(function*() {
    const dataDir = yield* tempDir(`etcdseq-${config.name}`)
    const clientUrl = clientUrlOf(config.clientPort)
    const peerUrl = peerUrlOf(config.peerPort)
    // One start, stop or kill at a time; `state.proc` is the latest process, running or not.
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

/** A single-node etcd from `binary` on fresh free ports (retried on a port clash). */
export const startEtcdWith = (
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

/** A single-node etcd from the `etcd` binary on PATH; `args` are extra etcd flags, kept across `restart`. */
export const startEtcd = (
  options?: { readonly name?: string; readonly args?: ReadonlyArray<string> }
): Effect.Effect<EtcdNode, EtcdHarnessError, Scope.Scope> =>
  Effect.gen(function*() {
    const binary = yield* requireEtcdBinary
    return yield* startEtcdWith(binary, options?.name ?? "etcd", options?.args)
  }).pipe(live)
