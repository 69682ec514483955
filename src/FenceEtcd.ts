/**
 * Guarded writes to etcd: writes committed in one etcd transaction with the check of the writer's fence, so that a
 * holder that lost its share (a process paused past its TTL, say) writes nothing once a newer holder may run.
 *
 * Two kinds of guard:
 *
 * - a **holder key** (`holder`, `ofShard`, `ofAssignment` in `"index"` mode): the holder's own claim or lock key must
 *   still exist with the create revision that is its fence. The key goes when the holder releases the share or its
 *   lease expires, so a write fails from the moment the share is lost, before any successor writes. This is the
 *   compare etcd's own `Mutex.IsOwner()` returns.
 * - a **fence record** (`record`, `ofAssignment` in `"none"` and `"group"` modes, where no key of the holder's stands
 *   for its share): a key per resource holding the highest fence written, as a 20-digit zero-padded decimal. A write
 *   passes when the record holds its fence or a lower one, and records its fence. A lower fence fails once a higher one
 *   was written; equal fences pass (a holder writes many times).
 *
 * Every write fails with `StaleFence` when the check fails, and nothing of it is written. The same check from a shell
 * or any language is one `etcdctl txn` (see the guide, "Exclusive work and fences").
 *
 * @since 0.1.0
 */
import { Effect, Metric } from "effect"
import type { Assignment } from "./Assignment.js"
import { Etcd } from "./Etcd.js"
import { type EtcdSeqError, InvalidOptions } from "./EtcdSeqError.js"
import { StaleFence } from "./Fence.js"
import * as Client from "./internal/client.js"
import * as Api from "./internal/etcd/api.js"
import * as Metrics from "./internal/metrics.js"
import type { Shard } from "./Shard.js"

/**
 * What a guarded write checks: its holder's key (`Holder`) or a fence record (`Record`), with the writer's fence.
 *
 * @since 0.1.0
 * @category models
 */
export type Guard = HolderGuard | RecordGuard

/**
 * The holder's own claim or lock key must exist, created at revision `fence`.
 *
 * @since 0.1.0
 * @category models
 */
export interface HolderGuard {
  readonly _tag: "Holder"
  readonly key: string
  readonly fence: number
}

/**
 * The fence record at `key` must hold `fence` or a lower one (or none yet); the write records `fence`.
 *
 * @since 0.1.0
 * @category models
 */
export interface RecordGuard {
  readonly _tag: "Record"
  readonly key: string
  readonly fence: number
}

/**
 * One write of a guarded transaction.
 *
 * @since 0.1.0
 * @category models
 */
export type Write =
  | { readonly _tag: "Put"; readonly key: string; readonly value: string }
  | { readonly _tag: "Delete"; readonly key: string }

/**
 * What a guarded write that landed reports: the etcd revision of its writes.
 *
 * @since 0.1.0
 * @category models
 */
export interface Committed {
  readonly revision: number
}

/**
 * A guard on the holder key `key`, whose create revision is `fence`: the claim key of a shard, the lock key of an
 * index, or any key of etcd's mutex recipe. A refusal's `current` is the fence of the oldest key left beside it (same
 * prefix, created after it: the next holder), or, when there is none, the revision at which the key was found gone.
 *
 * @example
 * ```ts
 * import { FenceEtcd } from "effect-etcdseq"
 *
 * // From an `etcdseq run --exclusive index` child's environment.
 * const guard = FenceEtcd.holder(process.env["ETCDSEQ_LOCK_KEY"] ?? "", Number(process.env["ETCDSEQ_FENCE"]))
 * ```
 * @since 0.1.0
 * @category constructors
 */
export const holder = (key: string, fence: number): Guard => ({ _tag: "Holder", key, fence })

/**
 * A guard on the fence record at `key` (one key per resource, such as `app/fences/orders`): the write passes when the
 * record holds `fence` or a lower one, and records `fence`. The record is a key of its own, written without a lease:
 * it must outlive every holder.
 *
 * @example
 * ```ts
 * import { FenceEtcd } from "effect-etcdseq"
 *
 * const guard = FenceEtcd.record("app/fences/orders", 41)
 * ```
 * @since 0.1.0
 * @category constructors
 */
export const record = (key: string, fence: number): Guard => ({ _tag: "Record", key, fence })

