/**
 * The lease's timing rules, pure: the numbers at the default TTL, and as properties over any TTL and request timeout
 * the library accepts.
 */
import { describe, expect, it } from "@effect/vitest"
import { Duration, FastCheck as fc } from "effect"
import * as LeaseTiming from "../../src/internal/leaseTiming.js"

const options = fc.record({
  ttl: fc.integer({ min: 1_000, max: 600_000 }).map(Duration.millis),
  requestTimeout: fc.integer({ min: 100, max: 30_000 }).map(Duration.millis),
  endpoints: fc.integer({ min: 1, max: 5 })
})

const instant = fc.integer({ min: 0, max: 1_000_000 })

describe("lease timing", () => {
  it("at TTL 10 s an answer has 6.3 s to come back, and attempts overlap more often with several endpoints", () => {
    const ttl = Duration.seconds(10)
    const requestTimeout = Duration.seconds(5)
    const single = LeaseTiming.timing({ ttl, requestTimeout, endpoints: 1 })
    expect(single.fenceAfter).toBe(8_000)
    expect(single.interval).toBeCloseTo(1_666.67, 1)
    expect({ pulse: single.pulse, maxInFlight: single.maxInFlight }).toEqual({ pulse: 1_000, maxInFlight: 8 })
    expect(single.attemptWithin).toBeCloseTo(6_333.33, 1)
    expect(single.liftSlack).toBe(1_000)
    const several = LeaseTiming.timing({ ttl, requestTimeout, endpoints: 3 })
    expect(several.pulse).toBeCloseTo(333.33, 1)
    expect(several.maxInFlight).toBe(16)
    expect(several.attemptWithin).toBeCloseTo(5_333.33, 1)
    expect(LeaseTiming.ttlSeconds(Duration.millis(1_500))).toBe(2)
    expect(Duration.toMillis(LeaseTiming.fencingMargin(Duration.seconds(1)))).toBe(200)
    expect(Duration.toMillis(LeaseTiming.fencingMargin(Duration.minutes(1)))).toBe(2_000)
  })

  it.prop(
    "the fence comes a margin of 200 ms to 2 s before etcd's TTL, and a keepalive is due well before it",
    [options],
    ([o]) => {
      const t = LeaseTiming.timing(o)
      const margin = Duration.toMillis(LeaseTiming.fencingMargin(o.ttl))
      expect(margin).toBeGreaterThanOrEqual(200)
      expect(margin).toBeLessThanOrEqual(2_000)
      expect(t.fenceAfter).toBe(t.ttl - margin)
      // etcd counts whole seconds, rounded up: its lease never ends before the local TTL.
      expect(LeaseTiming.ttlSeconds(o.ttl) * 1_000).toBeGreaterThanOrEqual(t.ttl)
      expect(t.interval).toBeLessThan(t.fenceAfter)
      expect(t.liftSlack).toBeLessThan(t.fenceAfter)
      expect(t.attemptWithin).toBeGreaterThanOrEqual(Duration.toMillis(o.requestTimeout))
      expect(t.attemptWithin).toBeGreaterThanOrEqual(t.pulse)
    }
  )

  it.prop(
    "renewal waits until a keepalive is due, then pulses, sending only while a slot is free",
    [options, instant, fc.integer({ min: 0, max: 100_000 }), fc.nat({ max: 20 })],
    ([o, lastSentOk, elapsed, inFlight]) => {
      const t = LeaseTiming.timing(o)
      const now = lastSentOk + elapsed
      const step = LeaseTiming.renewalStep(t, { now, lastSentOk, inFlight })
      if (now < lastSentOk + t.interval) {
        expect(step._tag).toBe("Wait")
        expect(step.millis).toBeGreaterThanOrEqual(1)
        // Wakes at the due time, not before, and less than a millisecond after it.
        expect(now + step.millis).toBeGreaterThanOrEqual(lastSentOk + t.interval)
        expect(now + step.millis).toBeLessThan(lastSentOk + t.interval + 1 + 1e-6)
      } else {
        expect(step).toEqual({ _tag: "Pulse", send: inFlight < t.maxInFlight, millis: t.pulse })
      }
    }
  )

  it.prop(
    "unfenced, the watchdog sleeps until the fence and no further, and fences once it is reached",
    [options, instant, fc.integer({ min: 0, max: 700_000 })],
    ([o, lastSentOk, elapsed]) => {
      const t = LeaseTiming.timing(o)
      const now = lastSentOk + elapsed
      const step = LeaseTiming.watchdogStep(t, { now, lastSentOk, fencedAt: undefined })
      const fence = LeaseTiming.fenceAt(t, lastSentOk)
      if (now >= fence) {
        expect(step).toEqual({ _tag: "FenceDue" })
      } else {
        expect(step._tag).toBe("Sleep")
        if (step._tag === "Sleep") {
          expect(step.millis).toBeGreaterThanOrEqual(1)
          expect(now + step.millis).toBeGreaterThanOrEqual(fence)
          expect(now + step.millis).toBeLessThan(fence + 1 + 1e-6)
        }
      }
    }
  )

  it.prop(
    "fenced, a keepalive that moved the fence far enough lifts it; else the lease is given up a TTL after the fence",
    [options, instant, fc.integer({ min: 0, max: 700_000 }), fc.integer({ min: 0, max: 700_000 })],
    ([o, fencedAt, sinceFence, sentBefore]) => {
      const t = LeaseTiming.timing(o)
      const now = fencedAt + sinceFence
      const lastSentOk = now - sentBefore
      const step = LeaseTiming.watchdogStep(t, { now, lastSentOk, fencedAt })
      if (LeaseTiming.fenceAt(t, lastSentOk) - now >= t.liftSlack) {
        expect(step).toEqual({ _tag: "Lift" })
        // A later success lifts it too.
        expect(LeaseTiming.watchdogStep(t, { now, lastSentOk: lastSentOk + 1, fencedAt })).toEqual({ _tag: "Lift" })
      } else if (now >= fencedAt + t.ttl) {
        expect(step).toEqual({ _tag: "GiveUp" })
      } else {
        expect(step._tag).toBe("AwaitRenewal")
        if (step._tag === "AwaitRenewal") {
          expect(step.millis).toBeGreaterThan(0)
          expect(now + step.millis).toBeGreaterThanOrEqual(fencedAt + t.ttl)
        }
      }
    }
  )

  it.prop(
    "keepalives sent when due and answered within the fence less the interval keep the lease from ever fencing",
    [options, fc.array(fc.integer({ min: 0, max: 999_999 }), { minLength: 1, maxLength: 30 })],
    ([o, latencies]) => {
      const t = LeaseTiming.timing(o)
      let lastSentOk = 0
      for (const l of latencies) {
        const due = LeaseTiming.renewalStep(t, { now: lastSentOk, lastSentOk, inFlight: 0 })
        const sentAt = lastSentOk + (due._tag === "Wait" ? due.millis : 0)
        const answeredAt = sentAt + (l / 1_000_000) * (t.fenceAfter - t.interval - 1)
        // When the answer lands the watchdog still sleeps: the fence was not reached.
        expect(LeaseTiming.watchdogStep(t, { now: answeredAt, lastSentOk, fencedAt: undefined })._tag).toBe("Sleep")
        expect(LeaseTiming.renews(sentAt, lastSentOk)).toBe(true)
        lastSentOk = sentAt
      }
    }
  )
})
