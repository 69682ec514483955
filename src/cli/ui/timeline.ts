/**
 * What changed from one view of a group to the next, as the page's timeline shows it: joins, leaves, shard plans
 * and moves. Pure: the feed (feed.ts) stamps each change with when it saw it.
 */
import type { GroupView, Member } from "../../GroupView.js"

/** One line of the timeline. */
export interface Change {
  readonly kind: "view" | "join" | "leave" | "plan" | "move" | "etcd"
  readonly text: string
}

const label = (m: Member): string => m.instance === undefined ? m.id : `${m.id}@${m.instance}`

/** At most `shown` shard numbers, then how many in all. */
const shardList = (shards: ReadonlyArray<number>, shown = 8): string =>
  `shard${shards.length === 1 ? "" : "s"} ${shards.slice(0, shown).join(", ")}${
    shards.length > shown ? `, … (${shards.length})` : ""
  }`

/** Shards grouped by the (from, to) pair `pick` gives them, in shard order within a group. */
const grouped = (
  before: GroupView,
  after: GroupView,
  pick: (o: { readonly planned: string | undefined; readonly holder: string | undefined }) => string | undefined
): Map<string, { from: string | undefined; to: string | undefined; shards: Array<number> }> => {
  const groups = new Map<string, { from: string | undefined; to: string | undefined; shards: Array<number> }>()
  const old = before.shards?.owners ?? []
  for (const owner of after.shards?.owners ?? []) {
    const previous = old[owner.shard]
    const from = previous === undefined ? undefined : pick(previous)
    const to = pick(owner)
    if (from === to) continue
    const key = `${from ?? ""}\u0000${to ?? ""}`
    const group = groups.get(key) ?? { from, to, shards: [] }
    group.shards.push(owner.shard)
    groups.set(key, group)
  }
  return groups
}

const moves = (before: GroupView, after: GroupView): Array<Change> => {
  const changes: Array<Change> = []
  // A different number of shards is a new plan altogether: one line, not a move per shard.
  if (before.shards?.shards !== after.shards?.shards) {
    return after.shards === undefined
      ? [{ kind: "plan", text: "no member runs shards any more" }]
      : [{ kind: "plan", text: `${after.shards.shards} shards planned over ${after.members.length} members` }]
  }
  for (const { from, shards, to } of grouped(before, after, (o) => o.planned).values()) {
    changes.push({ kind: "plan", text: `${shardList(shards)} planned for ${to ?? "nobody"} (was ${from ?? "nobody"})` })
  }
  for (const { from, shards, to } of grouped(before, after, (o) => o.holder).values()) {
    const text = from === undefined
      ? `${shardList(shards)} taken by ${to}`
      : to === undefined
      ? `${shardList(shards)} released by ${from}`
      : `${shardList(shards)} moved from ${from} to ${to}`
    changes.push({ kind: "move", text })
  }
  return changes
}

/** The changes from `before` (none: the first view) to `after`, joins and leaves first. */
export const changes = (before: GroupView | undefined, after: GroupView): ReadonlyArray<Change> => {
  if (before === undefined) {
    return [{
      kind: "view",
      text: `first view: ${after.members.length} member${
        after.members.length === 1 ? "" : "s"
      } at revision ${after.revision}`
    }]
  }
  const was = new Set(before.members.map((m) => m.id))
  const is = new Set(after.members.map((m) => m.id))
  return [
    ...after.members.filter((m) => !was.has(m.id)).map((m): Change => ({
      kind: "join",
      text: `${label(m)} joined at index ${m.index}`
    })),
    ...before.members.filter((m) => !is.has(m.id)).map((m): Change => ({
      kind: "leave",
      text: `${label(m)} left (was index ${m.index})`
    })),
    ...moves(before, after)
  ]
}
