/**
 * The in-memory etcd's key store: multi-version keys under one global revision, bumped once per write request (a
 * transaction with several writes makes one revision); a put keeps the create revision of a key that exists, a delete
 * then put makes a new one. A range may read at any revision not compacted away.
 */
import * as Api from "../api.js"
import { compareKeys, matches, type State } from "./state.js"
import * as Watches from "./watches.js"

// --- Reading ---

/** The key's value at revision `at` (the current one by default), if it lived then. */
const latest = (state: State, key: string, at: number = state.revision): Api.KeyValue | undefined => {
  const list = state.versions.get(key)
  if (list === undefined) return undefined
  for (let i = list.length - 1; i >= 0; i--) {
    if (list[i]!.modRevision <= at) return list[i]!.kv
  }
  return undefined
}

/** `current`: the revision reads see by default (a transaction's own, once it wrote). */
export const range = (state: State, request: Api.Range, current: number = state.revision): Api.RangeResult => {
  const at = request.revision ?? current
  if (at < state.compactedBelow) throw new Api.Compacted({ revision: state.compactedBelow })
  if (at > current) throw new Error(`etcdserver: mvcc: required revision is a future revision (${at})`)
  const found: Array<Api.KeyValue> = []
  for (const key of state.versions.keys()) {
    if (!matches(request.target, key)) continue
    if (request.from !== undefined && compareKeys(key, request.from) < 0) continue
    const kv = latest(state, key, at)
    if (kv === undefined) continue
    if (request.maxCreateRevision !== undefined && kv.createRevision > request.maxCreateRevision) continue
    found.push(request.keysOnly === true ? { ...kv, value: "" } : kv)
  }
  found.sort(
    request.order === "createDescending"
      ? (a, b) => b.createRevision - a.createRevision
      : (a, b) => compareKeys(a.key, b.key)
  )
  const limit = request.limit ?? 0
  const more = limit > 0 && found.length > limit
  return { kvs: more ? found.slice(0, limit) : found, more, revision: current }
}

export const compare = (state: State, c: Api.Compare): boolean => {
  const kv = latest(state, c.key)
  const order = (sign: number) => c.result === "equal" ? sign === 0 : c.result === "greater" ? sign > 0 : sign < 0
  if (c.target === "value") {
    // etcd fails a value compare of a key that does not exist, whatever the operator.
    return kv !== undefined && order(Buffer.compare(Buffer.from(kv.value), Buffer.from(c.value)))
  }
  const actual = kv === undefined ? 0 : c.target === "create" ? kv.createRevision : kv.modRevision
  return order(Math.sign(actual - c.value))
}

// --- Writing: one revision per write request, its events to every watch ---

/** Runs `writes` at the next revision; the revision after them (unchanged when they wrote nothing). */
export const commit = (state: State, writes: (revision: number, events: Array<Api.Event>) => void): number => {
  const next = state.revision + 1
  const events: Array<Api.Event> = []
  writes(next, events)
  if (events.length === 0) return state.revision
  state.revision = next
  state.history.push({ revision: next, events })
  Watches.publish(state, events)
  return next
}

/** A put at revision `at`, under `lease` (`"0"` for none): the key moves to that lease's keys. */
export const writePut = (
  state: State,
  at: number,
  events: Array<Api.Event>,
  key: string,
  value: string,
  lease: string
): void => {
  const before = latest(state, key)
  if (lease !== "0" && !state.leases.has(lease)) throw new Api.LeaseNotFound({ lease })
  if (before !== undefined && before.lease !== "0") state.leases.get(before.lease)?.keys.delete(key)
  if (lease !== "0") state.leases.get(lease)!.keys.add(key)
  const kv: Api.KeyValue = { key, value, lease, createRevision: before?.createRevision ?? at, modRevision: at }
  const list = state.versions.get(key)
  if (list === undefined) state.versions.set(key, [{ modRevision: at, kv }])
  else list.push({ modRevision: at, kv })
  events.push({ _tag: "Put", kv })
}

/** A delete at revision `at`: how many keys it deleted (0 or 1). */
export const writeDelete = (state: State, at: number, events: Array<Api.Event>, key: string): number => {
  const before = latest(state, key)
  if (before === undefined) return 0
  if (before.lease !== "0") state.leases.get(before.lease)?.keys.delete(key)
  state.versions.get(key)!.push({ modRevision: at, kv: undefined })
  events.push({ _tag: "Delete", key, modRevision: at })
  return 1
}

// --- Compaction ---

/** History below `below` (at most the current revision) goes: reads and watches from before it fail. */
export const compact = (state: State, below: number): void => {
  state.compactedBelow = Math.max(state.compactedBelow, Math.min(below, state.revision))
  while (state.history.length > 0 && state.history[0]!.revision < state.compactedBelow) state.history.shift()
  for (const [key, list] of state.versions) {
    // Keep the newest version at or below the compaction, and everything after it.
    let keep = 0
    for (let i = 0; i < list.length; i++) if (list[i]!.modRevision <= state.compactedBelow) keep = i
    const kept = list.slice(keep)
    if (kept.length === 1 && kept[0]!.kv === undefined) state.versions.delete(key)
    else state.versions.set(key, kept)
  }
}
