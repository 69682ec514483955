/**
 * The ordered membership view of one group, as plain data and pure functions: no etcd, no effects.
 *
 * Join order is a member key's create revision: etcd assigns revisions from one global, total order (also across a
 * multi-member cluster), so every client that applies the same events derives the same order. Members a client
 * writes in one transaction share a revision; among them, the name orders.
 */
import { Either, Schema } from "effect"
import { Info } from "../Info.js"
import type * as Api from "./etcd/api.js"
import * as Keys from "./keys.js"
import { invalidWeight } from "./shardPlan.js"

/**
 * One live member of the view. `id` is `<lease id in hex>_<number>`: the lease it is bound to (shared by the members
 * of one client), and a number unique among that client's members. `name` is the last segment of its key: the id,
 * or `@<instance>` for a member with an instance, whose incarnations share the key (and so the name and the place)
 * while each has an id of its own.
 */
export interface Entry {
  readonly id: string
  /** What stays of the member across its incarnations: the key's last segment. Shards are planned by it. */
  readonly name: string
  readonly instance?: string | undefined
  readonly createRevision: number
  readonly metadata: string
  /**
   * A member with an instance that left and keeps its place until its next incarnation takes it or the TTL runs out:
   * it runs no work (the group handover does not wait for it).
   */
  readonly parked?: true | undefined
  /** The number of shards the member runs `runShards` with, once it does. */
  readonly shards?: number | undefined
  /** The group's move policy the member declared with `shards`: absent, no bound (see {@link Declaration}). */
  readonly maxMoves?: number | undefined
  /** The same: the settle window, in milliseconds; absent, none. */
  readonly settleMillis?: number | undefined
  /** Its weight in the shard plan, when its record gives a valid one other than 1 (absent: 1). */
  readonly weight?: number | undefined
}

/**
 * What a member running `runShards` declares in its record: the number of shards and the group's move policy, the
 * same on every member. A policy at its default (no bound on moves, no settle window) is not written, so a record
 * written before the policy existed declares the default.
 */
export interface Declaration {
  readonly shards: number
  /** An integer >= 1; absent for no bound. */
  readonly maxMoves?: number | undefined
  /** An integer > 0; absent for none. */
  readonly settleMillis?: number | undefined
}

/** The declaration with its defaults left out, as the record holds it. */
export const declaration = (
  shards: number,
  policy: { readonly maxMoves: number; readonly settleMillis: number }
): Declaration => ({
  shards,
  ...(Number.isFinite(policy.maxMoves) ? { maxMoves: policy.maxMoves } : {}),
  ...(policy.settleMillis > 0 ? { settleMillis: policy.settleMillis } : {})
})

/** A member's declaration, or `undefined` when it declares no shards. */
export const declarationOf = (entry: Entry): Declaration | undefined =>
  entry.shards === undefined
    ? undefined
    : { shards: entry.shards, maxMoves: entry.maxMoves, settleMillis: entry.settleMillis }

/** Two declarations alike: same shards, same policy. */
export const sameDeclaration = (a: Declaration | undefined, b: Declaration | undefined): boolean =>
  a === undefined || b === undefined
    ? a === b
    : a.shards === b.shards && a.maxMoves === b.maxMoves && a.settleMillis === b.settleMillis

export interface View {
  /** Live members ordered by `createRevision`, then `name` (see {@link compare}). */
  readonly members: ReadonlyArray<Entry>
  /** Revision of the last join, leave or rename the view includes: the view's name across the group. */
  readonly revision: number
  /** Highest revision whose events under the group prefix the view has applied. */
  readonly seen: number
  /**
   * The view was re-read and waits for its rename (see {@link reread}): its members are right, its name is not yet
   * the group's, so nobody may take an Info from it.
   */
  readonly awaitingName: boolean
}

/** A key-value as etcd reports it (the seam's). */
export type RawKeyValue = Api.KeyValue

export type RawEvent = Api.Event

/**
 * The value a member writes under its key, as JSON: `{ "v": 1, "metadata": "..." }`, plus `id` (the incarnation's
 * member id) under an instance key, `parked` when a member with an instance left and keeps its place for the next
 * incarnation, `shards` once it runs `runShards` (with `maxMoves` and `settleMillis`, its move policy, when not the
 * default), and `weight` when it is not 1 (so a default record stays the same bytes as before weights). The version
 * lets a later format be told apart; other fields are
 * ignored, so a later version may add some.
 */
const MemberRecord = Schema.Struct({
  v: Schema.Literal(1),
  metadata: Schema.String,
  id: Schema.optional(Schema.String),
  parked: Schema.optional(Schema.Literal(true)),
  shards: Schema.optional(Schema.Int.pipe(Schema.positive())),
  maxMoves: Schema.optional(Schema.Int.pipe(Schema.positive())),
  settleMillis: Schema.optional(Schema.Int.pipe(Schema.positive())),
  // Any number: one that is not a weight counts as 1 (see `decode`), so a bad weight never drops the member.
  weight: Schema.optional(Schema.Number)
})

