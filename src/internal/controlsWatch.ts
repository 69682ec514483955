/**
 * The operator's inputs to the shard plan, as every member reads them: pins, pauses, the freeze and the drains under
 * `<group>/shards/` (keys.ts), followed by one watch per client per group (a prefix cache, as the claims are) and
 * decoded into the plain data `shardOwners.ownersOf` takes. Every member folds the same keys into the same controls, so
 * every member plans alike; a key or value that is not what this library writes is ignored by all, with a warning.
 */
import { Effect, Either, Schema, type Scope, SubscriptionRef } from "effect"
import type * as Api from "./etcd/api.js"
import * as Keys from "./keys.js"
import * as PrefixCache from "./prefixCache.js"
import * as Controls from "./shardControls.js"
import type { ControlledPlan } from "./shardPlan.js"

/** The controls of one group, decoded. */
export interface GroupControls {
  /** Pins, pauses and whether the plan is frozen. */
  readonly controls: Controls.Controls
  /** While frozen: the owners, by member name, when the freeze was set (`previous` of `Controls.apply`). */
  readonly previous: ControlledPlan | undefined
  /**
   * The ids of the members that drain: their drain key is bound to the lease its name gives, or it was and went (see
   * `ended`).
   */
  readonly drains: ReadonlySet<string>
  /**
   * Drains whose key went, most recent last: a drain ends only with its member (its leave deletes the key with the
   * member's, its lease takes both), so the member stays drained for the plan until the view, followed by another
   * watch and paced, sees it go. Were the drain to end first, the plan would give shards to a member about to vanish,
   * and take them back at once.
   */
  readonly ended: ReadonlySet<string>
  /** The above as canonical text: equal for equal controls (the plans' cache key). */
  readonly text: string
  /** Keys ignored, and why. */
  readonly malformed: ReadonlyArray<{ readonly key: string; readonly reason: string }>
  /** The highest revision applied. */
  readonly seen: number
  /** The keys as read, by key. */
  readonly kvs: ReadonlyMap<string, Api.KeyValue>
}

/** A pin's value: an instance, or a member's name (its id, or `@<instance>`). */
const PinTarget = Schema.String.pipe(Schema.pattern(/^@?[A-Za-z0-9._-]{1,253}$/))

/** The freeze's value: the owners of the shards by member name when it was set, `null` for a shard nobody ran. */
const FrozenRecord = Schema.parseJson(Schema.Struct({
  v: Schema.Literal(1),
  owners: Schema.Array(Schema.NullOr(Schema.String))
}))

const decodePin = Schema.decodeUnknownEither(PinTarget)
const decodeFrozen = Schema.decodeUnknownEither(FrozenRecord)

/** The freeze key's value for `owners` (by member name). */
export const encodeFrozen = (owners: ControlledPlan): string =>
  Schema.encodeSync(FrozenRecord)({ v: 1, owners: owners.map((o) => o ?? null) })

/** No key at all: the plan as it is. */
const empty: GroupControls = derive("", new Map(), 0, new Set())

/** The most drains remembered after their key went: ids are never reused, and drains are rare. */
const endedMax = 4_096

/** The controls the keys under `prefix` say, with the drains that `ended` before. */
function derive(
  prefix: string,
  kvs: ReadonlyMap<string, Api.KeyValue>,
  seen: number,
  ended: ReadonlySet<string>
): GroupControls {
  const pins = new Map<number, string>()
  const paused = new Set<number>()
  const drains = new Set<string>()
  const malformed: Array<{ key: string; reason: string }> = []
  let previous: ControlledPlan | undefined
  let frozen = false
  for (const kv of kvs.values()) {
    const meaning = Keys.shardsKeyOf(prefix, kv.key)
    switch (meaning._tag) {
      case "Malformed":
        malformed.push({ key: kv.key, reason: meaning.reason })
        break
      case "Drain":
        // A drain key no lease holds would keep its member drained forever: only the member's own lease counts.
        if (Keys.isBoundTo(meaning.id, kv.lease)) drains.add(meaning.id)
        else malformed.push({ key: kv.key, reason: "not bound to the lease its member id names" })
        break
      case "Pin": {
        const target = decodePin(kv.value)
        if (Either.isRight(target)) pins.set(meaning.shard, target.right)
        else malformed.push({ key: kv.key, reason: `value "${kv.value.slice(0, 64)}" is not an instance` })
        break
      }
      case "Paused":
        paused.add(meaning.shard)
        break
      case "Frozen": {
        const record = decodeFrozen(kv.value)
        if (Either.isRight(record)) {
          frozen = true
          previous = record.right.owners.map((o) => o ?? undefined)
        } else {
          malformed.push({ key: kv.key, reason: "value is not a freeze record ({\"v\":1,\"owners\":[...]})" })
        }
        break
      }
    }
  }
  for (const id of ended) drains.add(id)
  const text = JSON.stringify({
    pins: [...pins].sort(([a], [b]) => a - b),
    paused: [...paused].sort((a, b) => a - b),
    previous: previous ?? null,
    drains: [...drains].sort()
  })
  return { controls: { pins, paused, frozen }, previous, drains, ended, text, malformed, seen, kvs }
}

