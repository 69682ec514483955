import { describe, expect, it } from "@effect/vitest"
import { Equal, FastCheck as fc } from "effect"
import { Info } from "../../src/Info.js"
import * as Keys from "../../src/internal/keys.js"
import * as View from "../../src/internal/view.js"

const prefix = "g/members/"

/** A simulated etcd: every operation takes the next revision, as a transaction would. */
interface Model {
  revision: number
  nextLease: number
  nextMember: number
  live: Array<{ id: string; name: string; lease: string; createRevision: number; writtenAt: number }>
  lastChange: number
  events: Array<View.RawEvent>
}

type Op =
  | { readonly kind: "join"; readonly metadata: string; readonly sharedLease: boolean }
  | { readonly kind: "leave"; readonly pick: number }
  | { readonly kind: "rewrite"; readonly pick: number; readonly metadata: string }
  | { readonly kind: "foreign"; readonly name: string }
  /** A member with an instance joins, or a new incarnation takes its key over. */
  | { readonly kind: "instance"; readonly instance: string; readonly sharedLease: boolean }
  /** Members of one client joining in one transaction: one revision, ordered by name. */
  | { readonly kind: "joinMany"; readonly count: number; readonly sharedLease: boolean }

const op: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant("join" as const),
      metadata: fc.string({ maxLength: 8 }),
      // Members of one client share its lease.
      sharedLease: fc.boolean()
    })
  },
  { weight: 3, arbitrary: fc.record({ kind: fc.constant("leave" as const), pick: fc.nat() }) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant("rewrite" as const),
      pick: fc.nat(),
      metadata: fc.string({ maxLength: 8 })
    })
  },
  { weight: 1, arbitrary: fc.record({ kind: fc.constant("foreign" as const), name: fc.string({ maxLength: 12 }) }) },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant("joinMany" as const),
      count: fc.integer({ min: 2, max: 12 }),
      sharedLease: fc.boolean()
    })
  },
  {
    weight: 2,
    arbitrary: fc.record({
      kind: fc.constant("instance" as const),
      instance: fc.constantFrom("web-0", "web-1", "a.b_c"),
      sharedLease: fc.boolean()
    })
  }
)

const valueOf = (m: { readonly id: string; readonly name: string }, metadata: string) =>
  View.encodeValue(metadata, { id: m.name === m.id ? undefined : m.id })

const put = (
  key: string,
  value: string,
  lease: string,
  createRevision: number,
  modRevision: number
): View.RawEvent => ({
  _tag: "Put",
  kv: { key, value, lease, createRevision, modRevision }
})

const run = (ops: ReadonlyArray<Op>): Model => {
  const model: Model = { revision: 1, nextLease: 7000, nextMember: 0, live: [], lastChange: 0, events: [] }
  for (const o of ops) {
    const rev = ++model.revision
    if (o.kind === "join") {
      const shared = model.live.at(-1)
      const lease = o.sharedLease && shared !== undefined ? shared.lease : String(model.nextLease++)
      const id = Keys.memberId(lease, model.nextMember++)
      model.live.push({ id, name: id, lease, createRevision: rev, writtenAt: rev })
      model.lastChange = rev
      model.events.push(put(prefix + id, View.encodeValue(o.metadata), lease, rev, rev))
    } else if (o.kind === "joinMany") {
      const shared = model.live.at(-1)
      const lease = o.sharedLease && shared !== undefined ? shared.lease : String(model.nextLease++)
      const ids = Array.from({ length: o.count }, () => Keys.memberId(lease, model.nextMember++))
      // In the transaction's order (numbers ascending); they take their places by name ("_10" before "_9").
      for (const id of ids) model.events.push(put(prefix + id, View.encodeValue(""), lease, rev, rev))
      for (const id of [...ids].sort()) model.live.push({ id, name: id, lease, createRevision: rev, writtenAt: rev })
      model.lastChange = rev
    } else if (o.kind === "instance") {
      const shared = model.live.at(-1)
      const lease = o.sharedLease && shared !== undefined ? shared.lease : String(model.nextLease++)
      const id = Keys.memberId(lease, model.nextMember++)
      const name = Keys.instanceName(o.instance)
      const at = model.live.findIndex((m) => m.name === name)
      // A takeover keeps the key's create revision, so its place, and renames the view: the new incarnation's
      // fence must be above its predecessor's.
      const createRevision = at >= 0 ? model.live[at]!.createRevision : rev
      const entry = { id, name, lease, createRevision, writtenAt: rev }
      if (at >= 0) model.live[at] = entry
      else model.live.push(entry)
      model.lastChange = rev
      model.events.push(put(prefix + name, valueOf(entry, ""), lease, createRevision, rev))
    } else if (o.kind === "leave") {
      if (model.live.length === 0) continue
      const [gone] = model.live.splice(o.pick % model.live.length, 1)
      model.lastChange = rev
      model.events.push({ _tag: "Delete", key: prefix + gone!.name, modRevision: rev })
    } else if (o.kind === "rewrite") {
      const m = model.live[o.pick % Math.max(1, model.live.length)]
      if (m === undefined) continue
      model.events.push(put(prefix + m.name, valueOf(m, o.metadata), m.lease, m.createRevision, rev))
    } else {
      // Keys that are not member keys: nested, named otherwise, or unbound to the lease they name.
      model.events.push(put(prefix + o.name + "/x", "{}", "0", rev, rev))
      model.events.push(put(prefix + "zz" + o.name, "{}", "5", rev, rev))
      model.events.push(put(prefix + "abc", View.encodeValue(""), String(0xabc), rev, rev))
      model.events.push(put(prefix + "abc_1", "not json", String(0xabc), rev, rev))
      model.events.push(put(prefix + "abd_1", View.encodeValue(""), String(0xabc), rev, rev))
      // Instance keys whose record names no id, or an id of another lease.
      model.events.push(put(prefix + "@x" + o.name.length, View.encodeValue(""), "5", rev, rev))
      model.events.push(put(prefix + "@y", View.encodeValue("", { id: "abc_1" }), "5", rev, rev))
    }
  }
  return model
}