/**
 * The guard of a shard of `runShards`: its claim key, whose create revision is `shard.fence`.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { EtcdSeq, FenceEtcd } from "effect-etcdseq"
 *
 * const partitions = EtcdSeq.runShards((shard) =>
 *   FenceEtcd.commit(FenceEtcd.ofShard(shard), [FenceEtcd.put(`app/partitions/${shard.id}/owner`, "me")]).pipe(
 *     Effect.zipRight(Effect.never)
 *   ), { shards: 16 })
 * ```
 * @since 0.1.0
 * @category constructors
 */
export const ofShard = (shard: Shard): Guard => holder(shard.claimKey, shard.fence)

/**
 * The guard of a run of `runAssigned`: in `"index"` mode its lock key (`assignment.lockKey`); in `"none"` and
 * `"group"` modes, where no key stands for the run's share, the fence record `recordKey` of the resource written.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { EtcdSeq, FenceEtcd } from "effect-etcdseq"
 *
 * const worker = EtcdSeq.runAssigned((a) =>
 *   FenceEtcd.commit(FenceEtcd.ofAssignment(a, `app/fences/${a.info.index}`), [
 *     FenceEtcd.put(`app/slots/${a.info.index}`, `${a.info.index}/${a.info.count}`)
 *   ]), { exclusive: "index" })
 * ```
 * @since 0.1.0
 * @category constructors
 */
export const ofAssignment = (assignment: Assignment, recordKey: string): Guard =>
  assignment.lockKey === undefined ? record(recordKey, assignment.fence) : holder(assignment.lockKey, assignment.fence)

/**
 * A put of `value` at `key`.
 *
 * @example
 * ```ts
 * import { FenceEtcd } from "effect-etcdseq"
 *
 * const write = FenceEtcd.put("app/orders/42", JSON.stringify({ state: "paid" }))
 * ```
 * @since 0.1.0
 * @category constructors
 */
export const put = (key: string, value: string): Write => ({ _tag: "Put", key, value })

/**
 * A delete of `key`.
 *
 * @example
 * ```ts
 * import { FenceEtcd } from "effect-etcdseq"
 *
 * const write = FenceEtcd.remove("app/orders/42")
 * ```
 * @since 0.1.0
 * @category constructors
 */
export const remove = (key: string): Write => ({ _tag: "Delete", key })

/**
 * Commits `writes` in one etcd transaction with the check of `guard`, through the `Etcd` client in context (the one
 * the member uses: `EtcdSeqLive` provides it): all of them or none. At most 127 writes (etcd's default limit is 128
 * operations per transaction, the record counts as one), each key once.
 *
 * Errors: `StaleFence` when the check fails (nothing written); `InvalidOptions` for a guard whose fence is not a
 * positive integer, an empty key, or a record key that holds something other than a fence; `EtcdUnavailable`,
 * `EtcdRequestFailed` as any request.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { EtcdSeq, EtcdSeqLive, FenceEtcd } from "effect-etcdseq"
 *
 * // Each partition's offset, written only while this member holds the partition.
 * const consume = EtcdSeq.runShards((shard) =>
 *   Effect.iterate(0, {
 *     while: () => true,
 *     body: (offset) =>
 *       FenceEtcd.commit(FenceEtcd.ofShard(shard), [
 *         FenceEtcd.put(`app/partitions/${shard.id}/offset`, String(offset + 1))
 *       ]).pipe(Effect.as(offset + 1), Effect.delay("1 second"))
 *   }), { shards: 16 }).pipe(Effect.provide(EtcdSeqLive))
 * ```
 * @since 0.1.0
 * @category combinators
 */
export const commit = (
  guard: Guard,
  writes: ReadonlyArray<Write>
): Effect.Effect<Committed, StaleFence | EtcdSeqError, Etcd> =>
  Effect.gen(function*() {
    const problem = invalidGuard(guard)
    if (problem !== undefined) return yield* new InvalidOptions({ field: "guard", reason: problem })
    const shared = yield* Client.required(yield* Etcd)
    const ops = writes.map((w): Api.Op => w._tag === "Put" ? { _tag: "Put", key: w.key, value: w.value } : w)
    return yield* guard._tag === "Holder" ? holderTxn(shared.api, guard, ops) : recordTxn(shared.api, guard, ops)
  }).pipe(Effect.withSpan("EtcdSeq.fencedCommit", { attributes: { key: guard?.key, fence: guard?.fence } }))

