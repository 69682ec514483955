/**
 * The in-memory etcd's data, one mutable record the server's parts share: the key store (store.ts), the lease table
 * (leases.ts), the watch hub (watches.ts) and the faults (faults.ts). Every operation is one synchronous step on it,
 * so each is atomic, as etcd's requests are.
 */
import type { Mailbox } from "effect"
import type * as Api from "../api.js"

/** One version of a key: its value from `modRevision` on, or its delete (`kv` undefined). */
interface Version {
  readonly modRevision: number
  readonly kv: Api.KeyValue | undefined
}

export interface Lease {
  readonly id: string
  readonly ttlSeconds: number
  expiresAt: number
  readonly keys: Set<string>
}

export interface Watch {
  readonly client: number
  readonly target: Api.Target
  readonly mailbox: Mailbox.Mailbox<Api.WatchResponse | Api.WatchEnded>
  readonly end: (ended: Api.WatchEnded) => void
}

export type OutageMode = "unreachable" | "hang"

interface Outage {
  readonly mode: OutageMode
  /** Clients cut off; all of them when undefined. */
  readonly clients: ReadonlySet<number> | undefined
}

export interface State {
  readonly versions: Map<string, Array<Version>>
  readonly leases: Map<string, Lease>
  readonly watches: Set<Watch>
  /** Each write's events, by revision, back to the compaction. */
  readonly history: Array<{ readonly revision: number; readonly events: ReadonlyArray<Api.Event> }>
  revision: number
  compactedBelow: number
  nextLease: number
  clients: number
  outage: Outage | undefined
  readonly crashed: Set<number>
  /** Per client, how many of its next writes land without an answer. */
  readonly answersToLose: Map<number, number>
}

export const make = (): State => ({
  versions: new Map(),
  leases: new Map(),
  watches: new Set(),
  history: [],
  revision: 1,
  compactedBelow: 0,
  nextLease: 0x694d_0000,
  clients: 0,
  outage: undefined,
  crashed: new Set(),
  answersToLose: new Map()
})

/** Byte order of UTF-8 keys, as etcd orders them (JavaScript compares UTF-16 code units). */
export const compareKeys = (a: string, b: string): number => Buffer.compare(Buffer.from(a), Buffer.from(b))

export const matches = (target: Api.Target, key: string): boolean =>
  "key" in target ? key === target.key : key.startsWith(target.prefix)
