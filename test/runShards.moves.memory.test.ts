/**
 * runShards' moves over the in-memory etcd under the TestClock: a moving shard runs on its old owner until its new
 * owner waits for it (no gap but the stop and one event), `maxMoves` bounds the moves at once per member, `settle`
 * merges a burst of joins and leaves into one change, a dead member's shards move at once whatever the policy.
 */
import { describe, expect, it } from "@effect/vitest"
import { Cause, Context, Duration, Effect, Exit, Fiber, Layer, Option, Scope, TestClock } from "effect"
import { Etcd, type EtcdClient, EtcdSeq, MemoryEtcd } from "../src/index.js"
import * as Keys from "../src/internal/keys.js"
import { throwsOnUse } from "./support/members.js"
import { fenceRegressions, makeShardChecker, running, shardOverlaps, type ShardRun } from "./support/shardChecker.js"
import { advance, settle } from "./support/testClock.js"

interface Options {
  readonly shards: number
  readonly maxMoves?: number
  readonly settle?: Duration.DurationInput
}

/** A member of `key` on a process of its own, running the checker's work with `options`. */
const member = (
  key: string,
  options: Options,
  checker: ReturnType<typeof makeShardChecker>,
  name: string,
  stop = 0
) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const context = yield* Layer.buildWithScope(Etcd.layerMemory, scope)
    const seq = yield* EtcdSeq.make({ key, ttl: "3 seconds" }).pipe(Effect.provide(context), Scope.extend(scope))
    const exit = yield* EtcdSeq.runShards(options, checker.work(name, stop)).pipe(
      Effect.provideService(EtcdSeq, seq),
      Effect.exit,
      Effect.forkIn(scope)
    )
    return { seq, etcd: Context.get(context, Etcd) as EtcdClient, exit, leave: Scope.close(scope, Exit.void) }
  })

const ownersOf = (runs: ReadonlyArray<ShardRun>, shards: number) => running(runs, shards).map((o) => o.join("+"))

/** Every move: a run that ended, and the next run of its shard (by another member). */
const movesOf = (runs: ReadonlyArray<ShardRun>) => {
  const byShard = new Map<number, Array<ShardRun>>()
  for (const run of runs) byShard.set(run.shard, [...(byShard.get(run.shard) ?? []), run])
  const moves: Array<{ readonly from: ShardRun; readonly to: ShardRun }> = []
  for (const list of byShard.values()) {
    const sorted = [...list].sort((a, b) => a.start - b.start)
    for (let i = 1; i < sorted.length; i++) {
      if (sorted[i - 1]!.member !== sorted[i]!.member) moves.push({ from: sorted[i - 1]!, to: sorted[i]! })
    }
  }
  return moves
}

/**
 * The most moves under way at once touching each member: for the member a shard leaves, from the start to the end of
 * its stop (what it hands over at once); for the member it joins, from the old owner's stop to its own start (what it
 * waits for at once).
 */
const movesAtOnce = (moves: ReturnType<typeof movesOf>): Map<string, number> => {
  const events: Array<{ readonly at: number; readonly member: string; readonly delta: number }> = []
  for (const { from, to } of moves) {
    events.push({ at: from.stopping!, member: from.member, delta: 1 }, { at: from.end, member: from.member, delta: -1 })
    events.push({ at: from.stopping!, member: to.member, delta: 1 }, { at: to.start, member: to.member, delta: -1 })
  }
  // Ends before starts at one instant: a move that ends as another begins is not two at once.
  events.sort((a, b) => a.at - b.at || a.delta - b.delta)
  const now = new Map<string, number>()
  const most = new Map<string, number>()
  for (const e of events) {
    now.set(e.member, (now.get(e.member) ?? 0) + e.delta)
    most.set(e.member, Math.max(most.get(e.member) ?? 0, now.get(e.member)!))
  }
  return most
}

