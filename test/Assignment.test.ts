import { describe, expect, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import { Info, keyHash, makeAssignment } from "../src/index.js"

const view = fc.integer({ min: 1, max: 40 }).chain((count) =>
  fc.record({ count: fc.constant(count), total: fc.integer({ min: 1, max: 200 }) })
)

describe("Assignment", () => {
  it.prop("the members of one view own every shard exactly once", [view], ([{ count, total }]) => {
    const owners = Array.from({ length: total }, () => 0)
    for (let index = 0; index < count; index++) {
      const a = makeAssignment(Info.make(index, count, 1), 1)
      for (const shard of a.shares(total)) owners[shard]!++
      for (let shard = 0; shard < total; shard++) {
        expect(a.owns(shard, total)).toBe(a.shares(total).includes(shard))
      }
    }
    expect(owners.every((n) => n === 1)).toBe(true)
  })

  it.prop(
    "every key has exactly one owner per view",
    [fc.string(), fc.integer({ min: 1, max: 50 })],
    ([key, count]) => {
      const owners = Array.from({ length: count }, (_, index) => makeAssignment(Info.make(index, count, 1), 1))
        .filter((a) => a.ownsKey(key))
      expect(owners).toHaveLength(1)
    }
  )

  it("keyHash is 32-bit FNV-1a over UTF-8, stable across runs and languages", () => {
    expect(keyHash("")).toBe(0x811c9dc5)
    expect(keyHash("a")).toBe(0xe40c292c)
    expect(keyHash("foobar")).toBe(0xbf9cf968)
    expect(keyHash("é")).toBe(keyHash("\u00e9"))
  })

  it("an invalid Info owns nothing, and bad shard arguments are refused", () => {
    const none = makeAssignment(Info.invalid, 0)
    expect(none.shares(8)).toEqual([])
    expect(none.ownsKey("x")).toBe(false)
    const a = makeAssignment(Info.make(1, 3, 9), 9)
    expect(a.shares(8)).toEqual([1, 4, 7])
    expect(() => a.owns(8, 8)).toThrow(RangeError)
    expect(() => a.shares(0)).toThrow(RangeError)
    expect(() => a.owns(1.5, 8)).toThrow(RangeError)
  })
})
