/**
 * What keeps a busy group from churning, over the in-memory etcd under the TestClock: views paced in a burst of
 * changes, and a join whose write landed while its answer was lost.
 */
import { describe, expect, it } from "@effect/vitest"
import { Clock, Duration, Effect, ExecutionStrategy, Exit, Fiber, Option, Scope, Stream, TestClock } from "effect"
import { Etcd, type EtcdClient, EtcdSeq, type Info, MemoryEtcd } from "../src/index.js"
import { advance, settle } from "./support/testClock.js"

const key = "g/overload"

/** A member on `client` whose Infos are recorded as `index/count`, in a scope of its own inside the test's. */
const member = (client: EtcdClient) =>
  Effect.gen(function*() {
    const scope = yield* Scope.fork(yield* Effect.scope, ExecutionStrategy.sequential)
    const seq = yield* EtcdSeq.make({ key, ttl: "10 seconds" }).pipe(
      Effect.provideService(Etcd, client),
      Scope.extend(scope)
    )
    const seen: Array<string> = []
    yield* seq.changes.pipe(
      Stream.runForEach((info: Info) => Effect.sync(() => void seen.push(`${info.index}/${info.count}`))),
      Effect.forkIn(scope)
    )
    return { seq, seen, leave: Scope.close(scope, Exit.void) }
  })

/** `n` members on `client` joining at the same moment, as a process starting them together does. */
const joinAtOnce = (client: EtcdClient, n: number) =>
  Effect.forEach(Array.from({ length: n }), () => member(client), { concurrency: "unbounded" })

/** `n` members on `client` joining one at a time, `every` of the clock apart: a burst spread over time. */
const joinSpread = (client: EtcdClient, n: number, every: Duration.DurationInput) =>
  Effect.gen(function*() {
    for (let i = 0; i < n; i++) {
      yield* member(client)
      yield* TestClock.adjust(every)
      yield* settle
    }
  })

/** One more client of the test's MemoryEtcd, for the life of the test. */
const client = (viewPacing?: { readonly initial: Duration.DurationInput; readonly max: Duration.DurationInput }) =>
  Etcd.makeMemory(viewPacing === undefined ? {} : { viewPacing })