const chunk = <A>(items: ReadonlyArray<A>, sizes: ReadonlyArray<number>): Array<ReadonlyArray<A>> => {
  const out: Array<ReadonlyArray<A>> = []
  let at = 0
  let i = 0
  while (at < items.length) {
    const size = 1 + (sizes[i++ % Math.max(1, sizes.length)] ?? 0)
    out.push(items.slice(at, at + size))
    at += size
  }
  return out
}

const applyAll = (model: Model, sizes: ReadonlyArray<number>): View.View =>
  chunk(model.events, sizes).reduce((view, batch) => View.applyEvents(view, prefix, batch), View.empty)

const eventRevision = (event: View.RawEvent): number => event._tag === "Put" ? event.kv.modRevision : event.modRevision

describe("view", () => {
  it.prop(
    "a client that starts from a read at any point names the view as everyone does once it applied a later change",
    [fc.array(op, { maxLength: 60 }), fc.array(fc.nat({ max: 6 }), { maxLength: 10 }), fc.nat()],
    ([ops, sizes, at]) => {
      const model = run(ops)
      const split = at % (model.events.length + 1)
      const readAt = model.events.slice(0, split).reduce((max, e) => Math.max(max, eventRevision(e)), 1)
      const read = View.fromSnapshot(
        View.applyEvents(View.empty, prefix, model.events.slice(0, split)).members,
        readAt
      )
      const late = chunk(model.events.slice(split), sizes).reduce(
        (view, batch) => View.applyEvents(view, prefix, batch),
        read
      )
      const everyone = applyAll(model, sizes)
      expect(late.members).toEqual(everyone.members)
      // A join, leave or takeover after the read: a member of the late client (which takes an Info only from a view
      // holding its own join or takeover) and every other member agree on the view's name, so on its fence.
      if (model.lastChange > readAt) expect(late.revision).toBe(everyone.revision)
    }
  )

  it.prop(
    "any joins, leaves, rewrites and foreign keys, in any batching, give a dense 0..n-1 in join order",
    [fc.array(op, { maxLength: 80 }), fc.array(fc.nat({ max: 6 }), { maxLength: 10 })],
    ([ops, sizes]) => {
      const model = run(ops)
      const view = applyAll(model, sizes)
      expect(view.members.map((m) => [m.id, m.name])).toEqual(model.live.map((m) => [m.id, m.name]))
      expect(view.revision).toBe(model.lastChange)
      model.live.forEach((m, index) => {
        const standing = View.standing(view, m)
        expect(standing).toEqual({ _tag: "Member", info: Info.make(index, model.live.length, model.lastChange) })
        if (standing._tag === "Member") expect(standing.info.revision).toBe(model.lastChange)
      })
    }
  )

  it.prop(
    "batching does not change the result, and one batch yields at most one new view",
    [fc.array(op, { maxLength: 60 }), fc.array(fc.nat({ max: 6 }), { maxLength: 10 })],
    ([ops, sizes]) => {
      const model = run(ops)
      const oneByOne = applyAll(model, [0])
      const batched = applyAll(model, sizes)
      expect(batched.members).toEqual(oneByOne.members)
      expect(batched.revision).toBe(oneByOne.revision)
      expect(batched.seen).toBe(oneByOne.seen)
    }
  )

  it.prop(
    "a snapshot of the live members gives the same order and Infos as the events",
    [fc.array(op, { maxLength: 60 })],
    ([ops]) => {
      const model = run(ops)
      const incremental = applyAll(model, [0])
      const entries = [...model.live].reverse().map((m) => ({
        id: m.id,
        name: m.name,
        createRevision: m.createRevision,
        metadata: ""
      }))
      const snapshot = View.fromSnapshot(entries, model.revision)
      expect(snapshot.members.map((m) => m.id)).toEqual(incremental.members.map((m) => m.id))
      for (const m of model.live) {
        const a = View.standing(snapshot, m)
        const b = View.standing(incremental, m)
        expect(a._tag === "Member" && b._tag === "Member" && Equal.equals(a.info, b.info)).toBe(true)
      }
    }
  )

  it.prop(
    "a member is Pending before the view applies its join, and Gone once the view applied its leave",
    [fc.array(op, { maxLength: 40 }), fc.nat()],
    ([ops, pick]) => {
      const model = run([{ kind: "join", metadata: "", sharedLease: false }, ...ops])
      const id = Keys.memberId("7000", 0)
      const first = { id, name: id, createRevision: 2, writtenAt: 2 }
      expect(View.standing(View.empty, first)._tag).toBe("Pending")
      const view = applyAll(model, [pick % 5])
      const stillThere = model.live.some((m) => m.id === first.id)
      expect(View.standing(view, first)._tag).toBe(stillThere ? "Member" : "Gone")
    }
  )

  it("a batch that changes nothing returns the same view", () => {
    const joined = View.applyEvents(View.empty, prefix, [put(prefix + "1f_0", View.encodeValue(""), "31", 2, 2)])
    expect(View.applyEvents(joined, prefix, [])).toBe(joined)
    expect(View.applyEvents(joined, prefix, [{ _tag: "Delete", key: prefix + "ff_0", modRevision: 1 }])).toBe(joined)
  })

  it("a member key rewritten off its lease stops counting", () => {
    const joined = View.applyEvents(View.empty, prefix, [
      put(prefix + "1f_0", View.encodeValue(""), "31", 2, 2),
      put(prefix + "1f_1", View.encodeValue(""), "31", 3, 3)
    ])
    const hijacked = View.applyEvents(joined, prefix, [put(prefix + "1f_0", "whatever", "0", 2, 4)])
    expect(hijacked.members.map((m) => m.id)).toEqual(["1f_1"])
    expect(hijacked.revision).toBe(4)
    expect(View.standing(hijacked, { id: "1f_0", name: "1f_0", createRevision: 2, writtenAt: 2 })._tag).toBe("Gone")
  })

  it("a new incarnation on a fresh client, after a leave, names the view as the others do (its fence above the old)", () => {
    // x, @pod-1 and y join; y leaves; a new incarnation of pod-1 (a process of its own) reads the group, then writes.
    const history = [
      put(prefix + "10_0", View.encodeValue(""), "16", 2, 2),
      put(prefix + "@pod-1", View.encodeValue("", { id: "11_0" }), "17", 3, 3),
      put(prefix + "12_0", View.encodeValue(""), "18", 4, 4),
      { _tag: "Delete" as const, key: prefix + "12_0", modRevision: 5 }
    ]
    const takeover = put(prefix + "@pod-1", View.encodeValue("", { id: "13_0" }), "19", 3, 6)
    const others = View.applyEvents(View.applyEvents(View.empty, prefix, history), prefix, [takeover])
    const read = View.fromSnapshot(View.applyEvents(View.empty, prefix, history).members, 5)
    const fresh = View.applyEvents(read, prefix, [takeover])
    const incarnation = { id: "13_0", name: "@pod-1", createRevision: 3, writtenAt: 6 }
    expect(View.standing(fresh, incarnation)).toEqual({ _tag: "Member", info: Info.make(1, 2, 6) })
    expect(View.standing(others, incarnation)).toEqual({ _tag: "Member", info: Info.make(1, 2, 6) })
    expect(View.standing(others, { id: "10_0", name: "10_0", createRevision: 2, writtenAt: 2 })).toEqual({
      _tag: "Member",
      info: Info.make(0, 2, 6)
    })
  })

  it("a new incarnation of an instance keeps the place and the view's name; the old one sees it taken", () => {
    const old = { id: "1f_0", name: "@web-0", createRevision: 2, writtenAt: 2 }
    const joined = View.applyEvents(View.empty, prefix, [
      put(prefix + "@web-0", View.encodeValue("", { id: "1f_0" }), "31", 2, 2),
      put(prefix + "20_0", View.encodeValue(""), "32", 3, 3)
    ])
    expect(View.standing(joined, old)).toEqual({ _tag: "Member", info: Info.make(0, 2, 3) })
    const fresh = { id: "21_4", name: "@web-0", createRevision: 2, writtenAt: 5 }
    // Not yet applied: the new incarnation waits for its own write, it does not read the old one's entry as taken.
    expect(View.standing(joined, fresh)._tag).toBe("Pending")
    const taken = View.applyEvents(joined, prefix, [
      put(prefix + "@web-0", View.encodeValue("", { id: "21_4" }), "33", 2, 5)
    ])
    // Renamed by the takeover: the new incarnation (which names a view it read by its newest join) and the others
    // agree, and its fence is above the old one's.
    expect(taken.revision).toBe(5)
    expect(taken.members.map((m) => [m.id, m.name, m.instance])).toEqual([["21_4", "@web-0", "web-0"], [
      "20_0",
      "20_0",
      undefined
    ]])
    expect(View.standing(taken, fresh)).toEqual({ _tag: "Member", info: Info.make(0, 2, 5) })
    expect(View.standing(taken, old)).toEqual({ _tag: "Taken", by: "21_4" })
    expect(View.standing(taken, { id: "20_0", name: "20_0", createRevision: 3, writtenAt: 3 })).toEqual({
      _tag: "Member",
      info: Info.make(1, 2, 5)
    })
  })

  it("decode names why a key is not a member", () => {
    const decode = (key: string, value: string, lease: string) =>
      View.decode(prefix, { key, value, lease, createRevision: 1, modRevision: 1 })
    expect(Keys.memberId("31", 7)).toBe("1f_7")
    expect(decode(prefix + "1f_7", View.encodeValue("m"), "31")).toEqual({
      _tag: "Member",
      entry: { id: "1f_7", name: "1f_7", createRevision: 1, metadata: "m" }
    })
    expect(decode(prefix + "@web-0", View.encodeValue("m", { shards: { shards: 4 }, id: "1f_7" }), "31")).toEqual({
      _tag: "Member",
      entry: { id: "1f_7", name: "@web-0", instance: "web-0", createRevision: 1, metadata: "m", shards: 4 }
    })
    // A move policy other than the default is declared beside the shards; the default is not written.
    const policy = View.declaration(4, { maxMoves: 2, settleMillis: 5_000 })
    expect(View.encodeValue("m", { shards: View.declaration(4, { maxMoves: Infinity, settleMillis: 0 }) })).toBe(
      View.encodeValue("m", { shards: { shards: 4 } })
    )
    const decoded = decode(prefix + "1f_7", View.encodeValue("m", { shards: policy }), "31")
    expect(decoded).toMatchObject({ entry: { shards: 4, maxMoves: 2, settleMillis: 5_000 } })
    expect(decoded._tag === "Member" && View.sameDeclaration(View.declarationOf(decoded.entry), policy)).toBe(true)
    expect(View.sameDeclaration(policy, { shards: 4 })).toBe(false)
    expect(decode(prefix + "@web-0", View.encodeValue("m"), "31")).toMatchObject({
      _tag: "Foreign",
      reason: "not bound to the lease it names"
    })
    expect(decode(prefix + "@web-0", View.encodeValue("m", { id: "1f_7" }), "32")).toMatchObject({
      _tag: "Foreign",
      reason: "not bound to the lease it names"
    })
    expect(decode(prefix + "@", View.encodeValue("m", { id: "1f_7" }), "31")).toMatchObject({
      _tag: "Foreign",
      reason: "not a member key"
    })
    expect(decode(prefix + "1f_7/x", "{}", "31")).toMatchObject({ _tag: "Foreign", reason: "not a member key" })
    expect(decode(prefix + "1f", View.encodeValue(""), "31")).toMatchObject({
      _tag: "Foreign",
      reason: "not a member key"
    })
    expect(decode(prefix + "1f_07", View.encodeValue(""), "31")).toMatchObject({
      _tag: "Foreign",
      reason: "not a member key"
    })
    expect(decode(prefix + "1f_7", View.encodeValue(""), "0")).toMatchObject({ _tag: "Foreign" })
    expect(decode(prefix + "1f_7", View.encodeValue(""), "32")).toMatchObject({
      _tag: "Foreign",
      reason: "not bound to the lease it names"
    })
    expect(decode(prefix + "1f_7", "nope", "31")).toMatchObject({ _tag: "Foreign", reason: "value is not JSON" })
    expect(decode(prefix + "1f_7", "{\"v\":2}", "31")).toMatchObject({ _tag: "Foreign" })
  })
})
