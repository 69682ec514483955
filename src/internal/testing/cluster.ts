/**
 * An etcd cluster of processes: n nodes started together from one `--initial-cluster`, the raft leader found by
 * asking every node, and a stop order that does not make the leader wait for peers that are dying.
 */
import { Array as Arr, Duration, Effect, Option, type Scope } from "effect"
import * as Bounded from "../bounded.js"
import { requireEtcdBinary } from "./binary.js"
import { live, POLL_EVERY } from "./clock.js"
import { type EtcdHarnessError, harnessError } from "./error.js"
import { clusterToken, makeNode, type NodeConfig, type NodeHandle, peerUrlOf } from "./etcdNode.js"
import { etcdStatus, HEALTH_REQUEST_TIMEOUT_MS } from "./gateway.js"
import type { EtcdCluster, EtcdNode } from "./model.js"
import { freePorts, retryOnPortClash } from "./ports.js"

const LEADER_WITHIN = Duration.seconds(10)

// --- Start-up ---

/** `size` nodes on fresh ports, one cluster token, all started concurrently; each stops with the scope. */
const startNodes = (
  binary: string,
  size: number
): Effect.Effect<ReadonlyArray<NodeHandle>, EtcdHarnessError, Scope.Scope> =>
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
    return yield* Effect.forEach(configs, (c) => makeNode({ ...c, initialCluster }), { concurrency: "unbounded" })
  })

// --- Leader ---

const parseTerm = (raw: string): bigint => (/^\d+$/.test(raw) ? BigInt(raw) : 0n)

interface LeaderClaim {
  readonly node: EtcdNode
  readonly term: bigint
}

/** `Some` with its term if `node` says it is the leader; `None` if it says otherwise or does not answer. */
const claimLeader = (node: EtcdNode, timeoutMs: number): Effect.Effect<Option.Option<LeaderClaim>> =>
  etcdStatus(node.clientUrl, timeoutMs).pipe(
    Effect.map((s) =>
      s.leader !== "" && s.leader === s.memberId ? Option.some({ node, term: parseTerm(s.raftTerm) }) : Option.none()
    ),
    Effect.orElseSucceed(() => Option.none<LeaderClaim>())
  )

/** One round of asking every running node; the self-declared leader with the highest term, if any. */
const leaderNow = (nodes: ReadonlyArray<EtcdNode>, timeoutMs: number): Effect.Effect<Option.Option<EtcdNode>> =>
  Effect.gen(function*() {
    const runningNodes = yield* Effect.filter(nodes, (n) => n.isRunning)
    const claims = yield* Effect.forEach(runningNodes, (n) => claimLeader(n, timeoutMs), {
      concurrency: "unbounded"
    })
    const best = Arr.getSomes(claims).reduce<LeaderClaim | undefined>(
      (acc, c) => (acc === undefined || c.term > acc.term ? c : acc),
      undefined
    )
    return Option.fromNullable(best?.node)
  })

/** Asks until some node leads, up to `LEADER_WITHIN` (an election may be going on). */
const awaitLeader = (nodes: ReadonlyArray<EtcdNode>): Effect.Effect<EtcdNode, EtcdHarnessError> =>
  Effect.gen(function*() {
    while (true) {
      const found = yield* leaderNow(nodes, HEALTH_REQUEST_TIMEOUT_MS)
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

// --- Stop and start ---

/**
 * Followers first, leader last: a leader that gets SIGTERM tries to hand leadership to a peer it still sees as
 * connected and, if that peer is dying too, blocks for ~7 s (etcd 3.4 request timeout) before exiting. Once its peers
 * are gone it exits at once.
 */
const stopLeaderLast = (handles: ReadonlyArray<NodeHandle>): Effect.Effect<void> =>
  Effect.gen(function*() {
    const current = yield* leaderNow(handles.map((h) => h.node), 500)
    const isLeader = (h: NodeHandle) => Option.isSome(current) && current.value === h.node
    yield* Effect.forEach(handles.filter((h) => !isLeader(h)), (h) => h.stop, {
      concurrency: "unbounded",
      discard: true
    })
    yield* Effect.forEach(handles.filter(isLeader), (h) => h.stop, { discard: true })
  }).pipe(live)

/** Restarts every stopped node, concurrently; healthy when it succeeds. */
const startStopped = (nodes: ReadonlyArray<EtcdNode>): Effect.Effect<void, EtcdHarnessError> =>
  Effect.forEach(
    nodes,
    (n) => Effect.flatMap(n.isRunning, (running) => (running ? Effect.void : n.restart)),
    { concurrency: "unbounded", discard: true }
  ).pipe(live)

// --- The cluster ---

/** Starts the nodes and assembles the cluster; the whole attempt is retried on a port clash. */
const startClusterWith = (binary: string, size: number): Effect.Effect<EtcdCluster, EtcdHarnessError, Scope.Scope> =>
  retryOnPortClash(
    Effect.gen(function*() {
      const handles = yield* startNodes(binary, size)
      const nodes = handles.map((h) => h.node)
      const stopAll = stopLeaderLast(handles)
      // Runs before the per-node finalizers, which then only remove the data dirs.
      yield* Effect.addFinalizer(() => stopAll)
      const cluster: EtcdCluster = {
        nodes,
        endpoints: nodes.map((n) => n.clientUrl),
        leader: awaitLeader(nodes),
        stopAll,
        startAll: startStopped(nodes)
      }
      return cluster
    })
  )

/** An etcd cluster of `size` nodes from the `etcd` binary on PATH, stopped when the scope closes. */
export const startCluster = (size: number = 3): Effect.Effect<EtcdCluster, EtcdHarnessError, Scope.Scope> =>
  Effect.gen(function*() {
    if (!Number.isInteger(size) || size < 1) {
      return yield* Effect.fail(harnessError(`cluster size must be a positive integer, got ${size}`))
    }
    const binary = yield* requireEtcdBinary
    return yield* startClusterWith(binary, size)
  }).pipe(live)
