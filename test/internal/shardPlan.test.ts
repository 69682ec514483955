/**
 * The shard plan, as properties: balance always; the same plan whatever the members' order; and how many shards a
 * single join or leave moves, against the ideal (S/(n+1) on a join, S/n on a leave).
 */
import { describe, expect, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import { cap, plan } from "../../src/internal/shardPlan.js"

const memberIds = (count: number, salt: number) =>
  Array.from({ length: count }, (_, i) => `${(0x694d0000 + salt * 7919 + i).toString(16)}_${i}`)

const loads = (owners: ReadonlyArray<string>) => {
  const out = new Map<string, number>()
  for (const owner of owners) out.set(owner, (out.get(owner) ?? 0) + 1)
  return out
}

/** A small seeded generator, so that a failing sequence can be replayed. */
const random = (seed: number) => () => {
  seed = (seed * 1_103_515_245 + 12_345) % 2_147_483_648
  return seed / 2_147_483_648
}

interface Movement {
  /** Shards moved over the ideal, summed over the changes. */
  readonly ratio: number
  /** Changes that moved more than 3x the ideal, rounded up. */
  readonly over3x: number
  readonly changes: number
}

/**
 * Random single joins and leaves (n between 1 and 300) for `shards`, split by regime: members holding 8 or more
 * shards on average, and fewer.
 */
const movement = (shards: number, seeds: ReadonlyArray<number>) => {
  const acc = {
    many: { moved: 0, ideal: 0, over3x: 0, changes: 0 },
    few: { moved: 0, ideal: 0, over3x: 0, changes: 0 }
  }
  for (const seed of seeds) {
    const next = random(shards * 7 + seed)
    const members: Array<string> = []
    let id = 0
    let previous: ReadonlyArray<string> = []
    for (let step = 0; step < 250; step++) {
      const join = members.length === 0 || (members.length < 300 && next() < 0.55)
      if (join) members.push(memberIds(1, seed * 100_000 + id++)[0]!)
      else members.splice(Math.floor(next() * members.length), 1)
      if (members.length === 0) {
        previous = []
        continue
      }
      const current = plan(members, shards)
      if (previous.length > 0) {
        const n = members.length
        let moved = 0
        for (let s = 0; s < shards; s++) if (previous[s] !== current[s]) moved++
        const ideal = join ? shards / n : shards / (n + 1)
        const bucket = shards >= 8 * n ? acc.many : acc.few
        bucket.moved += moved
        bucket.ideal += ideal
        bucket.changes++
        if (moved > Math.ceil(3 * ideal)) bucket.over3x++
      }
      previous = current
    }
  }
  const summary = (b: typeof acc.many): Movement => ({
    ratio: b.changes === 0 ? 0 : b.moved / b.ideal,
    over3x: b.over3x,
    changes: b.changes
  })
  return { many: summary(acc.many), few: summary(acc.few) }
}

describe("shard plan", () => {
  it.prop(
    "balance: every shard has an owner among the members; at most ⌈1.25·S/n⌉ each, at least one when S >= n",
    [
      fc.integer({ min: 1, max: 300 }),
      fc.oneof(fc.constantFrom(1, 7, 64, 1024, 4096), fc.integer({ min: 1, max: 2000 })),
      fc.nat()
    ],
    ([n, shards, salt]) => {
      const members = memberIds(n, salt)
      const owners = plan(members, shards)
      expect(owners).toHaveLength(shards)
      const set = new Set(members)
      expect(owners.every((o) => set.has(o))).toBe(true)
      const load = loads(owners)
      expect(Math.max(...load.values())).toBeLessThanOrEqual(cap(shards, n))
      if (shards >= n) expect(load.size).toBe(n)
    },
    { fastCheck: { numRuns: 60 } }
  )

  it.prop(
    "a pure function of the member set: the same owners whatever the order the view lists them in",
    [fc.integer({ min: 1, max: 60 }), fc.integer({ min: 1, max: 300 }), fc.nat()],
    ([n, shards, salt]) => {
      const members = memberIds(n, salt)
      const shuffled = [...members].sort((
        a,
        b
      ) => (a.split("").reverse().join() < b.split("").reverse().join() ? -1 : 1))
      expect(plan(shuffled, shards)).toEqual(plan(members, shards))
    }
  )

  // The targets hold where members hold many shards each (S >= 8n): on average within 1.5x the ideal, never over 3x.
  // Where they hold few (1 to 8), the capacity bound makes a change move more: the bounds below are what this plan
  // achieves (measured over these seeds), so that a regression shows; the README gives the table.
  it.each([1, 7, 64, 1024, 4096])("movement over random joins and leaves, S = %i", (shards) => {
    const { few, many } = movement(shards, [1, 2, 3])
    if (many.changes > 0) {
      expect(many.ratio).toBeLessThanOrEqual(1.5)
      expect(many.over3x).toBe(0)
    }
    if (few.changes > 0) {
      expect(few.ratio).toBeLessThanOrEqual(shards <= 7 ? 1.6 : 2.0)
      expect(few.over3x / few.changes).toBeLessThanOrEqual(0.1)
    }
  }, 60_000)
})
