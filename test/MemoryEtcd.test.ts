/**
 * The library over the in-memory etcd, under the TestClock: the lease and fencing arithmetic to the millisecond,
 * and the exclusive protocols fast.
 */
import { describe, expect, it } from "@effect/vitest"
import { Context, Duration, Effect, Exit, Fiber, Layer, Option, Queue, Scope, Stream, TestClock } from "effect"
import { type Assignment, Etcd, type EtcdClient, EtcdSeq, type EtcdSeqService, Info, MemoryEtcd } from "../src/index.js"
import { indexOverlaps, makeChecker, selfOverlaps, shareOverlaps } from "./support/checker.js"

/** One more process: a client of the in-memory etcd, in a scope of its own. */
const processOf = Effect.gen(function*() {
  const scope = yield* Scope.make()
  const context = yield* Layer.buildWithScope(Etcd.layerMemory, scope)
  return { etcd: Context.get(context, Etcd), context, close: Scope.close(scope, Exit.void) }
})

/** A member of `key` on a process of its own; `leave` closes both. */
const join = (key: string, ttl: Duration.DurationInput = "5 seconds") =>
  Effect.gen(function*() {
    const process = yield* processOf
    const scope = yield* Scope.make()
    const seq = yield* EtcdSeq.make({ key, ttl }).pipe(Effect.provide(process.context), Scope.extend(scope))
    return {
      seq,
      etcd: process.etcd,
      scope,
      leave: Effect.zipRight(Scope.close(scope, Exit.void), process.close)
    }
  })

/**
 * Lets every fiber the last step woke take its turn: fibers, and event-loop turns (a group watch gathers the
 * responses of one turn into one view before it tells members).
 */
const settle = Effect.repeatN(
  Effect.zipRight(Effect.yieldNow(), Effect.async<void>((resume) => void setImmediate(() => resume(Effect.void)))),
  20
)

const infos = (members: ReadonlyArray<{ readonly seq: EtcdSeqService }>) =>
  Effect.forEach(
    members,
    (m) => Effect.map(m.seq.current, (i) => (Info.isValid(i) ? `${i.index}/${i.count}` : "invalid"))
  )

