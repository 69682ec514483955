/**
 * `GroupView`: a group as an operator sees it, from outside, with `EtcdSeq.observe`.
 *
 * @since 0.1.0
 */

/**
 * A live member of the group, as `EtcdSeq.members` lists it.
 *
 * @since 0.1.0
 * @category models
 */
export interface Member {
  /**
   * The member's id, `<lease id in hex>_<number>`: its key is `<group>/members/<id>` (`@<instance>` with an
   * instance). Members that share an `Etcd` client share its lease (one per TTL), so the number tells them apart.
   */
  readonly id: string
  /**
   * The member's `instance`, when it has one: its key is then `<group>/members/@<instance>`, and the id changes from
   * one incarnation to the next while the place stays.
   *
   * @since 0.1.0
   */
  readonly instance: string | undefined
  readonly metadata: string
  readonly index: number
  /**
   * Revision at which the member joined (its key's create revision): the join order. Members that one client added
   * at the same moment are written in one transaction and share it; among them, the `id` orders.
   */
  readonly joinRevision: number
}

/**
 * A group's view as its members hold it, and what its exclusive modes hold and wait for.
 *
 * - `revision` and `members`: the view (`members` as `EtcdSeq.members` lists them), named by the revision every member
 *   holding it has in its `Info`.
 * - `locks`: the index locks of `runAssigned({ exclusive: "index" })`, each with its holder, fence and the contenders
 *   waiting behind it.
 * - `handover`: the revisions published by members of `runAssigned({ exclusive: "group" })`: "I run no work of an
 *   older view".
 * - `shards`: when the group's members run `runShards`, each shard's planned owner, the claim that holds it and the
 *   claims waiting.
 * - `waiting`: what the group waits for, one line each (a handover not published yet, a lock or claim waited for, a
 *   shard not yet held by its planned owner). Empty when the group has converged.
 *
 * @example
 * ```ts
 * import { Effect, Stream } from "effect"
 * import { Etcd, EtcdSeq } from "effect-etcdseq"
 *
 * const progress = EtcdSeq.observe("prod/indexer").pipe(
 *   Stream.runForEach((view) => Effect.log(`${view.members.length} members, waiting: ${view.waiting.join("; ")}`)),
 *   Effect.provide(Etcd.layerConfig())
 * )
 * ```
 * @since 0.1.0
 * @category models
 */
export interface GroupView {
  readonly group: string
  /** The view's name: the revision of the last join or leave it includes (`Info.revision` of its members). */
  readonly revision: number
  readonly members: ReadonlyArray<Member>
  readonly locks: ReadonlyArray<IndexLock>
  readonly handover: ReadonlyArray<{ readonly id: string; readonly revision: number }>
  readonly shards: ShardsView | undefined
  readonly waiting: ReadonlyArray<string>
}

/**
 * An index lock of `runAssigned({ exclusive: "index" })`: the member id holding it, the fence its run got (the lock
 * key's create revision), and the ids of the contenders behind it, in order.
 *
 * @since 0.1.0
 * @category models
 */
export interface IndexLock {
  readonly index: number
  readonly holder: string
  readonly fence: number
  readonly waiting: ReadonlyArray<string>
}

/**
 * The shards of a group whose members run `runShards`.
 *
 * @since 0.1.0
 * @category models
 */
export interface ShardsView {
  /** The group's number of shards, as its members declare it. */
  readonly shards: number
  readonly owners: ReadonlyArray<ShardOwner>
}

/**
 * One shard: the member id the plan names for it, the member id whose claim holds it (and that claim's fence), and the
 * ids whose claims wait behind.
 *
 * @since 0.1.0
 * @category models
 */
export interface ShardOwner {
  readonly shard: number
  readonly planned: string
  readonly holder: string | undefined
  readonly fence: number | undefined
  readonly waiting: ReadonlyArray<string>
}
