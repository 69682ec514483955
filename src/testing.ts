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
import { Context, Effect, Layer, type Scope } from "effect"
import { Etcd } from "./Etcd.js"
import type { EtcdSeqError } from "./EtcdSeqError.js"
import * as Binary from "./internal/testing/binary.js"
import * as Cluster from "./internal/testing/cluster.js"
import * as Endpoints from "./internal/testing/endpoints.js"
import * as HarnessError from "./internal/testing/error.js"
import * as Node from "./internal/testing/etcdNode.js"
import * as Gateway from "./internal/testing/gateway.js"

// ---------------------------------------------------------------------------------------------------------------------
// Errors and models
// ---------------------------------------------------------------------------------------------------------------------

/**
 * The harness could not provide an etcd: no binary, no Docker engine, a process that would not start or get healthy.
 * The message says what happened and, when nothing was found, how to get etcd.
 *
 * @since 0.1.0
 * @category errors
 */
export const EtcdHarnessError: typeof HarnessError.EtcdHarnessError = HarnessError.EtcdHarnessError

/**
 * The harness could not provide an etcd: no binary, no Docker engine, a process that would not start or get healthy.
 * The message says what happened and, when nothing was found, how to get etcd.
 *
 * @since 0.1.0
 * @category errors
 */
// An interface, not an alias: signatures then read `EtcdHarnessError`, not the internal module's name.
// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export interface EtcdHarnessError extends HarnessError.EtcdHarnessError {}

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
export const NO_ETCD_MESSAGE = Binary.NO_ETCD_MESSAGE

// ---------------------------------------------------------------------------------------------------------------------
// etcd's JSON API
// ---------------------------------------------------------------------------------------------------------------------

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
export const etcdHealthy: (clientUrl: string, timeoutMs?: number) => Effect.Effect<boolean> = Gateway.etcdHealthy

/**
 * `POST <clientUrl>/v3/maintenance/status` with `{}`: who leads, and the raft term.
 *
 * Errors: `EtcdHarnessError` when etcd does not answer as expected.
 *
 * @since 0.1.0
 * @category utils
 */
export const etcdStatus: (
  clientUrl: string,
  timeoutMs?: number
) => Effect.Effect<EtcdStatus, EtcdHarnessError> = Gateway.etcdStatus

// ---------------------------------------------------------------------------------------------------------------------
// Nodes, clusters, endpoints
// ---------------------------------------------------------------------------------------------------------------------

/**
 * A single-node etcd from the `etcd` binary on PATH, on free loopback ports with a temp data dir. `args` are extra
 * etcd flags, kept across `restart`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const startEtcd: (
  options?: { readonly name?: string; readonly args?: ReadonlyArray<string> }
) => Effect.Effect<EtcdNode, EtcdHarnessError, Scope.Scope> = Node.startEtcd

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
export const startCluster: (size?: number) => Effect.Effect<EtcdCluster, EtcdHarnessError, Scope.Scope> =
  Cluster.startCluster

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
export const resolveEndpoints: Effect.Effect<ResolvedEtcdEndpoints, EtcdHarnessError, Scope.Scope> =
  Endpoints.resolveEndpoints

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
