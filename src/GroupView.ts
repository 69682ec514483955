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
  /**
   * The member's weight in the shard plan (`EtcdSeqOptions.weight`): 1 unless its record gives another.
   *
   * @since 0.2.0
   */
  readonly weight: number
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
 * - `controls` and `drains`: the operator's inputs to the shard plan (pins, pauses, the freeze; the members that
 *   drain), which `shards` has applied.
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
  /**
   * The operator's controls of the shard plan (`etcdseq shards pin|pause|freeze`), as every member reads them.
   *
   * @since 0.2.0
   */
  readonly controls: ShardControls
  /**
   * The ids of the members that drain (`EtcdSeq.drain`, `etcdseq drain`), in index order: the plan gives them no
   * shard.
   *
   * @since 0.2.0
   */
  readonly drains: ReadonlyArray<string>
  readonly waiting: ReadonlyArray<string>
}

/**
 * The operator's controls of a group's shard plan, stored under `<group>/shards/` and obeyed by every member's plan:
 *
 * - `pins`: a shard to run at the member with that instance (or name), while it is live and not draining; otherwise
 *   the shard stays with the plan's owner.
 * - `paused`: shards nobody runs (a pause stops a pinned shard too).
 * - `frozen`: no planned moves: each shard stays with its owner when the freeze was set (`frozenOwners`, member names),
 *   while that owner is live and not draining; the shards of members that are gone (or drain) still move.
 *
 * @example
 * ```ts
 * import type { GroupView } from "effect-etcdseq"
 *
 * const describe = (view: GroupView) =>
 *   `${view.controls.pins.length} pinned, ${view.controls.paused.length} paused, frozen: ${view.controls.frozen}`
 * ```
 * @since 0.2.0
 * @category models
 */
export interface ShardControls {
  readonly pins: ReadonlyArray<{ readonly shard: number; readonly to: string }>
  readonly paused: ReadonlyArray<number>
  readonly frozen: boolean
  /** While frozen: each shard's owner (by member name: its id, or `@<instance>`) when the freeze was set. */
  readonly frozenOwners: ReadonlyArray<string | null> | undefined
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
 * One shard: the member id the plan names for it (`undefined` while it is paused: nobody runs it), the member id whose
 * claim holds it (and that claim's fence), and the ids whose claims wait behind.
 *
 * @since 0.1.0
 * @category models
 */
export interface ShardOwner {
  readonly shard: number
  readonly planned: string | undefined
  readonly holder: string | undefined
  readonly fence: number | undefined
  readonly waiting: ReadonlyArray<string>
}
