/**
 * Bounded moves towards a target plan, as properties over simulated runs: a view change, then steps while the
 * runtime completes moves at random. The moves converge to the target; no member ever has more than `maxMoves` moves
 * in flight; a gone member's shards move at once; while the target holds, no shard moves twice (so a drain moves each
 * shard once, straight to its final owner).
 */
import { describe, expect, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import * as Moves from "../../src/internal/shardMoves.js"
import { type ControlledPlan, type PlanMember, weightedPlan } from "../../src/internal/shardPlan.js"

/** A small seeded generator, so that a failing run can be replayed. */
const random = (seed: number) => () => {
  seed = (seed * 1_103_515_245 + 12_345) % 2_147_483_648
  return seed / 2_147_483_648
}

type Change = "join" | "leave" | "drain" | "mixed"

const arbitraryRun = fc.record({
  weights: fc.array(fc.constantFrom(1, 2, 4, 0.5, 0.3), { minLength: 1, maxLength: 12 }),
  shards: fc.integer({ min: 1, max: 150 }),
  change: fc.constantFrom<Change>("join", "leave", "drain", "mixed"),
  maxMoves: fc.oneof(fc.integer({ min: 1, max: 4 }), fc.constant(Infinity)),
  seed: fc.nat()
})

/** The members after `change`: which joined, which left, which drain. */
const changed = (before: ReadonlyArray<PlanMember>, change: Change, next: () => number) => {
  const pick = () => before[Math.floor(next() * before.length)]!.id
  const gone = new Set<string>()
  const drained = new Set<string>()
  const joined: Array<PlanMember> = []
  if (change === "leave" || change === "mixed") gone.add(pick())
  if (change === "drain" || change === "mixed") drained.add(pick())
  if (change === "join" || change === "mixed") joined.push({ id: "j0", weight: 2 }, { id: "j1" })
  const after = [
    ...before.filter((m) => !gone.has(m.id)).map((m) => (drained.has(m.id) ? { ...m, draining: true } : m)),
    ...joined
  ]
  return { after, gone }
}

const perMember = (inFlight: Moves.InFlight, live: ReadonlySet<string>) => {
  const out = new Map<string, number>()
  for (const move of inFlight.values()) {
    for (const member of [move.from, move.to]) if (live.has(member)) out.set(member, (out.get(member) ?? 0) + 1)
  }
  return out
}

/** Steps until the owners are the target and nothing is in flight, completing moves at random; checks each step. */
const simulate = (
  current0: ControlledPlan,
  target: ControlledPlan,
  live: ReadonlySet<string>,
  maxMoves: number,
  next: () => number
) => {
  let current = current0
  let inFlight: Moves.InFlight = new Map()
  const movedTimes = new Map<number, number>()
  let rounds = 0
  for (; rounds < 10 * target.length + 10; rounds++) {
    const result = Moves.step({ current, target, inFlight, live, policy: { maxMoves } })
    for (const s of result.started) {
      // Straight to the target, from the owner in effect.
      expect(result.owners[s]).toBe(target[s])
      expect(result.inFlight.get(s)).toEqual({ from: current[s], to: target[s] })
      movedTimes.set(s, (movedTimes.get(s) ?? 0) + 1)
    }
    for (const count of perMember(result.inFlight, live).values()) expect(count).toBeLessThanOrEqual(maxMoves)
    current = result.owners
    if (result.inFlight.size === 0 && current.every((o, s) => o === target[s])) {
      return { rounds, movedTimes, converged: true }
    }
    // The runtime completes moves at random, at least one per round.
    const remaining = new Map(result.inFlight)
    let completed = 0
    for (const s of result.inFlight.keys()) {
      if (next() < 0.5) {
        remaining.delete(s)
        completed++
      }
    }
    if (completed === 0 && remaining.size > 0) remaining.delete(remaining.keys().next().value!)
    inFlight = remaining
  }
  return { rounds, movedTimes, converged: false }
}

describe("shard moves", () => {
  it.prop(
    "converge to the target; never more than maxMoves in flight per member; gone members' shards at once; no shard moves twice",
    [arbitraryRun],
    ([{ change, maxMoves, seed, shards, weights }]) => {
      const next = random(seed)
      const before = weights.map((weight, i) => ({ id: `m${i}`, weight }))
      const current = weightedPlan(before, shards)
      const { after, gone } = changed(before, change, next)
      const target = weightedPlan(after, shards)
      const live = new Set(after.map((m) => m.id))

      // A gone member's shards go to their target owner in the first step, whatever the policy.
      const first = Moves.step({ current, target, inFlight: new Map(), live, policy: { maxMoves } })
      for (let s = 0; s < shards; s++) if (gone.has(current[s]!)) expect(first.owners[s]).toBe(target[s])
      expect(first.started.some((s) => gone.has(current[s]!))).toBe(false)

      const run = simulate(current, target, live, maxMoves, next)
      expect(run.converged).toBe(true)
      for (const times of run.movedTimes.values()) expect(times).toBe(1)
      // Unbounded, every shard is with its target owner after one step (the moves then complete).
      if (maxMoves === Infinity) expect(first.owners).toEqual(target)
    },
    { fastCheck: { numRuns: 200 } }
  )

  it.prop(
    "a drain moves each of the draining member's shards once, straight to its final owner, maxMoves at a time",
    [fc.integer({ min: 2, max: 10 }), fc.integer({ min: 1, max: 200 }), fc.integer({ min: 1, max: 3 }), fc.nat()],
    ([n, shards, maxMoves, seed]) => {
      const before = Array.from({ length: n }, (_, i) => ({ id: `m${i}`, weight: 1 + (i % 3) }))
      const current = weightedPlan(before, shards)
      const after = before.map((m, i) => (i === 0 ? { ...m, draining: true } : m))
      const target = weightedPlan(after, shards)
      const live = new Set(after.map((m) => m.id))
      const run = simulate(current, target, live, maxMoves, random(seed))
      expect(run.converged).toBe(true)
      for (let s = 0; s < shards; s++) {
        if (current[s] === "m0") expect(run.movedTimes.get(s)).toBe(1)
        expect(target[s]).not.toBe("m0")
      }
    }
  )

  it.prop(
    "a member gone mid-way: its shards, in flight to it or not, go to the new target at once; the rest converge",
    [arbitraryRun],
    ([{ maxMoves, seed, shards, weights }]) => {
      fc.pre(weights.length >= 2)
      const next = random(seed)
      const before = weights.map((weight, i) => ({ id: `m${i}`, weight }))
      const current = weightedPlan(before, shards)
      const joined = [...before, { id: "new", weight: 2 }]
      const first = Moves.step({
        current,
        target: weightedPlan(joined, shards),
        inFlight: new Map(),
        live: new Set(joined.map((m) => m.id)),
        policy: { maxMoves }
      })
      // Then the newcomer dies, with moves to it in flight.
      const after = before
      const target = weightedPlan(after, shards)
      const live = new Set(after.map((m) => m.id))
      const second = Moves.step({ current: first.owners, target, inFlight: first.inFlight, live, policy: { maxMoves } })
      for (let s = 0; s < shards; s++) if (first.owners[s] === "new") expect(second.owners[s]).toBe(target[s])
      for (const move of second.inFlight.values()) expect(move.to).not.toBe("new")
      const run = simulate(second.owners, target, live, maxMoves, next)
      expect(run.converged).toBe(true)
    }
  )

  it("a paused shard stops at once, in flight or not; an invalid maxMoves counts as 1", () => {
    const live = new Set(["a", "b"])
    const result = Moves.step({
      current: ["a", "b", "a", "a"],
      target: [undefined, undefined, "b", "b"],
      inFlight: new Map([[1, { from: "a", to: "b" }]]),
      live,
      policy: { maxMoves: 0 }
    })
    expect(result.owners).toEqual([undefined, undefined, "b", "a"])
    expect(result.started).toEqual([2])
    expect([...result.inFlight.keys()]).toEqual([2])
  })

  it("a move whose target is its holder again is off; one whose target moved elsewhere completes first", () => {
    const live = new Set(["a", "b", "c"])
    const result = Moves.step({
      // Shards 0 and 1 in flight from a to b (b's claim waits behind a's).
      current: ["b", "b"],
      target: ["a", "c"],
      inFlight: new Map([[0, { from: "a", to: "b" }], [1, { from: "a", to: "b" }]]),
      live,
      policy: { maxMoves: Infinity }
    })
    expect(result.owners).toEqual(["a", "b"])
    expect([...result.inFlight]).toEqual([[1, { from: "a", to: "b" }]])
    expect(result.started).toEqual([])
  })

  it("from the claims: a live member's claim next behind a live holder is a move in flight; a dead holder's shard has no owner", () => {
    const names = new Map([["a1", "a"], ["b1", "b"], ["c1", "c"]])
    const claims = new Map<number, ReadonlyArray<Moves.ClaimOf>>([
      [0, [{ owner: "a1" }]],
      [1, [{ owner: "a1" }, { owner: "b1" }]],
      [2, [{ owner: "dead" }, { owner: "b1" }]],
      [3, [{ owner: "a1" }, { owner: "dead" }, { owner: "c1" }]],
      [4, [{ owner: "a1" }, { owner: "a1" }]],
      [9, [{ owner: "a1" }]]
    ])
    const { current, inFlight } = Moves.fromClaims(6, claims, (id) => names.get(id))
    expect(current).toEqual(["a", "b", undefined, "a", "a", undefined])
    expect([...inFlight]).toEqual([[1, { from: "a", to: "b" }]])
    // So the step keeps the move, and counts it against both: with maxMoves 1, a's other pending move waits.
    const next = Moves.step({
      current,
      target: ["b", "b", "c", "a", "c", "c"],
      inFlight,
      live: new Set(names.values()),
      policy: { maxMoves: 1 }
    })
    expect(next.owners).toEqual(["a", "b", "c", "a", "a", "c"])
    expect(next.started).toEqual([])
  })

  it("the target: the acted plan, but a gone member's shards at their newest owner", () => {
    const acted = ["a", "b", "c", undefined]
    const latest = ["a", "a", "b", "b"]
    expect(Moves.targetOf(acted, latest, new Set(["a", "b"]))).toEqual(["a", "b", "b", "b"])
    expect(Moves.targetOf(latest, latest, new Set())).toBe(latest)
  })

  it("settle: the plan acted on follows the member set once unchanged for the window; a burst is one change", () => {
    let { state, wakeAt } = Moves.settle(undefined, "a", "A", 0, 1_000)
    expect([state.acting, wakeAt]).toEqual([undefined, 1_000])
    ;({ state, wakeAt } = Moves.settle(state, "a", "A", 1_000, 1_000))
    expect([state.acting, wakeAt]).toEqual(["A", undefined]) // A burst: ab, abc, bc within the window; acted on once, as bc, a window after the last change.
    ;({ state, wakeAt } = Moves.settle(state, "ab", "AB", 1_500, 1_000))
    ;({ state, wakeAt } = Moves.settle(state, "abc", "ABC", 2_000, 1_000))
    ;({ state, wakeAt } = Moves.settle(state, "bc", "BC", 2_400, 1_000))
    expect([state.acting, wakeAt]).toEqual(["A", 3_400])
    ;({ state, wakeAt } = Moves.settle(state, "bc", "BC", 3_399, 1_000))
    expect(state.acting).toBe("A")
    ;({ state, wakeAt } = Moves.settle(state, "bc", "BC2", 3_400, 1_000))
    expect([state.acting, wakeAt]).toEqual(["BC2", undefined])
    // No window: at once.
    expect(Moves.settle(state, "b", "B", 3_400, 0).state.acting).toBe("B")
    expect(Moves.invalidMaxMoves(0)).toBeDefined()
    expect(Moves.invalidMaxMoves(1.5)).toBeDefined()
    expect(Moves.invalidMaxMoves(Infinity)).toBeUndefined()
  })
})
