/**
 * Fences a store checks: the error both guards fail with, `FenceEtcd` (data kept in etcd) and `FenceSql` (a SQL
 * database, from `effect-etcdseq/sql`).
 *
 * Every exclusive mode of `runAssigned` and `runShards` assumes that a member stops its work within the fencing margin.
 * A process paused past its TTL cannot, and resumes beside its successor. A store that knows the highest fence written
 * for a resource refuses the older holder's writes; the guards make that check in the same transaction as the writes.
 *
 * @since 0.1.0
 */
import { Data } from "effect"

/**
 * A guarded write was refused: the store holds a fence for `resource` above the writer's `fence`, so a newer holder
 * of the resource has written (or, for a holder key in etcd, the writer's key is gone: it lost the shard or the lock).
 * Nothing of the transaction was written. The writer is stale: it should stop its work, not retry.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { FenceSql } from "effect-etcdseq/sql"
 *
 * // In a holder's transaction, beside its writes.
 * const guarded = FenceSql.check("orders-3", 41).pipe(
 *   Effect.catchTag("StaleFence", (e) =>
 *     Effect.logWarning(`not written: ${e.resource} is at fence ${e.current}, above ours (${e.fence})`))
 * )
 * ```
 * @since 0.1.0
 * @category errors
 */
export class StaleFence extends Data.TaggedError("StaleFence")<{
  /** What the fence guards: a resource name (a fence record) or the holder's key in etcd. */
  readonly resource: string
  /** The fence refused: the writer's. */
  readonly fence: number
  /** The higher one the store holds. */
  readonly current: number
}> {
  override get message(): string {
    return `fence ${this.fence} of "${this.resource}" is stale: the store holds ${this.current}`
  }

  /**
   * One line: a refused write is an expected outcome for a paused holder, and where in the library it was made tells
   * nothing.
   *
   * @internal
   */
  override stack = `${this.name}: ${this.message}`
}
