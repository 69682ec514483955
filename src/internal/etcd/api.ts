/**
 * The seam: every etcd operation the library uses, as one narrow interface with two implementations, over the
 * `etcd3` package (`etcd3.ts`) and in memory (`memory.ts`). Nothing else in the library talks to etcd.
 *
 * The operations are etcd's own, reduced to what the library needs: ranges (a key or a prefix, paged, at a revision,
 * in create-revision order), puts and deletes, transactions with compares, prefix or key watches from a revision,
 * and leases. Values are strings, revisions and lease ids numbers and decimal strings as etcd prints them.
 */
import { Data, type Duration, Effect, Exit, Mailbox, Predicate, type Scope } from "effect"
import type { EtcdRequestFailed, EtcdUnavailable } from "../../EtcdSeqError.js"

/** What a request fails with: no etcd answered, or etcd answered no. */
export type RequestError = EtcdUnavailable | EtcdRequestFailed

/** A key-value as etcd reports it. */
export interface KeyValue {
  readonly key: string
  readonly value: string
  /** The lease the key is bound to, int64 decimal; `"0"` for none. */
  readonly lease: string
  readonly createRevision: number
  readonly modRevision: number
}

export type Event =
  | { readonly _tag: "Put"; readonly kv: KeyValue }
  | { readonly _tag: "Delete"; readonly key: string; readonly modRevision: number }

/** The key an event is about. */
export const eventKey = (event: Event): string => event._tag === "Put" ? event.kv.key : event.key

/** The revision an event happened at. */
export const eventRevision = (event: Event): number => event._tag === "Put" ? event.kv.modRevision : event.modRevision

/** The keys a range or a watch covers: one key, or every key under a prefix. */
export type Target = { readonly key: string } | { readonly prefix: string }

export interface Range {
  readonly target: Target
  /** Keys from this one on (inclusive, within the target): the next page of a paged read. */
  readonly from?: string | undefined
  readonly limit?: number | undefined
  /** Read at this revision (a consistent snapshot across pages); the latest by default. */
  readonly revision?: number | undefined
  /** Only keys created at or before this revision. */
  readonly maxCreateRevision?: number | undefined
  /** Key order (the default), or newest creation first. */
  readonly order?: "key" | "createDescending" | undefined
  /** Values left out: `value` is `""`. */
  readonly keysOnly?: boolean | undefined
}

export interface RangeResult {
  readonly kvs: ReadonlyArray<KeyValue>
  /** More keys match beyond `limit`. */
  readonly more: boolean
  /** The store's revision when etcd served the range (its header's): the latest, whatever revision was read. */
  readonly revision: number
}

/**
 * A compare of a transaction: a key's create or mod revision against a number (a missing key's are 0), or its value
 * against a string, byte by byte (a missing key's value compares as nothing: the compare fails, as etcd's does).
 */
export type Compare =
  | {
    readonly key: string
    readonly target: "create" | "mod"
    readonly result: "equal" | "greater" | "less"
    readonly value: number
  }
  | {
    readonly key: string
    readonly target: "value"
    readonly result: "equal" | "greater" | "less"
    readonly value: string
  }

export type Op =
  | { readonly _tag: "Put"; readonly key: string; readonly value: string; readonly lease?: string | undefined }
  | { readonly _tag: "Delete"; readonly key: string }
  | { readonly _tag: "Range"; readonly range: Range }

export type OpResult =
  | { readonly _tag: "Put" }
  | { readonly _tag: "Delete"; readonly deleted: number }
  | { readonly _tag: "Range"; readonly result: RangeResult }

/** The key-value a transaction's single-key `Range` op found, if any. */
export const rangeKv = (result: OpResult | undefined): KeyValue | undefined =>
  result?._tag === "Range" ? result.result.kvs[0] : undefined

export interface Txn {
  readonly compare: ReadonlyArray<Compare>
  readonly success: ReadonlyArray<Op>
  readonly failure?: ReadonlyArray<Op> | undefined
}

export interface TxnResult {
  readonly succeeded: boolean
  /** The store's revision after the transaction (the revision of its writes, if it wrote). */
  readonly revision: number
  readonly results: ReadonlyArray<OpResult>
}

/**
 * Why a watch ended. `compacted`: its start revision was compacted away (etcd cancelled it), only a re-read can
 * catch up; otherwise the connection dropped and it may resume from the last revision it delivered. `wasConnected`:
 * it had been established, so resuming at once is reasonable.
 */
