/**
 * Contenders for numbered things (a shard's claims, an index's lock keys), as one watch of a prefix follows them:
 * etcd's mutex recipe, in which the oldest key (the lowest create revision) holds and the others wait in order.
 * Pure: a fold of the prefix's keys and events, which `PrefixCache.follow` runs.
 */
import * as Api from "./etcd/api.js"

/** A live key contending for a thing. */
export interface Contender {
  readonly key: string
  readonly owner: string
  readonly createRevision: number
}

/** Every thing's contenders, oldest (the holder) first, and the highest revision applied. */
export interface Contenders {
  readonly byNumber: ReadonlyMap<number, ReadonlyArray<Contender>>
  readonly seen: number
}

/** How the keys of one prefix name their thing and their owner. */
export interface Scheme {
  /** The thing a key of the prefix is about, whatever it holds (a delete has no value or lease to read). */
  readonly numberOf: (key: string) => number | undefined
  /** The owner of a key as written, or `undefined` for a key that contends for nothing (no lease, a foreign name). */
  readonly ownerOf: (kv: Api.KeyValue) => string | undefined
}

/** `contender` in `list`, which it replaces by key, in create-revision order. */
const insert = (list: ReadonlyArray<Contender> | undefined, contender: Contender): ReadonlyArray<Contender> => {
  const next = (list ?? []).filter((c) => c.key !== contender.key)
  let at = next.length
  while (at > 0 && next[at - 1]!.createRevision > contender.createRevision) at--
  return [...next.slice(0, at), contender, ...next.slice(at)]
}

/** A put replaces whatever its key held: a key that contends for nothing leaves only the others. */
const put = (byNumber: Map<number, ReadonlyArray<Contender>>, scheme: Scheme, kv: Api.KeyValue): void => {
  const number = scheme.numberOf(kv.key)
  if (number === undefined) return
  const owner = scheme.ownerOf(kv)
  byNumber.set(
    number,
    owner === undefined
      ? (byNumber.get(number) ?? []).filter((c) => c.key !== kv.key)
      : insert(byNumber.get(number), { key: kv.key, owner, createRevision: kv.createRevision })
  )
  if (byNumber.get(number)!.length === 0) byNumber.delete(number)
}

const remove = (byNumber: Map<number, ReadonlyArray<Contender>>, scheme: Scheme, key: string): void => {
  const number = scheme.numberOf(key)
  if (number === undefined) return
  const rest = (byNumber.get(number) ?? []).filter((c) => c.key !== key)
  if (rest.length === 0) byNumber.delete(number)
  else byNumber.set(number, rest)
}

/** The contenders among a prefix's keys read at `revision`. */
export const read = (scheme: Scheme) => (kvs: ReadonlyArray<Api.KeyValue>, revision: number): Contenders => {
  const byNumber = new Map<number, ReadonlyArray<Contender>>()
  for (const kv of kvs) put(byNumber, scheme, kv)
  return { byNumber, seen: revision }
}

/** The contenders after `events`. Things the events did not touch keep their lists (waiters compare them). */
export const apply = (scheme: Scheme) => (state: Contenders, events: ReadonlyArray<Api.Event>): Contenders => {
  const byNumber = new Map(state.byNumber)
  let seen = state.seen
  for (const event of events) {
    seen = Math.max(seen, Api.eventRevision(event))
    if (event._tag === "Put") put(byNumber, scheme, event.kv)
    else remove(byNumber, scheme, event.key)
  }
  return { byNumber, seen }
}

/** The fold `PrefixCache.follow` runs. */
export const fold = (scheme: Scheme) => ({
  initial: read(scheme),
  reread: (_: Contenders, kvs: ReadonlyArray<Api.KeyValue>, revision: number) => read(scheme)(kvs, revision),
  apply: apply(scheme),
  seen: (state: Contenders) => state.seen
})