describe("EtcdSeq over MemoryEtcd", () => {
  it.scoped("three members are 0/3 1/3 2/3; a graceful leave is seen at once", () =>
    Effect.gen(function*() {
      const [a, b, c] = [yield* join("g/leave"), yield* join("g/leave"), yield* join("g/leave")]
      yield* settle
      expect(yield* infos([a!, b!, c!])).toEqual(["0/3", "1/3", "2/3"])
      yield* a!.leave
      yield* settle
      expect(yield* infos([b!, c!])).toEqual(["0/2", "1/2"])
      expect(yield* infos([a!])).toEqual(["invalid"])
      yield* Effect.all([b!.leave, c!.leave])
      expect((yield* (yield* MemoryEtcd).read("g/leave/")).map((kv) => kv.key)).toEqual([])
      expect(yield* (yield* MemoryEtcd).leases).toEqual([])
    }).pipe(Effect.provide(MemoryEtcd.layer)))

  it.scoped("a crashed member is seen gone exactly when its lease's TTL has run out", () =>
    Effect.gen(function*() {
      const memory = yield* MemoryEtcd
      const [a, b, c] = [yield* join("g/crash"), yield* join("g/crash"), yield* join("g/crash")]
      yield* settle
      // c's lease was granted at time 0, and nothing renews it from now on.
      yield* memory.crash(c!.etcd)
      yield* TestClock.adjust(Duration.millis(4_999))
      yield* settle
      expect(yield* infos([a!, b!])).toEqual(["0/3", "1/3"])
      yield* TestClock.adjust(Duration.millis(1))
      yield* settle
      expect(yield* infos([a!, b!])).toEqual(["0/2", "1/2"])
      yield* Effect.all([a!.leave, b!.leave, c!.leave])
      expect(yield* memory.read("g/crash/")).toEqual([])
    }).pipe(Effect.provide(MemoryEtcd.layer)))

  it.scoped(
    "with the TestClock a hair (under a nanosecond) before a lease's deadline, the lease lives on, then ends",
    () =>
      Effect.gen(function*() {
        const memory = yield* MemoryEtcd
        // Granted at 0.1 ms: the deadline is 5000.1, a fraction of a millisecond.
        yield* TestClock.setTime(0.1)
        const a = yield* join("g/hair")
        yield* settle
        yield* memory.crash(a.etcd)
        const deadline = 5_000.1
        yield* TestClock.setTime(deadline - 1e-12)
        // A grant wakes the expiry at this instant: it must wait for the deadline, not spin on a zero-length sleep.
        const b = yield* join("g/hair")
        yield* settle
        expect(yield* memory.read("g/hair/")).toHaveLength(2)
        yield* TestClock.adjust(Duration.millis(1))
        yield* settle
        expect(yield* infos([b])).toEqual(["0/1"])
        yield* Effect.all([a.leave, b.leave])
      }).pipe(Effect.provide(MemoryEtcd.layer)),
    10_000
  )

  it.scoped("a member cut off from etcd fences itself exactly a margin (TTL / 5) before its lease can expire", () =>
    Effect.gen(function*() {
      const memory = yield* MemoryEtcd
      const a = yield* join("g/fence")
      const b = yield* join("g/fence")
      yield* settle
      // Cut off right after its grant, at time 0: no keepalive succeeds again.
      yield* memory.outage({ clients: [a.etcd] })
      yield* TestClock.adjust(Duration.millis(3_999))
      yield* settle
      expect(yield* infos([a, b])).toEqual(["0/2", "1/2"])
      yield* TestClock.adjust(Duration.millis(1))
      yield* settle
      expect(yield* infos([a, b])).toEqual(["invalid", "1/2"])
      // etcd expires the lease at the TTL: only then do the others see the member gone.
      yield* TestClock.adjust(Duration.millis(999))
      yield* settle
      expect(yield* infos([b])).toEqual(["1/2"])
      yield* TestClock.adjust(Duration.millis(1))
      yield* settle
      expect(yield* infos([b])).toEqual(["0/1"])
      // Back in touch: it registers again, after the others.
      yield* memory.recover
      // Its schedule retries at most every 5 s.
      yield* TestClock.adjust("5 seconds")
      yield* settle
      expect(yield* infos([a, b])).toEqual(["1/2", "0/2"])
      yield* Effect.all([a.leave, b.leave])
    }).pipe(Effect.provide(MemoryEtcd.layer)))

  it.scoped("a lease revoked from outside: its member goes invalid, then registers under a new lease", () =>
    Effect.gen(function*() {
      const memory = yield* MemoryEtcd
      const a = yield* join("g/revoke")
      yield* settle
      const seen = yield* Effect.fork(a.seq.changes.pipe(Stream.take(3), Stream.runCollect))
      yield* settle
      const [lease] = yield* memory.leases
      expect(yield* memory.revoke(lease!.id)).toBe(true)
      yield* TestClock.adjust("1 second")
      yield* settle
      const changes = yield* Fiber.join(seen)
      expect([...changes].map(String).map((s) => s.split("@")[0])).toEqual(["0/1", "invalid", "0/1"])
      expect((yield* memory.leases).map((l) => l.id)).not.toContain(lease!.id)
      yield* a.leave
    }).pipe(Effect.provide(MemoryEtcd.layer)))
})