/** The claims waiting behind another member's, per claiming member id, as etcd holds them now. */
const waitingClaims = (memory: MemoryEtcd["Type"], group: string) =>
  Effect.map(memory.read(Keys.claimsPrefix(group)), (kvs) => {
    const byShard = new Map<number, Array<{ owner: string; rev: number }>>()
    for (const kv of kvs) {
      const claim = Keys.decodeClaim(Keys.claimsPrefix(group), kv)
      if (claim === undefined) continue
      byShard.set(claim.shard, [...(byShard.get(claim.shard) ?? []), { owner: claim.owner, rev: kv.createRevision }])
    }
    const waiting = new Map<string, number>()
    for (const list of byShard.values()) {
      const [holder, ...rest] = [...list].sort((a, b) => a.rev - b.rev)
      for (const c of rest) if (c.owner !== holder!.owner) waiting.set(c.owner, (waiting.get(c.owner) ?? 0) + 1)
    }
    return waiting
  })

describe("runShards moves without a gap", () => {
  it.scoped("a join: the old owner stops a moving shard only once its new owner waits; no clock advance between", () =>
    Effect.gen(function*() {
      const checker = makeShardChecker()
      yield* member("g/gapless", { shards: 16 }, checker, "a", 200)
      yield* settle
      expect(ownersOf(checker.runs, 16)).toEqual(Array(16).fill("a"))
      yield* member("g/gapless", { shards: 16 }, checker, "b", 200)
      yield* settle
      yield* settle
      // b claimed its shards and waits; a stops them now (each stop takes 200 ms), and runs all the others.
      const moving = checker.runs.filter((r) => r.stopping !== undefined)
      expect(moving.length).toBeGreaterThanOrEqual(4)
      expect(checker.runs.filter((r) => r.member === "b")).toEqual([])
      expect(ownersOf(checker.runs, 16)).toEqual(Array(16).fill("a"))
      yield* TestClock.adjust(Duration.millis(200))
      yield* settle
      const gaps: Array<number> = []
      for (const from of moving) {
        const to = checker.runs.find((r) => r.member === "b" && r.shard === from.shard)!
        expect(to).toBeDefined()
        // Unowned only for the stop: b started at the instant a's stop ended, on the clock.
        expect(from.clockEnd! - from.clockStopping!).toBe(200)
        expect(to.clockStart).toBe(from.clockEnd)
        expect(to.start).toBeGreaterThanOrEqual(from.end)
        gaps.push(to.start - from.end)
      }
      yield* Effect.logInfo(`gaps after the stop (ms, real): max ${Math.max(...gaps).toFixed(2)}`)
      expect(ownersOf(checker.runs, 16).filter((o) => o === "b").length).toBe(moving.length)
      expect(running(checker.runs, 16).every((o) => o.length === 1)).toBe(true)
      expect(shardOverlaps(checker.runs)).toEqual([])
      expect(fenceRegressions(checker.runs)).toEqual([])
    }).pipe(Effect.provide(MemoryEtcd.layer)))

  it.scoped("a member that leaves stops all its shards at once (safety first); they start elsewhere after", () =>
    Effect.gen(function*() {
      const checker = makeShardChecker()
      const a = yield* member("g/leave", { shards: 8, maxMoves: 1 }, checker, "a", 100)
      yield* member("g/leave", { shards: 8, maxMoves: 1 }, checker, "b", 100)
      yield* advance(2_000)
      const ofA = checker.runs.filter((r) => r.member === "a" && !Number.isFinite(r.end))
      expect(ofA.length).toBeGreaterThan(1)
      yield* Effect.forkScoped(a.leave)
      yield* settle
      // Every shard of a stopping together, not one by one as maxMoves would hand them over.
      expect(ofA.every((r) => r.stopping !== undefined)).toBe(true)
      yield* advance(1_000)
      expect(ownersOf(checker.runs, 8)).toEqual(Array(8).fill("b"))
      expect(shardOverlaps(checker.runs)).toEqual([])
    }).pipe(Effect.provide(MemoryEtcd.layer)))
})

