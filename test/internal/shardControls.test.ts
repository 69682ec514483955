/**
 * The operator's controls over the plan, as properties: pins, pauses and a freeze override only the shards they
 * name, in that precedence, the same on every member, and never leave a shard unrun that is not paused.
 */
import { describe, expect, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import * as Controls from "../../src/internal/shardControls.js"
import { eligible, type PlanMember, weightedPlan } from "../../src/internal/shardPlan.js"

const arbitraryCase = fc
  .record({
    specs: fc.array(
      fc.record({
        weight: fc.constantFrom(1, 2, 4, 0.5),
        draining: fc.boolean(),
        instance: fc.option(fc.constantFrom("a", "b", "c", "d"), { nil: undefined })
      }),
      { minLength: 1, maxLength: 30 }
    ),
    shards: fc.integer({ min: 1, max: 200 }),
    pins: fc.array(fc.tuple(fc.integer({ min: -2, max: 210 }), fc.nat(39)), { maxLength: 20 }),
    paused: fc.array(fc.integer({ min: -2, max: 210 }), { maxLength: 20 }),
    frozen: fc.boolean(),
    previous: fc.array(fc.option(fc.nat(40), { nil: undefined }), { maxLength: 210 })
  })
  .map(({ frozen, paused, pins, previous, shards, specs }) => {
    const members: Array<PlanMember> = specs.map((spec, i) => ({ id: `m${i}`, ...spec }))
    // Targets and previous owners: members (live or not, by index past the members) and instance names.
    const name = (k: number) => (k < 36 ? `m${k}` : ["a", "b", "c", "e"][k - 36]!)
    const controls: Controls.Controls = {
      pins: new Map(pins.map(([s, k]) => [s, name(k)])),
      paused: new Set(paused),
      frozen
    }
    return { members, shards, controls, previous: previous.map((k) => (k === undefined ? undefined : `m${k}`)) }
  })

describe("shard controls", () => {
  it.prop(
    "each shard: paused → nobody; pinned to a live member → it; frozen with a live previous owner → it; else the plan",
    [arbitraryCase],
    ([{ controls, members, previous, shards }]) => {
      const base = weightedPlan(members, shards)
      const owners = weightedPlan(members, shards, controls, previous)
      const live = eligible(members)
      const ids = new Set(live.map((m) => m.id))
      expect(owners).toHaveLength(shards)
      for (let s = 0; s < shards; s++) {
        const pin = controls.pins.get(s)
        const pinned = pin === undefined ? undefined : Controls.resolve(live, pin)
        if (controls.paused.has(s)) expect(owners[s]).toBeUndefined()
        else if (pinned !== undefined) {
          expect(owners[s]).toBe(pinned)
          const member = live.find((m) => m.id === pinned)!
          expect(member.id === pin || member.instance === pin).toBe(true)
        } else if (controls.frozen && previous[s] !== undefined && ids.has(previous[s]!)) {
          expect(owners[s]).toBe(previous[s])
        } else expect(owners[s]).toBe(base[s])
        // Never unrun unless paused, never on a member that is not live for the plan.
        if (!controls.paused.has(s)) expect(ids.has(owners[s]!)).toBe(true)
      }
    },
    { fastCheck: { numRuns: 200 } }
  )

  it.prop(
    "the same owners on every member: whatever the order the view lists the members in",
    [arbitraryCase],
    ([{ controls, members, previous, shards }]) => {
      const reversed = [...members].reverse()
      expect(weightedPlan(reversed, shards, controls, previous)).toEqual(
        weightedPlan(members, shards, controls, previous)
      )
    }
  )

  it.prop(
    "a freeze moves no shard whose owner stays live; after a join nothing goes to the newcomer but orphans",
    [fc.integer({ min: 2, max: 30 }), fc.integer({ min: 1, max: 300 }), fc.nat(29)],
    ([n, shards, gone]) => {
      const before: Array<PlanMember> = Array.from({ length: n }, (_, i) => ({ id: `m${i}`, weight: 1 + (i % 3) }))
      const previous = weightedPlan(before, shards)
      const after = [...before.filter((_, i) => i !== gone % n), { id: "new" }]
      const frozen = { ...Controls.none, frozen: true }
      const owners = weightedPlan(after, shards, frozen, previous)
      const target = weightedPlan(after, shards)
      for (let s = 0; s < shards; s++) {
        expect(owners[s]).toBe(previous[s] === `m${gone % n}` ? target[s] : previous[s])
      }
    }
  )

  it("a pin to a draining member is ignored while others stay; a pin by instance names the member", () => {
    const members: Array<PlanMember> = [
      { id: "x", draining: true, instance: "ix" },
      { id: "y", instance: "iy" },
      { id: "z" }
    ]
    const controls: Controls.Controls = {
      pins: new Map([[0, "x"], [1, "iy"], [2, "ix"]]),
      paused: new Set(),
      frozen: false
    }
    const base = weightedPlan(members, 8)
    const owners = weightedPlan(members, 8, controls)
    expect(owners[0]).toBe(base[0])
    expect(owners[1]).toBe("y")
    expect(owners[2]).toBe(base[2])
    expect(owners.slice(3)).toEqual(base.slice(3))
  })
})
