/**
 * Every metric the library records, in one place (Effect `Metric`s: exported through whatever metrics layer the
 * application provides).
 */
import { Metric } from "effect"

export const membershipChanges = Metric.counter("etcdseq_membership_changes", {
  description: "Infos a member moved to (joins, leaves and re-registrations of any member of its group)"
})

export const leaseLosses = Metric.counter("etcdseq_lease_losses", {
  description: "Memberships lost: lease expired or revoked, keepalive failing past the TTL, or key deleted"
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