describe("runShards maxMoves", () => {
  it.scoped.each([1, 2, 3])(
    "maxMoves %s: never more moves at once per member, claims waiting or stops",
    (maxMoves) =>
      Effect.gen(function*() {
        const memory = yield* MemoryEtcd
        const checker = makeShardChecker()
        const options = { shards: 24, maxMoves }
        yield* member("g/max", options, checker, "a", 200)
        yield* member("g/max", options, checker, "b", 150)
        yield* advance(3_000)
        const before = checker.runs.length
        yield* member("g/max", options, checker, "c", 100)
        yield* member("g/max", options, checker, "d", 100)
        let mostWaiting = 0
        for (let t = 0; t < 8_000; t += 50) {
          yield* advance(50)
          for (const n of (yield* waitingClaims(memory, "g/max")).values()) mostWaiting = Math.max(mostWaiting, n)
        }
        const moved = checker.runs.length - before
        // The newcomers' share came, a few at a time.
        expect(moved).toBeGreaterThan(2 * maxMoves)
        // Each moved once, straight to its owner in the plan.
        expect(movesOf(checker.runs.slice(before)).length).toBe(0)
        expect(movesOf(checker.runs).filter((m) => checker.runs.indexOf(m.to) >= before).length).toBe(moved)
        expect(ownersOf(checker.runs, 24).filter((o) => o === "c" || o === "d").length).toBeGreaterThan(2 * maxMoves)
        expect(running(checker.runs, 24).every((o) => o.length === 1)).toBe(true)
        expect(mostWaiting).toBeGreaterThan(0)
        expect(mostWaiting).toBeLessThanOrEqual(maxMoves)
        // The newcomers' moves. (The first two members' split, both starting at once, is not bounded as strictly: each
        // claims shards nobody seemed to hold, before the other's claims are seen.)
        const most = movesAtOnce(movesOf(checker.runs).filter((m) => checker.runs.indexOf(m.to) >= before))
        for (const [m, n] of most) expect(n, m).toBeLessThanOrEqual(maxMoves)
        expect(Math.max(...most.values())).toBe(maxMoves)
        expect(shardOverlaps(checker.runs)).toEqual([])
      }).pipe(Effect.provide(MemoryEtcd.layer))
  )

  it.scoped("without maxMoves, a join moves its whole share at once", () =>
    Effect.gen(function*() {
      const checker = makeShardChecker()
      yield* member("g/unbounded", { shards: 24 }, checker, "a", 200)
      yield* member("g/unbounded", { shards: 24 }, checker, "b", 150)
      yield* advance(3_000)
      yield* member("g/unbounded", { shards: 24 }, checker, "c", 100)
      yield* advance(3_000)
      expect(movesAtOnce(movesOf(checker.runs)).get("c")).toBeGreaterThan(3)
      expect(shardOverlaps(checker.runs)).toEqual([])
    }).pipe(Effect.provide(MemoryEtcd.layer)))
})

describe("runShards settle", () => {
  it.scoped("a burst of joins is one change of the plan, a window after the last", () =>
    Effect.gen(function*() {
      const checker = makeShardChecker()
      const options: Options = { shards: 32, settle: "5 seconds" }
      // Shards nobody runs are taken at once: a first member does not wait the window.
      yield* member("g/burst", options, checker, "a", 100)
      yield* settle
      expect(ownersOf(checker.runs, 32)).toEqual(Array(32).fill("a"))
      yield* advance(6_000)
      const start = yield* TestClock.currentTimeMillis
      for (const name of ["b", "c", "d"]) {
        yield* member("g/burst", options, checker, name, 100)
        yield* advance(1_000)
      }
      // The last join came about 2 s in: until 5 s after it, nothing moved.
      yield* advance(3_800)
      expect(checker.runs.filter((r) => r.stopping !== undefined)).toEqual([])
      yield* advance(2_000)
      const stops = checker.runs.filter((r) => r.stopping !== undefined)
      expect(stops.length).toBeGreaterThan(0)
      // One change: every stop began at one instant, each moved shard moved once, and every member got its share.
      expect(new Set(stops.map((r) => r.clockStopping)).size).toBe(1)
      expect(stops[0]!.clockStopping! - start).toBeGreaterThanOrEqual(7_000)
      expect(movesOf(checker.runs).length).toBe(stops.length)
      const owners = ownersOf(checker.runs, 32)
      for (const m of ["a", "b", "c", "d"]) expect(owners.filter((o) => o === m).length).toBeGreaterThanOrEqual(4)
      expect(shardOverlaps(checker.runs)).toEqual([])
    }).pipe(Effect.provide(MemoryEtcd.layer)))

  it.scoped("a crashed member's shards move as soon as its lease is gone, whatever the window", () =>
    Effect.gen(function*() {
      const memory = yield* MemoryEtcd
      const checker = makeShardChecker()
      const options: Options = { shards: 16, settle: "10 seconds", maxMoves: 1 }
      yield* member("g/crash", options, checker, "a")
      const b = yield* member("g/crash", options, checker, "b")
      yield* member("g/crash", options, checker, "c")
      yield* advance(15_000)
      const ofB = ownersOf(checker.runs, 16).flatMap((o, s) => o === "b" ? [s] : [])
      expect(ofB.length).toBeGreaterThan(1)
      const others = checker.runs.filter((r) => r.member !== "b" && !Number.isFinite(r.end))
      yield* memory.crash(b.etcd)
      // b's lease runs out at 3 s: its shards move then, all at once (not one by one), long before the window ends.
      yield* advance(3_100)
      const owners = ownersOf(checker.runs, 16)
      for (const s of ofB) expect(["a", "c"]).toContain(owners[s])
      expect(running(checker.runs, 16).every((o) => o.length === 1)).toBe(true)
      // Nobody else's shard moved.
      expect(others.every((r) => !Number.isFinite(r.end))).toBe(true)
      expect(shardOverlaps(checker.runs)).toEqual([])
    }).pipe(Effect.provide(MemoryEtcd.layer)))
})

