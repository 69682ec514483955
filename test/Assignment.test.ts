import { describe, expect, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import { Info, jumpHash, keyHash, makeAssignment } from "../src/index.js"

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

describe("jumpHash", () => {
  const keys = Array.from({ length: 2000 }, (_, i) => `key-${i}`)

  it.prop("a key's bucket is in 0..n-1; from n to n+1 buckets it stays or moves to the new bucket n", [
    fc.integer({ min: 1, max: 500 })
  ], ([n]) => {
    for (const key of keys.slice(0, 200)) {
      const before = jumpHash(key, n)
      const after = jumpHash(key, n + 1)
      expect(before).toBeGreaterThanOrEqual(0)
      expect(before).toBeLessThan(n)
      expect(after === before || after === n).toBe(true)
    }
  })

  it("spreads keys evenly, and moves about 1/(n+1) of them on a join", () => {
    const counts = Array.from({ length: 10 }, () => 0)
    for (const key of keys) counts[jumpHash(key, 10)]!++
    expect(Math.min(...counts)).toBeGreaterThan(150)
    expect(Math.max(...counts)).toBeLessThan(250)
    const moved = keys.filter((key) => jumpHash(key, 10) !== jumpHash(key, 11)).length
    expect(moved).toBeGreaterThan(2000 / 11 * 0.7)
    expect(moved).toBeLessThan(2000 / 11 * 1.3)
    // Against modulo, which moves nearly all of them.
    expect(keys.filter((key) => keyHash(key) % 10 !== keyHash(key) % 11).length).toBeGreaterThan(1700)
  })

  it("ownsKeyJump gives every key exactly one owner among the members of a view", () => {
    for (const key of keys.slice(0, 300)) {
      const owners = Array.from({ length: 7 }, (_, index) => makeAssignment(Info.make(index, 7, 1), 1)).filter((a) =>
        a.ownsKeyJump(key)
      )
      expect(owners).toHaveLength(1)
    }
    expect(makeAssignment(Info.invalid, 0).ownsKeyJump("x")).toBe(false)
    expect(() => jumpHash("x", 0)).toThrow(RangeError)
  })
})
