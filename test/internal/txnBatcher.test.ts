/**
 * The transaction batcher over a fake `send`: what goes together, how many at once, what interruption and the close do
 * to writes queued and in flight.
 */
import { describe, expect, it } from "@effect/vitest"
import { Deferred, type Duration, Effect, Exit, Fiber, Option, Scope } from "effect"
import * as TxnBatcher from "../../src/internal/txnBatcher.js"

interface W {
  readonly n: number
}

const all = (queue: ReadonlyArray<W>) => queue
const first = (queue: ReadonlyArray<W>) => queue.slice(0, 1)

/**
 * A batcher over a `send` that records each batch (the writes' numbers), waits for `gate` if given, and answers each
 * write with its number times ten unless `answer` says otherwise.
 */
const fake = (
  options: Partial<TxnBatcher.Kind<W, number, string>> & {
    readonly gate?: Deferred.Deferred<void>
    readonly answer?: (w: W) => number | typeof TxnBatcher.again
    readonly fail?: string
  } = {}
) =>
  Effect.gen(function*() {
    const batches: Array<ReadonlyArray<number>> = []
    const started = yield* Deferred.make<void>()
    let inFlight = 0
    let maxSeen = 0
    const batcher = yield* TxnBatcher.make<W, number, string>({
      take: all,
      maxInFlight: 4,
      waiting: "awaitSent",
      onClose: "interrupt",
      send: (batch) =>
        Effect.gen(function*() {
          batches.push(batch.map((w) => w.n))
          maxSeen = Math.max(maxSeen, ++inFlight)
          yield* Deferred.succeed(started, undefined)
          if (options.gate !== undefined) yield* Deferred.await(options.gate)
          else yield* Effect.sleep("5 millis")
          if (options.fail !== undefined) return yield* Effect.fail(options.fail)
          return batch.map(options.answer ?? ((w) => w.n * 10))
        }).pipe(Effect.ensuring(Effect.sync(() => inFlight--))),
      ...options
    })
    return { batcher, batches, started, maxSeen: () => maxSeen }
  })

const numbers = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => ({ n: from + i }))

/** A flushing batcher in a scope of its own, with the write `{ n: 1 }` in flight and held at `gate`. */
const oneInFlight = (flush: Duration.DurationInput) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const gate = yield* Deferred.make<void>()
    const fixture = yield* fake({ maxInFlight: 1, waiting: "detached", onClose: { flush }, gate }).pipe(
      Scope.extend(scope)
    )
    const sent = yield* Effect.fork(fixture.batcher.write({ n: 1 }))
    yield* Deferred.await(fixture.started)
    return { ...fixture, gate, scope, sent }
  })