describe("a busy group", () => {
  it.scoped("a burst of joins reaches a paced member as a few views, the last complete; a lone change at once", () =>
    Effect.gen(function*() {
      const paced = yield* client({ initial: "10 millis", max: "1 second" })
      const others = yield* client()
      const a = yield* member(paced)
      yield* settle
      expect(a.seen).toEqual(["0/1"])

      // 50 joins, one every 5 ms of the clock: unpaced, `a` would see 50 more Infos.
      yield* joinSpread(others, 50, "5 millis")
      yield* advance(1_000)
      const burst = a.seen.slice(1)
      expect(burst.at(-1)).toBe("0/51")
      // The leading view at once, then one per interval (10, 20, 40, 80, 160 ms...) over the 250 ms burst.
      expect(burst.length).toBeGreaterThanOrEqual(3)
      expect(burst.length).toBeLessThanOrEqual(8)
      const counts = burst.map((s) => Number(s.split("/")[1]))
      expect(counts).toEqual([...counts].sort((x, y) => x - y))

      // After a quiet moment a single join reaches `a` without the clock moving.
      yield* advance(3_000)
      yield* member(others)
      yield* settle
      expect(a.seen.at(-1)).toBe("0/52")
    }).pipe(Effect.provide(MemoryEtcd.layer)))

  it.scoped("once a burst is over, changes 60 ms apart reach a paced member at once, not an interval late", () =>
    Effect.gen(function*() {
      const paced = yield* client({ initial: "10 millis", max: "160 millis" })
      const others = yield* client()
      const a = yield* member(paced)
      yield* settle
      // 100 joins, one every 5 ms of the clock: the interval grows to its max (160 ms).
      yield* joinSpread(others, 100, "5 millis")
      expect(a.seen.at(-1)).not.toBe("0/101")
      // The burst's last view, at the end of its interval.
      yield* advance(200)
      expect(a.seen.at(-1)).toBe("0/101")

      // Then one change every 60 ms: two or three in each max interval, far fewer than one per tenth of it (16 ms). The
      // interval halves (160, 80, 40 ms...) instead of staying at its max, so after a few changes that may wait for the
      // end of their interval, each reaches `a` without the clock moving.
      for (let i = 0; i < 5; i++) {
        yield* member(others)
        yield* advance(60)
      }
      for (let count = 107; count <= 112; count++) {
        yield* member(others)
        yield* settle
        expect(a.seen.at(-1)).toBe(`0/${count}`)
        yield* advance(60)
      }
    }).pipe(Effect.provide(MemoryEtcd.layer)))

  it.scoped("the wall clock stepped back 10 s holds no view: pacing runs on the monotonic clock", () =>
    Effect.gen(function*() {
      // The TestClock, with a wall clock (currentTimeMillis) that an operator or NTP steps back; its monotonic
      // reading (currentTimeNanos) goes on as before.
      const base = yield* Effect.clock
      let stepped = 0
      const wall = () => base.unsafeCurrentTimeMillis() - stepped
      const clock: Clock.Clock = {
        [Clock.ClockTypeId]: Clock.ClockTypeId,
        unsafeCurrentTimeMillis: wall,
        currentTimeMillis: Effect.sync(wall),
        unsafeCurrentTimeNanos: () => BigInt(Math.round(base.unsafeCurrentTimeMillis() * 1_000_000)),
        currentTimeNanos: Effect.sync(() => BigInt(Math.round(base.unsafeCurrentTimeMillis() * 1_000_000))),
        sleep: (duration) => base.sleep(duration)
      }
      // Made under that clock, so the watches' fibers read it; the TestClock moves outside.
      const withWall = Effect.withClock(clock)
      const paced = yield* withWall(client({ initial: "10 millis", max: "1 second" }))
      const others = yield* withWall(client())
      const a = yield* withWall(member(paced))
      yield* withWall(member(others))
      yield* advance(100)
      expect(a.seen.at(-1)).toBe("0/2")
      stepped = 10_000
      yield* withWall(member(others))
      yield* advance(100)
      // On the wall clock the last view went out 10 s in the future: this one would wait for it (9.9 s).
      expect(a.seen.at(-1)).toBe("0/3")
    }).pipe(Effect.provide(MemoryEtcd.layer)))

  it.scoped("a join whose write landed but whose answer was lost joins once: others see one join, not a join and a leave", () =>
    Effect.gen(function*() {
      const memory = yield* MemoryEtcd
      const a = yield* member(yield* client())
      const lossy = yield* client()
      yield* memory.loseAnswers(lossy)
      const joining = yield* Effect.fork(member(lossy))
      // The lost answer costs its deadline (5 s), then the write is made again and finds its key.
      yield* advance(7_000)
      const b = yield* joining.await.pipe(Effect.flatten)
      expect(yield* b.seq.current).toMatchObject({ index: 1, count: 2 })
      expect(a.seen).toEqual(["0/1", "0/2"])
      expect((yield* memory.read(`${key}/members/`)).length).toBe(2)
    }).pipe(Effect.provide(MemoryEtcd.layer)))

  it.scoped("a first join whose write finds the client's lease gone joins under a fresh lease instead of failing", () =>
    Effect.gen(function*() {
      const memory = yield* MemoryEtcd
      const shared = yield* client()
      const a = yield* member(shared)
      const [lease] = yield* memory.leases
      // Gone at etcd, and the client has not noticed yet: the next join's write is refused as lease not found.
      yield* memory.revoke(lease!.id)
      const joining = yield* Effect.fork(member(shared))
      yield* advance(2_000)
      const b = yield* joining.await.pipe(Effect.flatten)
      expect((yield* b.seq.current).count).toBe(2)
      expect((yield* a.seq.current).count).toBe(2)
      expect((yield* memory.leases).map((l) => l.id)).not.toContain(lease!.id)
    }).pipe(Effect.provide(MemoryEtcd.layer)))

  it.scoped("a client fenced while etcd still held its lease takes its members' places back: the others see nothing", () =>
    Effect.gen(function*() {
      const memory = yield* MemoryEtcd
      const a = yield* member(yield* client())
      const slow = yield* client()
      const b = yield* member(slow)
      yield* settle
      expect(a.seen).toEqual(["0/1", "0/2"])
      // Its keepalives fail until it fences itself (8 s after the last one that succeeded), then etcd is reachable
      // again within the fence's margin, before the lease could expire there.
      yield* memory.outage({ clients: [slow] })
      for (let i = 0; i < 200 && b.seen.at(-1) !== "-1/0"; i++) yield* advance(50)
      expect(b.seen).toEqual(["1/2", "-1/0"])
      yield* memory.recover
      // The next keepalive (within a second) renews the lease: b is back in its place, with the key it had.
      yield* advance(1_500)
      expect(b.seen).toEqual(["1/2", "-1/0", "1/2"])
      expect(a.seen).toEqual(["0/1", "0/2"])
      expect((yield* memory.read(`${key}/members/`)).length).toBe(2)
      yield* advance(30_000)
      expect(b.seen).toEqual(["1/2", "-1/0", "1/2"])
      expect(a.seen).toEqual(["0/1", "0/2"])
    }).pipe(Effect.provide(MemoryEtcd.layer)))

  it.scoped("members of one client that join at once are written in a few transactions: others see a few changes", () =>
    Effect.gen(function*() {
      const memory = yield* MemoryEtcd
      const a = yield* member(yield* client())
      const others = yield* client()
      const joined = yield* joinAtOnce(others, 40)
      yield* settle
      const keys = yield* memory.read(`${key}/members/`)
      expect(keys.length).toBe(41)
      // One revision per transaction: a watcher reads one response for each, not one for each member.
      expect(new Set(keys.map((kv) => kv.createRevision)).size).toBeLessThanOrEqual(3)
      expect(a.seen.length).toBeLessThanOrEqual(4)
      expect(a.seen.at(-1)).toBe("0/41")
      // Members written together share their join revision and are ordered by id among themselves: dense, agreed.
      const members = yield* a.seq.members
      expect(members.map((m) => m.index)).toEqual(Array.from({ length: 41 }, (_, i) => i))
      const byPlace = [...members].sort((x, y) => x.joinRevision - y.joinRevision || (x.id < y.id ? -1 : 1))
      expect(members.map((m) => m.id)).toEqual(byPlace.map((m) => m.id))
      const indices = yield* Effect.forEach(joined, (m) => m.seq.current)
      expect(indices.map((info) => info.index).sort((x, y) => x - y)).toEqual(
        Array.from({ length: 40 }, (_, i) => i + 1)
      )
      for (const m of joined) expect(m.seen.at(-1)).toMatch(/\/41$/)
    }).pipe(Effect.provide(MemoryEtcd.layer)))

  it.scoped("members of one client that leave at once are deleted in a few transactions: others see a few changes", () =>
    Effect.gen(function*() {
      const memory = yield* MemoryEtcd
      const a = yield* member(yield* client())
      const others = yield* client()
      const joined = yield* joinAtOnce(others, 40)
      yield* settle
      expect(a.seen.at(-1)).toBe("0/41")
      const before = yield* memory.revision
      const seenBefore = a.seen.length
      // A process shutting down: all its members leave at once. Each leave deletes its member and handover keys.
      yield* Effect.forEach(joined, (m) => m.leave, { concurrency: "unbounded", discard: true })
      yield* settle
      expect((yield* memory.read(`${key}/members/`)).map((kv) => kv.key)).toEqual([
        `${key}/members/${(yield* a.seq.members)[0]!.id}`
      ])
      expect(yield* memory.read(`${key}/handover/`)).toEqual([])
      // One revision per transaction (80 deletes, at most 128 in one): not one per member.
      expect((yield* memory.revision) - before).toBeLessThanOrEqual(2)
      expect(a.seen.length - seenBefore).toBeLessThanOrEqual(2)
      expect(a.seen.at(-1)).toBe("0/1")
    }).pipe(Effect.provide(MemoryEtcd.layer)))

  it.scoped("a leave whose delete waits behind four batches in flight ends within its bound, closed uninterruptibly", () =>
    Effect.gen(function*() {
      const memory = yield* MemoryEtcd
      const lossy = yield* client()
      const members = yield* Effect.forEach(Array.from({ length: 5 }), () => member(lossy))
      yield* settle
      yield* memory.loseAnswers(lossy, 5)
      // Four leaves, one at a time: each one's delete is a batch of its own, whose answer is lost (5 s in flight).
      for (const m of members.slice(0, 4)) {
        yield* Effect.fork(m.leave)
        yield* settle
      }
      // The fifth leaves as a layer's scope closes, uninterruptibly: its delete queues behind the four, then its own
      // answer is lost too. Its bound (the request timeout, 5 s) ends the wait; the delete goes on in the background.
      const fifth = yield* Effect.fork(Effect.uninterruptible(members[4]!.leave))
      yield* settle
      yield* advance(6_000)
      expect(Option.isSome(yield* Fiber.poll(fifth))).toBe(true)
      yield* advance(10_000)
      expect(yield* memory.read(`${key}/members/`)).toEqual([])
    }).pipe(Effect.provide(MemoryEtcd.layer)))

  it.scoped("a join interrupted while its key waits for a batch writes nothing; four batches at most are in flight", () =>
    Effect.gen(function*() {
      const memory = yield* MemoryEtcd
      const lossy = yield* client()
      yield* memory.loseAnswers(lossy, 4)
      // Four joins, one at a time: each one's batch lands but its answer is lost, so it stays in flight for 5 s.
      const stuck = []
      for (let i = 0; i < 4; i++) {
        stuck.push(yield* Effect.fork(member(lossy)))
        yield* settle
      }
      expect((yield* memory.read(`${key}/members/`)).length).toBe(4)
      // A fifth waits for a free place; interrupted, it leaves at once, and its key is never written.
      const fifth = yield* Effect.fork(
        Effect.scoped(EtcdSeq.make({ key, ttl: "10 seconds" }).pipe(Effect.provideService(Etcd, lossy)))
      )
      yield* settle
      yield* Fiber.interrupt(fifth)
      yield* advance(7_000)
      for (const joining of stuck) yield* joining.await.pipe(Effect.flatten)
      yield* settle
      expect((yield* memory.read(`${key}/members/`)).length).toBe(4)
    }).pipe(Effect.provide(MemoryEtcd.layer)))

  it.scoped("a malformed viewPacing is refused before any I/O", () =>
    Effect.gen(function*() {
      const refused = (viewPacing: Parameters<typeof Etcd.makeMemory>[0]) =>
        Effect.flip(Effect.scoped(Etcd.makeMemory(viewPacing)))
      expect(yield* refused({ viewPacing: { initial: "2 seconds", max: "1 second" } })).toMatchObject({
        _tag: "InvalidOptions",
        field: "viewPacing.max"
      })
      expect(yield* refused({ viewPacing: { initial: "soon" as Duration.DurationInput } })).toMatchObject({
        _tag: "InvalidOptions",
        field: "viewPacing.initial"
      })
      const bad = yield* Effect.flip(Etcd.make({ endpoints: ["http://127.0.0.1:1"], viewPacing: { max: -1 } }))
      expect(bad).toMatchObject({ _tag: "InvalidOptions", field: "viewPacing.max" })
    }).pipe(Effect.provide(MemoryEtcd.layer)))
})
