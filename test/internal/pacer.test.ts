/**
 * The view pacer, pure: driven by a small simulation of the watch (offers at given instants) and of the fiber that
 * sends the held view at each interval's end.
 */
import { describe, expect, it } from "@effect/vitest"
import { FastCheck as fc } from "effect"
import * as Pacer from "../../src/internal/pacer.js"

const bounds: Pacer.Bounds = { initial: 10, max: 1_000 }

/** Views `0..n-1` offered at `at[i]` (ascending), each standing for `events[i]` etcd events: what went out, when. */
const simulate = (b: Pacer.Bounds, offers: ReadonlyArray<{ readonly at: number; readonly events: number }>) => {
  let pacer = Pacer.initial<number>(b)
  const sent: Array<{ readonly view: number; readonly at: number; readonly interval: number }> = []
  // The flush fiber's next wake-up, while an interval runs.
  let wake: number | undefined
  const runFlush = (until: number) => {
    while (wake !== undefined && wake <= until) {
      const now = wake
      const [next, view] = Pacer.release(b, pacer, now)
      pacer = next
      if (view !== undefined) sent.push({ view, at: now, interval: pacer.interval })
      if (pacer.held === undefined) {
        pacer = Pacer.stop(pacer)
        wake = undefined
      } else {
        wake = now + Pacer.untilRelease(pacer, now)
      }
    }
  }
  offers.forEach(({ at, events }, view) => {
    runFlush(at)
    pacer = Pacer.counted(pacer, events)
    const [next, offer] = Pacer.offer(b, pacer, view, at)
    pacer = next
    if (offer === "Send") sent.push({ view, at, interval: pacer.interval })
    if (offer === "StartInterval") wake = at + Pacer.untilRelease(pacer, at)
    expect(pacer.interval).toBeGreaterThanOrEqual(b.initial)
    expect(pacer.interval).toBeLessThanOrEqual(b.max)
  })
  runFlush(Number.POSITIVE_INFINITY)
  return { sent, pacer }
}

const offers = fc.array(fc.record({ gap: fc.nat({ max: 3_000 }), events: fc.nat({ max: 50 }) }), { maxLength: 60 })
  .map((raw) => {
    let at = 0
    return raw.map(({ events, gap }) => ({ at: (at += gap), events }))
  })

describe("pacer", () => {
  it("a view after a quiet moment goes out at once; one soon after waits for the interval's end, as the latest", () => {
    const { sent } = simulate(bounds, [{ at: 0, events: 1 }, { at: 3, events: 1 }, { at: 6, events: 1 }])
    expect(sent.map(({ at, view }) => ({ at, view }))).toEqual([{ at: 0, view: 0 }, { at: 10, view: 2 }])
  })

  it("five seconds of joins a millisecond apart cost about one view per interval, growing to max", () => {
    const storm = Array.from({ length: 5_000 }, (_, i) => ({ at: i, events: 1 }))
    const { sent } = simulate(bounds, storm)
    // 10, 20, ..., 640, then 1000 ms: a few views to grow, then one a second.
    expect(sent.length).toBeLessThanOrEqual(5_000 / bounds.max + 10)
    expect(sent.at(-1)?.view).toBe(4_999)
  })

  it("changes a few hundred ms apart after a storm soon go out alone again", () => {
    const storm = Array.from({ length: 3_000 }, (_, i) => ({ at: i, events: 1 }))
    const after = Array.from({ length: 10 }, (_, i) => ({ at: 5_000 + i * 300, events: 1 }))
    const { sent } = simulate(bounds, [...storm, ...after])
    // Each later change is held for less than the interval it came in, which halves: the last ones go out at once.
    const last = sent.at(-1)!
    expect(last.view).toBe(3_009)
    expect(last.at).toBe(after.at(-1)!.at)
  })

  it.prop(
    "the latest view always goes out, views go out in order, and one after another only an interval apart",
    [offers],
    ([o]) => {
      const { pacer, sent } = simulate(bounds, o)
      expect(pacer.held).toBeUndefined()
      expect(pacer.flushing).toBe(false)
      if (o.length > 0) expect(sent.at(-1)?.view).toBe(o.length - 1)
      for (let i = 1; i < sent.length; i++) {
        expect(sent[i]!.view).toBeGreaterThan(sent[i - 1]!.view)
        expect(sent[i]!.at - sent[i - 1]!.at).toBeGreaterThanOrEqual(bounds.initial)
      }
      // A view is sent no later than an interval of `max` after it was offered.
      o.forEach(({ at }, view) => {
        const out = sent.find((s) => s.view >= view)
        expect(out).toBeDefined()
        expect(out!.at - at).toBeLessThanOrEqual(bounds.max)
      })
    }
  )
})
