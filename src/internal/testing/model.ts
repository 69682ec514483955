/**
 * The shapes the harness's modules build. `src/testing.ts` declares the same shapes, documented, as its public
 * types; each of its functions is typed with those, so the two cannot drift apart unnoticed.
 */
import type { Effect } from "effect"
import type { EtcdHarnessError } from "./error.js"

export interface EtcdNode {
  readonly name: string
  readonly pid: number | undefined
  readonly clientUrl: string
  readonly peerUrl: string
  readonly dataDir: string
  readonly pause: Effect.Effect<void>
  readonly resume: Effect.Effect<void>
  readonly kill: Effect.Effect<void>
  readonly restart: Effect.Effect<void, EtcdHarnessError>
  readonly isRunning: Effect.Effect<boolean>
}

export interface EtcdCluster {
  readonly nodes: ReadonlyArray<EtcdNode>
  readonly endpoints: ReadonlyArray<string>
  readonly leader: Effect.Effect<EtcdNode, EtcdHarnessError>
  readonly stopAll: Effect.Effect<void>
  readonly startAll: Effect.Effect<void, EtcdHarnessError>
}

export interface ResolvedEtcdEndpoints {
  readonly endpoints: ReadonlyArray<string>
  readonly source: "env" | "binary" | "container"
}

export interface EtcdStatus {
  readonly memberId: string
  readonly leader: string
  readonly raftTerm: string
  readonly version: string
}
