/**
 * A registration's standing, pure: which events give the member an Info, make it invalid, end its membership, or
 * end its wait to be seen; and as properties over any sequence of events.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, FastCheck as fc } from "effect"
import { Info } from "../../src/Info.js"
import type { Holder } from "../../src/internal/source.js"
import * as Standing from "../../src/internal/standing.js"
import * as View from "../../src/internal/view.js"

const me = { id: "1a_0", name: "1a_0" }
const written: Standing.Written = { createRevision: 5, modRevision: 5, writtenAt: 5 }
const holder: Holder = { ...me, leaseId: "26", createRevision: 5, leaseLost: Effect.never }

const entry = (id: string, createRevision: number): View.Entry => ({ id, name: id, createRevision, metadata: "" })
/** A view at `seen` holding `entries`. */
const viewOf = (seen: number, ...entries: Array<View.Entry>): View.View => View.fromSnapshot(entries, seen)
const withMe = viewOf(6, entry("0f_0", 3), entry(me.id, 5))
const withoutMe = viewOf(7, entry("0f_0", 3))

const run = (events: ReadonlyArray<Standing.Event>) => {
  let s = Standing.initial(me)
  const outputs: Array<Standing.Output> = []
  for (const event of events) {
    const [next, out] = Standing.step(s, event)
    s = next
    outputs.push(...out)
  }
  return { standing: s, outputs }
}

const Written: Standing.Event = { _tag: "Written", written, holder }
const See = (view: View.View): Standing.Event => ({ _tag: "View", view })
const Fenced = (fenced: boolean): Standing.Event => ({ _tag: "Fenced", fenced })

describe("standing", () => {
  it("views before the write are only kept; one holding the key gives the Info and ends the wait", () => {
    const before = run([See(withMe)])
    expect(before.outputs).toEqual([])
    expect(before.standing.latestView).toBe(withMe)
    expect(run([Written, See(viewOf(4))]).outputs).toEqual([])
    expect(run([Written, See(withMe)]).outputs).toEqual([
      { _tag: "Info", info: Info.make(1, 2, 5), holder },
      { _tag: "Visible" }
    ])
  })

  it("fenced, the member is invalid and keeps its place; the lift gives it back from the latest view", () => {
    const { outputs, standing } = run([Written, See(withMe), Fenced(true), See(withMe)])
    expect(outputs.slice(2)).toEqual([{ _tag: "Invalid" }, { _tag: "Visible" }])
    expect(standing.ended).toBeUndefined()
    expect(Standing.step(standing, Fenced(false))[1]).toEqual([
      { _tag: "Info", info: Info.make(1, 2, 5), holder },
      { _tag: "Visible" }
    ])
    // Before the write, the fence says nothing.
    expect(run([Fenced(true)]).outputs).toEqual([])
  })

  it("the key gone, taken or the lease lost ends the membership once, with the first reason", () => {
    expect(run([Written, See(withMe), See(withoutMe), See(withoutMe)]).outputs.slice(2)).toEqual([
      { _tag: "Ended", ended: { _tag: "Lost", reason: "its key was deleted" } },
      { _tag: "Visible" },
      { _tag: "Visible" }
    ])
    const taken = viewOf(8, entry("0f_0", 3), { ...entry("2b_0", 5), name: me.name })
    expect(run([Written, See(taken)]).outputs[0]).toEqual({ _tag: "Ended", ended: { _tag: "Taken", by: "2b_0" } })
    const lost = run([{ _tag: "LeaseLost", reason: "revoked or expired at etcd" }, Written, See(withoutMe)])
    expect(lost.standing.leaseLost).toBe(true)
    expect(lost.outputs.filter((o) => o._tag === "Ended")).toEqual([
      { _tag: "Ended", ended: { _tag: "Lost", reason: "revoked or expired at etcd" } }
    ])
  })

  it("a rewrite moves the revision later writes compare on; retired, no view speaks for the member", () => {
    expect(run([Written, { _tag: "Rewritten", modRevision: 9 }]).standing.written?.modRevision).toBe(9)
    expect(run([{ _tag: "Rewritten", modRevision: 9 }]).standing.written).toBeUndefined()
    expect(run([Written, { _tag: "Retired" }, See(withMe), See(withoutMe), Fenced(true)]).outputs).toEqual([])
  })

  const event: fc.Arbitrary<Standing.Event> = fc.oneof(
    fc.constant(Written),
    fc.constantFrom(See(withMe), See(withoutMe), See(viewOf(4)), See(viewOf(9, entry("0f_0", 3), entry(me.id, 5)))),
    fc.boolean().map(Fenced),
    fc.constant<Standing.Event>({ _tag: "LeaseLost", reason: "revoked or expired at etcd" }),
    fc.nat().map((modRevision): Standing.Event => ({ _tag: "Rewritten", modRevision })),
    fc.constant<Standing.Event>({ _tag: "Retired" })
  )

  it.prop(
    "in any order of events: one end at most, and no Info unless written, unfenced and not retired",
    [fc.array(event, { maxLength: 40 })],
    ([events]) => {
      let s = Standing.initial(me)
      let ends = 0
      for (const e of events) {
        const [next, outputs] = Standing.step(s, e)
        for (const output of outputs) {
          if (output._tag === "Ended") {
            ends++
            expect(next.ended).toEqual(output.ended)
          }
          if (output._tag === "Info") {
            expect(next.written !== undefined && !next.fenced && !next.retired).toBe(true)
            expect(output.holder).toBe(holder)
          }
          if (output._tag === "Invalid") expect(next.fenced && !next.retired).toBe(true)
        }
        s = next
      }
      expect(ends).toBeLessThanOrEqual(1)
      expect(s.ended === undefined).toBe(ends === 0)
    }
  )
})