const decodeJson = Schema.decodeUnknownEither(Schema.parseJson())
const decodeRecord = Schema.decodeUnknownEither(MemberRecord)
const encodeRecord = Schema.encodeSync(Schema.parseJson(MemberRecord))

/**
 * Small values decoded lately, by their text: the members of a fleet mostly write the same record (the same
 * metadata), so a storm of N joins decodes a handful of values, not N. Bounded, and cleared when full.
 */
const recordOfValue = new Map<string, typeof MemberRecord.Type | "invalid JSON" | "invalid record">()

const decodeValue = (value: string): typeof MemberRecord.Type | "invalid JSON" | "invalid record" => {
  let record = recordOfValue.get(value)
  if (record === undefined) {
    const json = decodeJson(value)
    record = Either.isLeft(json)
      ? "invalid JSON"
      : Either.getOrElse(decodeRecord(json.right), () => "invalid record" as const)
    // Small values only: metadata may be up to 1 MiB, and a thousand of those must not stay in memory.
    if (value.length <= 1_024) {
      if (recordOfValue.size >= 1_024) recordOfValue.clear()
      recordOfValue.set(value, record)
    }
  }
  return record
}

/** A member's record; `id` only under an instance key (elsewhere the key names it). */
export const encodeValue = (
  metadata: string,
  extra: {
    readonly shards?: Declaration | undefined
    readonly id?: string | undefined
    readonly parked?: boolean | undefined
    readonly weight?: number | undefined
  } = {}
): string =>
  encodeRecord({
    v: 1,
    metadata,
    ...(extra.id === undefined ? {} : { id: extra.id }),
    ...(extra.parked === true ? { parked: true as const } : {}),
    ...(extra.shards === undefined ? {} : { shards: extra.shards.shards }),
    ...(extra.shards?.maxMoves === undefined ? {} : { maxMoves: extra.shards.maxMoves }),
    ...(extra.shards?.settleMillis === undefined ? {} : { settleMillis: extra.shards.settleMillis }),
    ...(extra.weight === undefined || extra.weight === 1 ? {} : { weight: extra.weight })
  })

export type Decoded =
  | { readonly _tag: "Member"; readonly entry: Entry }
  | { readonly _tag: "Foreign"; readonly key: string; readonly reason: string }

/**
 * Decodes a key-value under the members prefix. A key counts as a member only when the member id it gives (its name,
 * or its record's under an instance key) is the lease it is bound to and its value is what this library writes, so
 * a stray key can never take an index (it would never leave: nothing would revoke it).
 */
export const decode = (membersPrefix: string, kv: RawKeyValue): Decoded => {
  const name = Keys.memberOfKey(membersPrefix, kv.key)
  if (name === undefined) return { _tag: "Foreign", key: kv.key, reason: "not a member key" }
  const record = decodeValue(kv.value)
  if (record === "invalid JSON") return { _tag: "Foreign", key: kv.key, reason: "value is not JSON" }
  if (record === "invalid record") return { _tag: "Foreign", key: kv.key, reason: "value is not a member record" }
  const instance = Keys.instanceOfName(name)
  const id = instance === undefined ? name : record.id ?? ""
  if (!Keys.isBoundTo(id, kv.lease)) return { _tag: "Foreign", key: kv.key, reason: "not bound to the lease it names" }
  return {
    _tag: "Member",
    entry: {
      id,
      name,
      ...(instance === undefined ? {} : { instance }),
      createRevision: kv.createRevision,
      metadata: record.metadata,
      ...(record.parked === true ? { parked: true as const } : {}),
      ...(record.shards === undefined ? {} : { shards: record.shards }),
      ...(record.shards === undefined || record.maxMoves === undefined ? {} : { maxMoves: record.maxMoves }),
      ...(record.shards === undefined || record.settleMillis === undefined
        ? {}
        : { settleMillis: record.settleMillis }),
      ...(record.weight === undefined || record.weight === 1 || invalidWeight(record.weight) !== undefined
        ? {}
        : { weight: record.weight })
    }
  }
}

export const empty: View = { members: [], revision: 0, seen: 0, awaitingName: false }

/** Join order: create revision, then name (members written in one transaction share their create revision). */
const compare = (
  a: { readonly createRevision: number; readonly name: string },
  b: { readonly createRevision: number; readonly name: string }
): number => a.createRevision - b.createRevision || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)

/** Position where an entry of this create revision and name is or would be inserted. */
const search = (members: ReadonlyArray<Entry>, place: { readonly createRevision: number; readonly name: string }) => {
  let lo = 0
  let hi = members.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (compare(members[mid]!, place) < 0) lo = mid + 1
    else hi = mid
  }
  return lo
}

const sorted = (entries: Iterable<Entry>): ReadonlyArray<Entry> => [...entries].sort(compare)

/**
 * The view read at `readRevision` when a client starts following its group. A read cannot see when the last leave
 * happened, so the revision is the newest join it holds; members only take Infos from views that include their own
 * join, which comes later than any read they started from, so they agree on it.
 */
export const fromSnapshot = (entries: Iterable<Entry>, readRevision: number): View => {
  const members = sorted(entries)
  const revision = members.reduce((max, e) => Math.max(max, e.createRevision), 0)
  return { members, revision, seen: readRevision, awaitingName: false }
}

