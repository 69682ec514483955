import { describe, expect, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import * as Contenders from "../../src/internal/contenders.js"
import type * as Api from "../../src/internal/etcd/api.js"

const prefix = "g/things/"
const scheme: Contenders.Scheme = {
  numberOf: (key) => {
    const n = Number(key.slice(prefix.length).split("/")[0])
    return Number.isInteger(n) ? n : undefined
  },
  // A key whose name starts with "x" contends for nothing (a foreign writer's).
  ownerOf: (kv) => kv.lease === "0" || kv.key.split("/").at(-1)!.startsWith("x") ? undefined : kv.key.split("/").at(-1)
}
const kv = (thing: number, owner: string, createRevision: number, lease = "1"): Api.KeyValue => ({
  key: `${prefix}${thing}/${owner}`,
  value: "",
  lease,
  createRevision,
  modRevision: createRevision
})
const owners = (state: Contenders.Contenders, thing: number) => (state.byNumber.get(thing) ?? []).map((c) => c.owner)

describe("Contenders", () => {
  it("orders contenders by create revision whatever order they are read in, the oldest first", () => {
    fc.assert(
      fc.property(fc.uniqueArray(fc.integer({ min: 1, max: 1000 }), { minLength: 1, maxLength: 20 }), (revs) => {
        const state = Contenders.read(scheme)(revs.map((r) => kv(0, `m${r}`, r)), 1000)
        expect(owners(state, 0)).toEqual([...revs].sort((a, b) => a - b).map((r) => `m${r}`))
      })
    )
  })

  it("a delete removes its key, a put that contends for nothing replaces its key, and an empty thing is gone", () => {
    const start = Contenders.read(scheme)([kv(1, "a", 5), kv(1, "b", 7), kv(2, "c", 6)], 7)
    const next = Contenders.apply(scheme)(start, [
      { _tag: "Delete", key: `${prefix}1/a`, modRevision: 8 },
      { _tag: "Put", kv: kv(2, "c", 6, "0") }
    ])
    expect(owners(next, 1)).toEqual(["b"])
    expect(next.byNumber.has(2)).toBe(false)
    expect(next.seen).toBe(8)
    // The state read before is untouched.
    expect(owners(start, 1)).toEqual(["a", "b"])
  })

  it("a thing no event touched keeps its list, so a waiter on it is not woken", () => {
    const start = Contenders.read(scheme)([kv(1, "a", 5), kv(2, "b", 6)], 6)
    const next = Contenders.apply(scheme)(start, [{ _tag: "Put", kv: kv(1, "c", 9) }])
    expect(next.byNumber.get(2)).toBe(start.byNumber.get(2))
    expect(next.byNumber.get(1)).not.toBe(start.byNumber.get(1))
    expect(owners(next, 1)).toEqual(["a", "c"])
  })
})
