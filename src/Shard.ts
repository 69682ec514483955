/**
 * `Shard`: what `EtcdSeq.runShards` hands to the work it runs for one shard.
 *
 * @since 0.1.0
 */
import type { Info } from "./Info.js"

/**
 * One shard of a group's `shards`, owned by this member until it moves.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { EtcdSeq, EtcdSeqLive } from "effect-etcdseq"
 *
 * const partitions = EtcdSeq.runShards((shard) =>
 *   Effect.log(`consuming partition ${shard.id} of ${shard.shards} under fence ${shard.fence}`).pipe(
 *     Effect.zipRight(Effect.never)
 *   ), { shards: 64 }).pipe(Effect.provide(EtcdSeqLive))
 * ```
 * @since 0.1.0
 * @category models
 */
export interface Shard {
  /** The shard's number, in `0..shards-1`. */
  readonly id: number
  /** The group's number of shards. */
  readonly shards: number
  /**
   * Grows with every acquisition of this shard, by any member: a fencing token. A downstream system that remembers
   * the highest fence it saw for a shard can refuse writes from an older owner.
   */
  readonly fence: number
  /**
   * The etcd key of this member's claim on the shard, `<group>/claims/<id>/<member id>.<run>`: the shard is the
   * member's while the key exists, and its create revision is `fence`. A write to etcd that compares it in its
   * transaction (`FenceEtcd.ofShard`) fails from the moment the member lost the shard.
   *
   * @since 0.1.0
   */
  readonly claimKey: string
  /**
   * The member's Info when it acquired the shard. A shard that stays with its member keeps running across view
   * changes, so the member's index and count may since have changed.
   */
  readonly info: Info
}