/**
 * The view re-read at `readRevision` by a client whose watch missed events (their history was compacted). Its
 * members are right, but not its name: the others name it by the revision of the last change, which a read cannot
 * see (a leave leaves no trace). So the client renames it for everyone: it writes the rename key, and every client,
 * this one included, names the view by that write's revision when its watch delivers it. Until then the view keeps
 * the name of the one before it and gives no Info.
 */
export const reread = (previous: View, entries: Iterable<Entry>, readRevision: number): View => ({
  members: sorted(entries),
  revision: previous.revision,
  seen: readRevision,
  awaitingName: true
})

/**
 * Applies the events of one watch response. The result is a new view only when something changed; one response
 * makes at most one new view, whatever number of events it carries.
 */
export const applyEvents = (
  view: View,
  membersPrefix: string,
  events: ReadonlyArray<RawEvent>
): View => {
  let members: Array<Entry> | undefined
  let revision = view.revision
  let seen = view.seen
  let awaitingName = view.awaitingName
  const current = (): Array<Entry> => (members ??= view.members.slice())
  // A run of deletes (a lease's expiry, a process's members leaving together) is applied in one pass over the
  // members, not one scan and one splice per key: each deleted name with its revision.
  let deleting: Map<string, number> | undefined
  const applyDeletes = () => {
    if (deleting === undefined) return
    const gone = deleting
    deleting = undefined
    const list = members ?? view.members
    let removed = -1
    const kept = list.filter((e) => {
      const at = gone.get(e.name)
      if (at === undefined) return true
      removed = Math.max(removed, at)
      return false
    })
    if (removed < 0) return
    members = kept
    revision = Math.max(revision, removed)
  }
  for (const event of events) {
    if (event._tag === "Delete") {
      seen = Math.max(seen, event.modRevision)
      const name = Keys.memberOfKey(membersPrefix, event.key)
      if (name !== undefined) (deleting ??= new Map()).set(name, event.modRevision)
      continue
    }
    applyDeletes()
    seen = Math.max(seen, event.kv.modRevision)
    if (event.kv.key === membersPrefix + Keys.renameSegment) {
      revision = event.kv.modRevision
      awaitingName = false
      continue
    }
    const decoded = decode(membersPrefix, event.kv)
    if (decoded._tag === "Foreign") {
      // A member key rewritten into something else (another lease, a foreign value) no longer leaves with its
      // lease, so it stops counting: its owner sees itself gone and registers anew.
      const name = Keys.memberOfKey(membersPrefix, event.kv.key)
      const at = name === undefined ? -1 : (members ?? view.members).findIndex((e) => e.name === name)
      if (at >= 0) {
        current().splice(at, 1)
        revision = event.kv.modRevision
      }
      continue
    }
    const entry = decoded.entry
    const list = current()
    const at = search(list, entry)
    const existing = list[at]
    if (existing !== undefined && existing.name === entry.name) {
      // A rewrite of a member's value keeps its place: the member set is unchanged. So does a new incarnation of a
      // member with an instance taking its key over (or its leave parking it): the others' index and count do not
      // change, but the view is renamed. The new incarnation names its first view after its own write (a client
      // names a view it read by its newest join, and a takeover keeps the key's create revision), and its work must
      // run under a fence above its predecessor's: everyone names the view by the takeover.
      list[at] = entry
      if (existing.id !== entry.id || existing.parked !== entry.parked) revision = event.kv.modRevision
    } else {
      list.splice(at, 0, entry)
      revision = event.kv.modRevision
    }
  }
  applyDeletes()
  if (members === undefined && seen === view.seen && revision === view.revision) return view
  return { members: members ?? view.members, revision, seen, awaitingName }
}

/** Index of the member with this name and create revision, or -1. */
const indexOf = (view: View, name: string, createRevision: number): number => {
  const at = search(view.members, { createRevision, name })
  return view.members[at]?.name === name ? at : -1
}

export type Standing =
  | { readonly _tag: "Member"; readonly info: Info }
  /** The view has not yet applied the member's own join. */
  | { readonly _tag: "Pending" }
  /** The view has applied the member's join and later lost it: the key is gone. */
  | { readonly _tag: "Gone" }
  /** Its key is another incarnation's now: a member with the same instance took it over. */
  | { readonly _tag: "Taken"; readonly by: string }

/**
 * Where a member stands in a view: `id` and `name` its own, `createRevision` its key's, `writtenAt` the revision its
 * registration wrote the key at (the create revision, unless it took an instance's key over).
 */
export const standing = (
  view: View,
  member: {
    readonly id: string
    readonly name: string
    readonly createRevision: number
    readonly writtenAt: number
  }
): Standing => {
  if (view.seen < member.writtenAt) return { _tag: "Pending" }
  const index = indexOf(view, member.name, member.createRevision)
  if (index < 0) return { _tag: "Gone" }
  const holder = view.members[index]!.id
  return holder === member.id
    ? { _tag: "Member", info: Info.make(index, view.members.length, view.revision) }
    : { _tag: "Taken", by: holder }
}