describe("runShards move policy", () => {
  it.scoped("a member asking for another policy is refused with ShardPolicyMismatch, and moves nobody's shard", () =>
    Effect.gen(function*() {
      const checker = makeShardChecker()
      yield* member("g/policy", { shards: 8, maxMoves: 2, settle: "1 second" }, checker, "a")
      yield* member("g/policy", { shards: 8, maxMoves: 2, settle: "1 second" }, checker, "b")
      yield* advance(2_000)
      const before = checker.runs.map((r) => `${r.member}:${r.shard}:${r.end}`)
      const c = yield* member("g/policy", { shards: 8, maxMoves: 3, settle: "1 second" }, checker, "c")
      yield* advance(3_000)
      const exit = yield* Fiber.join(c.exit)
      const failure = Exit.isFailure(exit) ? Option.getOrUndefined(Cause.failureOption(exit.cause)) : undefined
      expect(failure).toMatchObject({
        _tag: "ShardPolicyMismatch",
        group: "g/policy",
        maxMoves: 2,
        requestedMaxMoves: 3
      })
      expect(failure?._tag === "ShardPolicyMismatch" && Duration.toMillis(failure.settle)).toBe(1_000)
      expect(checker.runs.map((r) => `${r.member}:${r.shard}:${r.end}`)).toEqual(before)
      // The default policy is a policy too: a member giving none is refused by a group that bounds its moves.
      const d = yield* member("g/policy", { shards: 8 }, checker, "d")
      yield* advance(3_000)
      const refused = yield* Fiber.join(d.exit)
      expect(Exit.isFailure(refused) && Option.getOrUndefined(Cause.failureOption(refused.cause))).toMatchObject({
        _tag: "ShardPolicyMismatch",
        maxMoves: 2,
        requestedMaxMoves: Infinity
      })
    }).pipe(Effect.provide(MemoryEtcd.layer)))

  it.effect.each(
    [
      ["maxMoves", { maxMoves: 0 }],
      ["maxMoves", { maxMoves: 1.5 }],
      ["maxMoves", { maxMoves: Number.NaN }],
      ["settle", { settle: "soon" }],
      ["settle", { settle: Duration.infinity }]
    ] as const
  )("%s %o: InvalidOptions before any I/O", ([field, policy]) =>
    Effect.gen(function*() {
      const error = yield* EtcdSeq.runShards({ shards: 8, ...policy } as Options, () => Effect.void).pipe(
        Effect.provideService(EtcdSeq, throwsOnUse()),
        Effect.flip
      )
      expect(error).toMatchObject({ _tag: "InvalidOptions", field })
    }))
})
