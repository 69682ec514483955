/**
 * A drain: the member stays in the group (its Info does not change) while the plan gives it no shard (shardPlan.ts's
 * `eligible`), and it is drained once it holds none and each shard it gave up runs at its planned owner. The request
 * is the member's drain key under its own lease (keys.ts), written for each of its registrations (membership.ts) and
 * deleted by its leave; whether it is drained is a pure function of the group as `EtcdSeq.observe` shows it, so
 * `EtcdSeq.drain` (inside the member) and `etcdseq drain` (outside) wait on the same condition.
 */
import { Effect, Option, Stream } from "effect"
import type { EtcdSeqError } from "../EtcdSeqError.js"
import type { GroupView } from "../GroupView.js"
import * as Observe from "./observe.js"
import type { Library } from "./source.js"

/** How far a drain got in one view of the group. */
export interface Progress {
  /**
   * Why it is over, or `undefined` while it is not: `drained` (it holds no shard and each it gave up runs at its
   * planned owner), `left` (the member is no longer in the group), `nowhere` (every member of the plan drains: the
   * plan keeps its shards where they are, since shards must run somewhere).
   */
  readonly done: "drained" | "left" | "nowhere" | undefined
  /** The group's view has the drain (its controls watch applied the key). */
  readonly seen: boolean
  /** Every shard the member was seen holding (a claim, holding or waiting) since the drain began. */
  readonly moved: ReadonlySet<number>
  /** The shards it still has a claim on. */
  readonly holding: ReadonlyArray<number>
  /** Shards it gave up that do not run at their planned owner yet. */
  readonly pending: ReadonlyArray<number>
}

/** The drain of member `id` in `view`, given the shards `moved` seen before. */
export const progress = (view: GroupView, id: string, moved: ReadonlySet<number>): Progress => {
  const seen = view.drains.includes(id)
  const all = new Set(moved)
  const holding: Array<number> = []
  const planned: Array<number> = []
  for (const owner of view.shards?.owners ?? []) {
    if (owner.holder === id || owner.waiting.includes(id)) {
      holding.push(owner.shard)
      all.add(owner.shard)
    }
    if (owner.planned === id) planned.push(owner.shard)
  }
  const byShard = view.shards?.owners ?? []
  // A paused shard runs nowhere: given up, it is where it should be.
  const pending = [...all].filter((s) =>
    byShard[s]?.planned !== undefined && byShard[s]!.holder !== byShard[s]!.planned
  )
    .sort((a, b) => a - b)
  const done = !view.members.some((m) => m.id === id)
    ? "left"
    : !seen
    ? undefined
    : planned.length > 0
    ? "nowhere"
    : holding.length === 0 && pending.length === 0
    ? "drained"
    : undefined
  return { done, seen, moved: all, holding, pending }
}

/** A line on a drain's progress, for logs and `etcdseq drain`. */
export const describe = (id: string, p: Progress): string =>
  p.done === "drained"
    ? `${id} is drained: it runs no shard${
      p.moved.size === 0 ? "" : `; ${[...p.moved].sort((a, b) => a - b).join(",")} run at their new owners`
    }`
    : p.done === "left"
    ? `${id} is no longer in the group`
    : p.done === "nowhere"
    ? `${id} keeps its shards: every member of the plan drains, and the shards must run somewhere`
    : !p.seen
    ? `${id}: waiting for the group to see the drain`
    : `${id} holds ${p.holding.length} shard(s) [${
      p.holding.join(",")
    }]; ${p.pending.length} given up not yet at their new owner [${p.pending.join(",")}]`

/**
 * Drains the member of `source`: writes its drain key (for this and every later registration) and waits until the
 * member is drained (see `progress`), its progress logged. Fails with the membership's error if it ends with one.
 */
export const drain = (source: Library): Effect.Effect<void, EtcdSeqError> =>
  Effect.gen(function*() {
    yield* source.startDraining
    const views = yield* Observe.observe(source.shared, source.group)
    let moved: ReadonlySet<number> = new Set()
    let said = ""
    yield* views.pipe(
      Stream.mapEffect((view) =>
        Effect.gen(function*() {
          const latest = yield* source.current
          if (latest._tag === "Closed") return "left" as const
          if (latest._tag === "Failed") return yield* Effect.fail(latest.error)
          // Invalid for now (fenced, or registering again): the next registration writes its own drain key.
          if (latest.holder === undefined) return undefined
          const p = progress(view, latest.holder.id, moved)
          moved = p.moved
          const line = describe(latest.holder.id, p)
          if (line !== said) yield* Effect.logInfo(`drain: ${line}`)
          said = line
          return p.done
        })
      ),
      Stream.filter((done) => done !== undefined),
      Stream.runHead,
      Effect.map(Option.getOrUndefined)
    )
  }).pipe(Effect.scoped, Effect.withSpan("EtcdSeq.drain", { attributes: { group: source.group } }))
