import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Option } from "effect"
import * as Cell from "../../src/internal/cell.js"

describe("Cell", () => {
  it.effect("a reader gives the current value first, then only the latest after a change", () =>
    Effect.gen(function*() {
      const cell = yield* Cell.make(0)
      const read = yield* cell.reader
      expect(yield* read).toBe(0)
      yield* cell.set(1)
      yield* cell.set(2)
      expect(yield* read).toBe(2)
      const next = yield* Effect.fork(read)
      yield* cell.set(3)
      expect(yield* Fiber.join(next)).toBe(3)
    }))

  it.live("a change that lands while a reader is between its check and its registration wakes it", () =>
    Effect.gen(function*() {
      // A fiber yields to others after a fixed number of operations (2048 by default). Wrapping the read in n
      // no-op layers moves that yield point through every step of the read, the gap between "no new value yet"
      // and "registered for the next one" included; the writer runs at the yield.
      const missed: Array<number> = []
      for (let n = 1900; n < 2200; n++) {
        const cell = yield* Cell.make(0)
        const read = yield* cell.reader
        yield* read
        let wrapped: Effect.Effect<number> = read
        for (let i = 0; i < n; i++) {
          const inner = wrapped
          wrapped = Effect.suspend(() => inner)
        }
        const waiting = yield* Effect.fork(wrapped)
        yield* Effect.yieldNow()
        yield* cell.set(1)
        const woken = yield* Fiber.join(waiting).pipe(Effect.timeoutOption("50 millis"))
        if (!Option.contains(woken, 1)) missed.push(n)
      }
      expect(missed).toEqual([])
    }))
})