export class WatchEnded extends Data.TaggedError("WatchEnded")<{
  readonly compacted: boolean
  readonly wasConnected: boolean
  readonly cause: unknown
}> {}

/** A watch's mailbox, shut down with the scope, and how the watch ends: a `WatchEnded` item, then done. */
export const watchMailbox: Effect.Effect<
  {
    readonly mailbox: Mailbox.Mailbox<WatchResponse | WatchEnded>
    readonly end: (ended: WatchEnded) => void
  },
  never,
  Scope.Scope
> = Effect.map(
  Effect.acquireRelease(Mailbox.make<WatchResponse | WatchEnded>(), (m) => m.shutdown),
  (mailbox) => ({
    mailbox,
    end: (ended) => {
      mailbox.unsafeOffer(ended)
      mailbox.unsafeDone(Exit.void)
    }
  })
)

/** One watch response: the events of one or more revisions, in order. */
export interface WatchResponse {
  readonly events: ReadonlyArray<Event>
}

/** Outcome of one keepalive: the lease lives on (renewed) or etcd does not know it (revoked or expired). */
export type KeepAlive = "renewed" | "gone"

/** The narrow interface: one client of one etcd. */
export interface EtcdApi {
  /** Where requests go (for errors and spans); `memory://...` for the in-memory etcd. */
  readonly endpoints: ReadonlyArray<string>
  /** Deadline of each request; the implementations enforce it. */
  readonly requestTimeout: Duration.Duration
  readonly range: (range: Range) => Effect.Effect<RangeResult, RequestError>
  /** Writes complete even when interrupted: abandoned in flight, one could land after the delete meant to undo it. */
  readonly put: (
    key: string,
    value: string,
    lease?: string
  ) => Effect.Effect<{ readonly revision: number }, RequestError>
  readonly delete: (key: string) => Effect.Effect<{ readonly revision: number; readonly deleted: number }, RequestError>
  /** Completes even when interrupted, as `put`. */
  readonly txn: (txn: Txn) => Effect.Effect<TxnResult, RequestError>
  /**
   * The watch responses for `target` from `startRevision`, in a mailbox that ends with a `WatchEnded` item, then is
   * done; drained whole, responses that arrived while the consumer was busy are taken at once. Cancelled when the
   * scope closes.
   */
  readonly watch: (
    target: Target,
    startRevision: number
  ) => Effect.Effect<Mailbox.ReadonlyMailbox<WatchResponse | WatchEnded>, never, Scope.Scope>
  /** A new lease of `ttlSeconds`: its id. */
  readonly grant: (ttlSeconds: number) => Effect.Effect<string, RequestError>
  /** One keepalive, answered within `within` or failed as unavailable. */
  readonly keepAlive: (lease: string, within: Duration.Duration) => Effect.Effect<KeepAlive, RequestError>
  /** Revokes the lease and deletes its keys; a lease etcd does not know counts as revoked. */
  readonly revoke: (lease: string) => Effect.Effect<void, RequestError>
}

/** etcd's refusal of a write under a lease it does not know (revoked or expired); `lease` when the seam knows it. */
export class LeaseNotFound extends Data.TaggedError("LeaseNotFound")<{ readonly lease?: string | undefined }> {
  override get message(): string {
    return `etcdserver: requested lease not found${this.lease === undefined ? "" : ` (${this.lease})`}`
  }
}

/** etcd's refusal of a read at a revision compaction has removed; `revision`, the compaction's, when known. */
export class Compacted extends Data.TaggedError("Compacted")<{ readonly revision?: number | undefined }> {
  override get message(): string {
    return `etcdserver: mvcc: required revision has been compacted${
      this.revision === undefined ? "" : ` (below ${this.revision})`
    }`
  }
}

/**
 * True when etcd refused a request for a lease it does not know: the lease is gone. Both implementations report the
 * refusal as a `LeaseNotFound` in `EtcdRequestFailed.error`, known by its tag.
 */
export const isLeaseNotFound = (error: RequestError): boolean =>
  error._tag === "EtcdRequestFailed" && Predicate.isTagged(error.error, "LeaseNotFound")

/** True when etcd refused a read at a compacted revision (a `Compacted`, known by its tag, as `isLeaseNotFound`). */
export const isCompacted = (error: RequestError): boolean =>
  error._tag === "EtcdRequestFailed" && Predicate.isTagged(error.error, "Compacted")