/** A checker-driven churn of `n` members over the in-memory etcd; returns the recorded runs. */
const churn = (exclusive: "index" | "group", seed: number) =>
  Effect.gen(function*() {
    const memory = yield* MemoryEtcd
    const checker = makeChecker()
    let state = seed
    const next = () => {
      state = (state * 1_103_515_245 + 12_345) % 2_147_483_648
      return state / 2_147_483_648
    }
    const live: Array<{ readonly leave: Effect.Effect<void>; readonly etcd: EtcdClient }> = []
    const key = `churn/${exclusive}-${seed}`
    for (let step = 0; step < 120; step++) {
      const roll = next()
      if (live.length < 4 || roll < 0.5) {
        const m = yield* join(key, "3 seconds")
        yield* EtcdSeq.runAssigned(checker.work(`m${step}`, Math.floor(next() * 400)), { exclusive }).pipe(
          Effect.provideService(EtcdSeq, m.seq),
          Effect.forkIn(m.scope)
        )
        live.push({ leave: m.leave, etcd: m.etcd })
      } else {
        const [gone] = live.splice(Math.floor(next() * live.length), 1)
        // A crash: etcd hears nothing from the process again; its lease runs out after the TTL.
        if (roll > 0.8) yield* memory.crash(gone!.etcd)
        // The leave waits for the work to stop, which takes time on the clock this loop moves: it runs beside it.
        yield* Effect.forkScoped(gone!.leave)
      }
      // Time between changes: often less than work takes to stop, so handovers overlap with changes.
      yield* TestClock.adjust(Duration.millis(Math.floor(next() * 600)))
      yield* settle
    }
    yield* TestClock.adjust("10 seconds")
    yield* settle
    yield* Effect.forEach(live, (m) => Effect.forkScoped(m.leave), { discard: true })
    yield* TestClock.adjust("10 seconds")
    yield* settle
    return checker.runs
  })

describe("exclusive protocols over MemoryEtcd, under the TestClock", () => {
  it.scoped.each(["index", "group"] as const)(
    "%s mode: 120 joins, leaves and crashes, no forbidden overlap",
    (exclusive) =>
      Effect.gen(function*() {
        const runs = yield* churn(exclusive, 7)
        expect(runs.length).toBeGreaterThan(exclusive === "index" ? 60 : 20)
        yield* Effect.log(`${exclusive}: ${runs.length} runs`)
        expect(selfOverlaps(runs)).toEqual([])
        expect(exclusive === "index" ? indexOverlaps(runs) : shareOverlaps(runs)).toEqual([])
      }).pipe(Effect.provide(MemoryEtcd.layer)),
    60_000
  )
})

describe("runAssigned on a membership made by hand (a test double)", () => {
  const double = (infos: ReadonlyArray<Info>): EtcdSeqService => ({
    group: "double",
    changes: Stream.fromIterable(infos),
    current: Effect.succeed(infos.at(-1) ?? Info.invalid),
    members: Effect.succeed([])
  })

  it.effect("runs work per Info in \"none\" mode, and ends with the double's changes", () =>
    Effect.gen(function*() {
      const infos = yield* Queue.unbounded<Info>()
      const handMade: EtcdSeqService = {
        group: "double",
        changes: Stream.fromQueue(infos, { shutdown: true }),
        current: Effect.succeed(Info.invalid),
        members: Effect.succeed([])
      }
      const seen = yield* Queue.unbounded<string>()
      const run = yield* EtcdSeq.runAssigned((a: Assignment) =>
        Effect.acquireRelease(Queue.offer(seen, `start ${a.info}`), () => Queue.offer(seen, `stop ${a.info}`)).pipe(
          Effect.zipRight(Effect.never)
        )
      ).pipe(Effect.provideService(EtcdSeq, handMade), Effect.fork)
      yield* Queue.offer(infos, Info.make(0, 2, 5))
      expect(yield* Queue.take(seen)).toBe("start 0/2@5")
      yield* Queue.offer(infos, Info.invalid)
      expect(yield* Queue.take(seen)).toBe("stop 0/2@5")
      yield* Queue.offer(infos, Info.make(1, 3, 9))
      expect(yield* Queue.take(seen)).toBe("start 1/3@9")
      // The double's changes end: the membership ended, and runAssigned with it, its work stopped.
      yield* Queue.shutdown(infos)
      expect(Exit.isInterrupted(yield* Fiber.await(run))).toBe(true)
      expect(yield* Queue.take(seen)).toBe("stop 1/3@9")
    }))

  it.effect("refuses the exclusive modes with InvalidOptions: they need etcd", () =>
    Effect.gen(function*() {
      const error = yield* EtcdSeq.runAssigned(() => Effect.void, { exclusive: "index" }).pipe(
        Effect.provideService(EtcdSeq, double([Info.make(0, 1, 1)])),
        Effect.flip
      )
      expect(error).toMatchObject({ _tag: "InvalidOptions", field: "exclusive" })
      void Option
    }))
})
