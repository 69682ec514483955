/**
 * Every metric the library records, in one place (Effect `Metric`s: exported through whatever metrics layer the
 * application provides).
 */
import { Metric, MetricBoundaries } from "effect"

export const membershipChanges = Metric.counter("etcdseq_membership_changes", {
  description: "Infos a member moved to (joins, leaves and re-registrations of any member of its group)"
})

export const leaseLosses = Metric.counter("etcdseq_lease_losses", {
  description: "Memberships lost: lease expired or revoked (etcd said so), or key deleted"
})

export const fences = Metric.counter("etcdseq_lease_fences", {
  description: "Self-fences: a client's lease not proved alive in time, its members' work stopped until it is"
})

export const reregistrations = Metric.counter("etcdseq_reregistrations", {
  description: "Successful registrations after a lost membership"
})

export const groupReads = Metric.counter("etcdseq_group_reads", {
  description: "Full reads of a group's members (start of a shared watch, or recovery after compaction)"
})

export const watchResponses = Metric.counter("etcdseq_watch_responses", {
  description: "Watch responses applied to shared views"
})

export const shardsOwned = Metric.gauge("etcdseq_shards_owned", {
  description: "Shards whose work runs in this process (runShards)"
})

export const shardsAcquired = Metric.counter("etcdseq_shards_acquired", {
  description: "Shard acquisitions: a shard that moved to a member of this process, or started with it"
})

export const shardsReleased = Metric.counter("etcdseq_shards_released", {
  description: "Shards a member of this process gave up: moved away, or stopped with it"
})

export const shardHandoverWait = Metric.histogram(
  "etcdseq_shard_handover_wait_ms",
  MetricBoundaries.exponential({ start: 1, factor: 2, count: 16 }),
  "From a shard's claim to its work's start: how long its previous owner took to let it go"
)

export const staleKeysDeleted = Metric.counter("etcdseq_stale_keys_deleted", {
  description: "Keys deleted because a write of this process landed after its writer gave up on it (applied late)"
})

/** Tagged `store`: `etcd` (FenceEtcd) or `sql` (FenceSql). */
export const staleFences = Metric.counter("etcdseq_stale_fences", {
  description:
    "Guarded writes refused because the store holds a higher fence: a stale holder's writes that did not land"
})