describe("TxnBatcher", () => {
  it.live("writes asked for in one turn go in one batch; each gets its own outcome", () =>
    Effect.gen(function*() {
      const { batcher, batches } = yield* fake()
      const results = yield* Effect.forEach(numbers(0, 5), batcher.write, { concurrency: "unbounded" })
      expect(results).toEqual([0, 10, 20, 30, 40])
      expect(batches).toEqual([[0, 1, 2, 3, 4]])
    }).pipe(Effect.scoped))

  it.live("a batch is what `take` chooses: more than maxOps writes go in several", () =>
    Effect.gen(function*() {
      const { batcher, batches } = yield* fake({ take: (queue) => queue.slice(0, TxnBatcher.maxOps), maxInFlight: 1 })
      yield* Effect.forEach(numbers(0, 300), batcher.write, { concurrency: "unbounded", discard: true })
      expect(batches.map((b) => b.length)).toEqual([128, 128, 44])
      expect(batches.flat()).toEqual(numbers(0, 300).map((w) => w.n))
    }).pipe(Effect.scoped))

  it.live("`take` may choose writes from anywhere in the queue; the others keep their order", () =>
    Effect.gen(function*() {
      const { batcher, batches } = yield* fake({ take: (queue) => queue.filter((w) => w.n % 2 === 0), maxInFlight: 1 })
      yield* Effect.forEach(numbers(0, 6), batcher.write, { concurrency: "unbounded", discard: true })
      expect(batches).toEqual([[0, 2, 4], [1], [3], [5]])
    }).pipe(Effect.scoped))

  it.live("at most maxInFlight batches are in flight", () =>
    Effect.gen(function*() {
      const { batcher, batches, maxSeen } = yield* fake({ take: first, maxInFlight: 2 })
      yield* Effect.forEach(numbers(0, 8), batcher.write, { concurrency: "unbounded", discard: true })
      expect(batches).toHaveLength(8)
      expect(maxSeen()).toBe(2)
    }).pipe(Effect.scoped))

  it.live("a write answered `again` is sent again, before the writes queued after it", () =>
    Effect.gen(function*() {
      const tried = new Set<number>()
      const { batcher, batches } = yield* fake({
        take: (queue) => queue.slice(0, 3),
        maxInFlight: 1,
        answer: (w) => w.n === 1 && !tried.has(1) ? (tried.add(1), TxnBatcher.again) : w.n * 10
      })
      const results = yield* Effect.forEach(numbers(0, 5), batcher.write, { concurrency: "unbounded" })
      expect(results).toEqual([0, 10, 20, 30, 40])
      expect(batches).toEqual([[0, 1, 2], [1, 3, 4]])
    }).pipe(Effect.scoped))

  it.live("a failed send fails every write of its batch alike", () =>
    Effect.gen(function*() {
      const { batcher } = yield* fake({ fail: "refused" })
      const exits = yield* Effect.forEach(numbers(0, 3), (w) => Effect.exit(batcher.write(w)), {
        concurrency: "unbounded"
      })
      expect(exits).toEqual(numbers(0, 3).map(() => Exit.fail("refused")))
    }).pipe(Effect.scoped))

  describe("waiting", () => {
    it.live("awaitSent: interrupted before it is sent, a write is dropped", () =>
      Effect.gen(function*() {
        const { batcher, batches } = yield* fake()
        const dropped = yield* Effect.fork(batcher.write({ n: 1 }))
        yield* Effect.yieldNow()
        yield* Fiber.interrupt(dropped)
        expect(yield* batcher.write({ n: 2 })).toBe(20)
        expect(batches).toEqual([[2]])
      }).pipe(Effect.scoped))

    it.live("awaitSent: interrupted in flight, the waiter waits for the outcome", () =>
      Effect.gen(function*() {
        const gate = yield* Deferred.make<void>()
        const { batcher, started } = yield* fake({ gate })
        const waiter = yield* Effect.fork(batcher.write({ n: 1 }))
        yield* Deferred.await(started)
        const interrupting = yield* Effect.fork(Fiber.interrupt(waiter))
        yield* Effect.sleep("20 millis")
        expect(Option.isNone(yield* Fiber.poll(interrupting))).toBe(true)
        yield* Deferred.succeed(gate, undefined)
        yield* Fiber.join(interrupting)
      }).pipe(Effect.scoped))

    it.live("interruptible: a waiter in an uninterruptible region is interrupted while its write is in flight", () =>
      Effect.gen(function*() {
        const gate = yield* Deferred.make<void>()
        const { batcher, started } = yield* fake({ gate, waiting: "interruptible" })
        const waiter = yield* Effect.fork(Effect.uninterruptible(batcher.write({ n: 1 })))
        yield* Deferred.await(started)
        expect(Exit.isInterrupted(yield* Fiber.interrupt(waiter))).toBe(true)
        yield* Deferred.succeed(gate, undefined)
      }).pipe(Effect.scoped))

    it.live("interruptible: interrupted before it is sent, a write is dropped", () =>
      Effect.gen(function*() {
        const { batcher, batches } = yield* fake({ waiting: "interruptible" })
        const dropped = yield* Effect.fork(batcher.write({ n: 1 }))
        yield* Effect.yieldNow()
        yield* Fiber.interrupt(dropped)
        yield* batcher.write({ n: 2 })
        expect(batches).toEqual([[2]])
      }).pipe(Effect.scoped))

    it.live("detached: interrupted before it is sent, a write is sent anyway", () =>
      Effect.gen(function*() {
        const { batcher, batches } = yield* fake({ waiting: "detached", maxInFlight: 1 })
        const gone = yield* Effect.fork(batcher.write({ n: 1 }))
        yield* Effect.yieldNow()
        yield* Fiber.interrupt(gone)
        yield* batcher.write({ n: 2 })
        expect(batches.flat()).toEqual([1, 2])
      }).pipe(Effect.scoped))

    it.live("offer queues at once; the effect it returns waits", () =>
      Effect.gen(function*() {
        const { batcher, batches } = yield* fake()
        const written = yield* batcher.offer({ n: 1 })
        const second = yield* batcher.offer({ n: 2 })
        expect(yield* written).toBe(10)
        expect(yield* second).toBe(20)
        expect(batches).toEqual([[1, 2]])
      }).pipe(Effect.scoped))
  })

  describe("onClose", () => {
    it.live("interrupt: writes not sent end interrupted, a send in flight is interrupted, later writes too", () =>
      Effect.gen(function*() {
        const scope = yield* Scope.make()
        // Never opened: only the close ends the send.
        const gate = yield* Deferred.make<void>()
        const { batcher, batches, started } = yield* fake({ take: first, maxInFlight: 1, gate }).pipe(
          Scope.extend(scope)
        )
        const sent = yield* Effect.fork(batcher.write({ n: 1 }))
        yield* Deferred.await(started)
        const queued = yield* Effect.fork(batcher.write({ n: 2 }))
        yield* Effect.yieldNow()
        yield* Scope.close(scope, Exit.void)
        expect(Exit.isInterrupted(yield* Fiber.await(sent))).toBe(true)
        expect(Exit.isInterrupted(yield* Fiber.await(queued))).toBe(true)
        expect(Exit.isInterrupted(yield* Effect.exit(batcher.write({ n: 3 })))).toBe(true)
        expect(batches).toEqual([[1]])
      }))

    it.live("flush: the close waits for what is in flight (never interrupted), then sends what is queued", () =>
      Effect.gen(function*() {
        const { batcher, batches, gate, scope, sent } = yield* oneInFlight("5 seconds")
        const queued = yield* batcher.offer({ n: 2 })
        const also = yield* batcher.offer({ n: 3 })
        const closing = yield* Effect.fork(Scope.close(scope, Exit.void))
        yield* Effect.sleep("20 millis")
        // The close waits for the send in flight; the queued writes go after it, not beside it.
        expect(batches).toEqual([[1]])
        yield* Deferred.succeed(gate, undefined)
        yield* Fiber.join(closing)
        expect(batches).toEqual([[1], [2, 3]])
        expect(yield* Fiber.join(sent)).toBe(10)
        expect([yield* queued, yield* also]).toEqual([20, 30])
      }))

    it.live("flush: bounded; what is still queued when the bound passes ends interrupted, never sent", () =>
      Effect.gen(function*() {
        const { batcher, batches, gate, scope, sent } = yield* oneInFlight("30 millis")
        const queued = yield* batcher.offer({ n: 2 })
        const closing = yield* Effect.fork(Scope.close(scope, Exit.void))
        expect(Exit.isInterrupted(yield* Effect.exit(queued))).toBe(true)
        // The send in flight is uninterruptible: the close goes on once it is done.
        expect(Option.isNone(yield* Fiber.poll(closing))).toBe(true)
        yield* Deferred.succeed(gate, undefined)
        yield* Fiber.join(closing)
        expect(yield* Fiber.join(sent)).toBe(10)
        expect(batches).toEqual([[1]])
      }))
  })
})