/** `ended`, with the drains of `before` whose key is not in `kvs` any more. */
const endedAfter = (prefix: string, before: GroupControls, kvs: ReadonlyMap<string, Api.KeyValue>) => {
  let ended: Set<string> | undefined
  for (const [key, kv] of before.kvs) {
    if (kvs.has(key)) continue
    const meaning = Keys.shardsKeyOf(prefix, key)
    if (meaning._tag !== "Drain" || !Keys.isBoundTo(meaning.id, kv.lease)) continue
    ended ??= new Set(before.ended)
    ended.delete(meaning.id)
    ended.add(meaning.id)
  }
  if (ended === undefined) return before.ended
  for (const id of ended) {
    if (ended.size <= endedMax) break
    ended.delete(id)
  }
  return ended
}

/** The fold the prefix cache runs: the keys by key, the controls derived from them on every change. */
const fold = (prefix: string): PrefixCache.Fold<GroupControls> => {
  const byKey = (kvs: ReadonlyArray<Api.KeyValue>) => new Map(kvs.map((kv) => [kv.key, kv]))
  return {
    initial: (kvs, revision) => derive(prefix, byKey(kvs), revision, new Set()),
    reread: (previous, kvs, revision) => {
      const next = byKey(kvs)
      return derive(prefix, next, revision, endedAfter(prefix, previous, next))
    },
    apply: (state, events) => {
      if (events.length === 0) return state
      const kvs = new Map(state.kvs)
      let seen = state.seen
      for (const event of events) {
        if (event._tag === "Put") {
          kvs.set(event.kv.key, event.kv)
          seen = Math.max(seen, event.kv.modRevision)
        } else {
          kvs.delete(event.key)
          seen = Math.max(seen, event.modRevision)
        }
      }
      return derive(prefix, kvs, seen, endedAfter(prefix, state, kvs))
    },
    seen: (state) => state.seen
  }
}

export interface ControlsWatch {
  /** The controls as the watch last applied them. */
  readonly current: () => GroupControls
  /** The same, for those who follow every change (the runner's wake-ups, `EtcdSeq.observe`). */
  readonly latest: SubscriptionRef.SubscriptionRef<GroupControls>
}

/**
 * Follows the shard controls and drains of `group` for the life of the scope. Keys are not swept (unlike claims): a
 * drain key written by `etcdseq drain` is under the member's lease though this client never wrote it.
 */
export const watch = (api: Api.EtcdApi, group: string): Effect.Effect<ControlsWatch, Api.RequestError, Scope.Scope> =>
  Effect.gen(function*() {
    const prefix = Keys.shardsPrefix(group)
    let last = empty
    const latest = yield* SubscriptionRef.make(last)
    const warned = new Set<string>()
    const changed = (next: GroupControls) =>
      Effect.gen(function*() {
        last = next
        for (const { key, reason } of next.malformed) {
          const at = `${key}@${next.kvs.get(key)?.modRevision}`
          if (warned.has(at)) continue
          if (warned.size >= 1_024) warned.clear()
          warned.add(at)
          yield* Effect.logWarning(`ignoring ${key}: ${reason}`)
        }
        yield* SubscriptionRef.set(latest, next)
      })
    const cache = yield* PrefixCache.follow(api, prefix, fold(prefix), {
      span: "EtcdSeq.controlsWatch",
      onChange: changed
    })
    yield* changed(cache.current())
    return { current: () => last, latest }
  })