// internal

const invalidGuard = (guard: Guard): string | undefined =>
  typeof guard !== "object" || guard === null || (guard._tag !== "Holder" && guard._tag !== "Record")
    ? "must be made by FenceEtcd.holder, record, ofShard or ofAssignment"
    : typeof guard.key !== "string" || guard.key === ""
    ? "its key must not be empty"
    : !Number.isSafeInteger(guard.fence) || guard.fence < 1
    ? `its fence must be a positive integer (an etcd revision), got ${String(guard.fence)}`
    : undefined

const refuse = (resource: string, fence: number, current: number) =>
  Metric.increment(Metric.tagged(Metrics.staleFences, "store", "etcd")).pipe(
    Effect.zipRight(Effect.fail(new StaleFence({ resource, fence, current })))
  )

/**
 * The holder's key compared in the transaction of the writes. Its siblings (the other claims of the shard, the other
 * contenders for the lock) are read only when it fails, to say which fence is above the writer's.
 */
const holderTxn = (api: Api.EtcdApi, guard: HolderGuard, ops: ReadonlyArray<Api.Op>) =>
  Effect.gen(function*() {
    const slash = guard.key.lastIndexOf("/")
    const done = yield* api.txn({
      compare: [{ key: guard.key, target: "create", result: "equal", value: guard.fence }],
      success: ops,
      failure: [{
        _tag: "Range",
        range: {
          target: slash > 0 ? { prefix: guard.key.slice(0, slash + 1) } : { key: guard.key },
          keysOnly: true,
          // A shard's claims, an index's contenders: a few keys. Bounded all the same, for a prefix shared by more.
          limit: 256
        }
      }]
    })
    if (done.succeeded) return { revision: done.revision }
    const found = done.results[0]
    const newer = found?._tag === "Range"
      ? found.result.kvs.map((kv) => kv.createRevision).filter((r) => r > guard.fence)
      : []
    return yield* refuse(guard.key, guard.fence, newer.length > 0 ? Math.min(...newer) : done.revision)
  })

/** Fences as records hold them: zero-padded so that etcd's byte-wise value compare orders them as numbers. */
const fenceWidth = 20

const encodeFence = (fence: number): string => String(fence).padStart(fenceWidth, "0")

const decodeFence = (value: string): number | undefined => {
  if (!/^[0-9]{1,20}$/.test(value)) return undefined
  const fence = Number(value)
  return Number.isSafeInteger(fence) ? fence : undefined
}

/**
 * One transaction when the record exists: "the record is below fence + 1" (byte-wise, on padded decimals). A record
 * that does not exist yet, or holds a lower number written unpadded (by hand), fails that compare; it is then
 * replaced in a transaction that compares its mod revision as read, and read again if that moved meanwhile.
 */
const recordTxn = (api: Api.EtcdApi, guard: RecordGuard, ops: ReadonlyArray<Api.Op>) =>
  Effect.gen(function*() {
    const key = guard.key
    const write: ReadonlyArray<Api.Op> = [{ _tag: "Put", key, value: encodeFence(guard.fence) }, ...ops]
    const read: ReadonlyArray<Api.Op> = [{ _tag: "Range", range: { target: { key } } }]
    let done = yield* api.txn({
      compare: [{ key, target: "value", result: "less", value: encodeFence(guard.fence + 1) }],
      success: write,
      failure: read
    })
    while (!done.succeeded) {
      const kv = Api.rangeKv(done.results[0])
      const held = kv === undefined ? 0 : decodeFence(kv.value)
      if (held === undefined) {
        return yield* new InvalidOptions({
          field: "guard",
          reason: `the fence record ${key} holds ${JSON.stringify(kv!.value)}, which is not a fence (a decimal number)`
        })
      }
      if (held > guard.fence) return yield* refuse(key, guard.fence, held)
      done = yield* api.txn({
        compare: [{ key, target: "mod", result: "equal", value: kv?.modRevision ?? 0 }],
        success: write,
        failure: read
      })
    }
    return { revision: done.revision }
  })
