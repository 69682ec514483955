/**
 * runShards over the in-memory etcd under the TestClock: shards split and kept, moves only what moves, checked runs.
 */
import { describe, expect, it } from "@effect/vitest"
import { Cause, Context, Duration, Effect, Exit, Fiber, Layer, Option, Scope, TestClock } from "effect"
import { Etcd, type EtcdClient, EtcdSeq, MemoryEtcd } from "../src/index.js"
import { throwsOnUse } from "./support/members.js"
import { fenceRegressions, makeShardChecker, running, shardOverlaps, type ShardRun } from "./support/shardChecker.js"
import { advance, settle } from "./support/testClock.js"

/** A member of `key` on a process of its own, running `shards` shards with the checker's work. */
const member = (key: string, shards: number, checker: ReturnType<typeof makeShardChecker>, name: string, stop = 0) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const context = yield* Layer.buildWithScope(Etcd.layerMemory, scope)
    const seq = yield* EtcdSeq.make({ key, ttl: "3 seconds" }).pipe(Effect.provide(context), Scope.extend(scope))
    const exit = yield* EtcdSeq.runShards({ shards }, checker.work(name, stop)).pipe(
      Effect.provideService(EtcdSeq, seq),
      Effect.exit,
      Effect.forkIn(scope)
    )
    return { seq, etcd: Context.get(context, Etcd) as EtcdClient, exit, leave: Scope.close(scope, Exit.void) }
  })

const ownersOf = (runs: ReadonlyArray<ShardRun>, shards: number) => running(runs, shards).map((o) => o.join("+"))

describe("runShards over MemoryEtcd", () => {
  it.scoped("shards split among members, each run once; a join moves some, and the rest keep running", () =>
    Effect.gen(function*() {
      const checker = makeShardChecker()
      const a = yield* member("g/split", 16, checker, "a")
      yield* settle
      expect(ownersOf(checker.runs, 16)).toEqual(Array(16).fill("a"))
      yield* member("g/split", 16, checker, "b")
      yield* member("g/split", 16, checker, "c")
      yield* settle
      const owners = ownersOf(checker.runs, 16)
      expect(owners.every((o) => o === "a" || o === "b" || o === "c")).toBe(true)
      for (const m of ["a", "b", "c"]) expect(owners.filter((o) => o === m).length).toBeGreaterThanOrEqual(4)
      const before = checker.runs.length
      const kept = checker.runs.filter((r) => !Number.isFinite(r.end))
      yield* member("g/split", 16, checker, "d")
      yield* settle
      const moved = checker.runs.length - before
      // The newcomer's fair share (16 / 4), about: no shard moves but to it.
      expect(moved).toBeGreaterThanOrEqual(3)
      expect(moved).toBeLessThanOrEqual(6)
      expect(checker.runs.slice(before).every((r) => r.member === "d")).toBe(true)
      // A shard that stayed was not restarted.
      expect(kept.filter((r) => Number.isFinite(r.end)).length).toBe(moved)
      expect(shardOverlaps(checker.runs)).toEqual([])
      expect(fenceRegressions(checker.runs)).toEqual([])
      yield* a.leave
      yield* settle
      expect(ownersOf(checker.runs, 16).every((o) => o === "b" || o === "c" || o === "d")).toBe(true)
      expect(shardOverlaps(checker.runs)).toEqual([])
    }).pipe(Effect.provide(MemoryEtcd.layer)))

  it.scoped("a member that leaves while its lease lives on (shared with a member of the same client) releases its claims", () =>
    Effect.gen(function*() {
      const checker = makeShardChecker()
      const client = yield* Layer.build(Etcd.layerMemory)
      const join = (name: string) =>
        Effect.gen(function*() {
          const scope = yield* Scope.make()
          const seq = yield* EtcdSeq.make({ key: "g/shared", ttl: "3 seconds" }).pipe(
            Effect.provide(client),
            Scope.extend(scope)
          )
          yield* EtcdSeq.runShards({ shards: 8 }, checker.work(name, 0)).pipe(
            Effect.provideService(EtcdSeq, seq),
            Effect.ignore,
            Effect.forkIn(scope)
          )
          return Scope.close(scope, Exit.void)
        })
      const leaveA = yield* join("a")
      yield* join("b")
      yield* settle
      const owners = ownersOf(checker.runs, 8)
      expect(owners.filter((o) => o === "a").length).toBeGreaterThan(0)
      expect(owners.filter((o) => o === "b").length).toBeGreaterThan(0)
      yield* leaveA
      // The lease is b's too, so nothing but a's own release frees its claims: b takes them within a few turns.
      yield* settle
      yield* advance(100)
      expect(ownersOf(checker.runs, 8)).toEqual(Array(8).fill("b"))
      expect(shardOverlaps(checker.runs)).toEqual([])
    }).pipe(Effect.provide(MemoryEtcd.layer)))

  it.scoped("a crashed owner's shards start elsewhere only after its lease ran out, its own work stopped first", () =>
    Effect.gen(function*() {
      const memory = yield* MemoryEtcd
      const checker = makeShardChecker()
      const a = yield* member("g/crash", 8, checker, "a")
      yield* member("g/crash", 8, checker, "b")
      yield* settle
      const ofA = ownersOf(checker.runs, 8).filter((o) => o === "a").length
      expect(ofA).toBeGreaterThan(0)
      yield* memory.crash(a.etcd)
      yield* TestClock.adjust(Duration.millis(2_999))
      yield* settle
      // a fenced itself (its work stopped); b has not taken over: a's claims live until the lease expires.
      expect(ownersOf(checker.runs, 8).filter((o) => o === "b").length).toBe(8 - ofA)
      expect(ownersOf(checker.runs, 8).filter((o) => o === "a").length).toBe(0)
      yield* TestClock.adjust(Duration.millis(1))
      yield* settle
      expect(ownersOf(checker.runs, 8)).toEqual(Array(8).fill("b"))
      expect(shardOverlaps(checker.runs)).toEqual([])
    }).pipe(Effect.provide(MemoryEtcd.layer)))

  it.scoped("a member registered again under a new lease declares its number of shards again in its new record", () =>
    Effect.gen(function*() {
      const memory = yield* MemoryEtcd
      const checker = makeShardChecker()
      yield* member("g/redeclare", 8, checker, "a")
      yield* settle
      const declared = (kvs: ReadonlyArray<{ readonly value: string }>) => kvs.map((kv) => JSON.parse(kv.value).shards)
      expect(declared(yield* memory.read("g/redeclare/members/"))).toEqual([8])
      // Its lease revoked from outside: it goes invalid, then registers again with a new key.
      const [lease] = yield* memory.leases
      yield* memory.revoke(lease!.id)
      yield* advance(2_000)
      const records = yield* memory.read("g/redeclare/members/")
      expect(records.map((kv) => kv.lease)).not.toContain(lease!.id)
      expect(declared(records)).toEqual([8])
      // So a member asking for another number is still refused.
      const other = yield* Scope.make()
      const context = yield* Layer.buildWithScope(Etcd.layerMemory, other)
      const seq = yield* EtcdSeq.make({ key: "g/redeclare", ttl: "3 seconds" }).pipe(
        Effect.provide(context),
        Scope.extend(other)
      )
      const refused = yield* EtcdSeq.runShards({ shards: 4 }, () => Effect.never).pipe(
        Effect.provideService(EtcdSeq, seq),
        Effect.flip
      )
      expect(refused).toMatchObject({ _tag: "ShardCountMismatch", shards: 8, requested: 4 })
      yield* Scope.close(other, Exit.void)
    }).pipe(Effect.provide(MemoryEtcd.layer)))

  it.scoped("a member asking for another number of shards is refused, naming both, before it runs anything", () =>
    Effect.gen(function*() {
      const checker = makeShardChecker()
      yield* member("g/count", 8, checker, "a")
      yield* settle
      const b = yield* member("g/count", 16, checker, "b")
      yield* settle
      const exit = yield* Fiber.join(b.exit)
      const failure = Exit.isFailure(exit) ? Option.getOrUndefined(Cause.failureOption(exit.cause)) : undefined
      expect(failure).toMatchObject({ _tag: "ShardCountMismatch", group: "g/count", shards: 8, requested: 16 })
      expect(checker.runs.filter((r) => r.member === "b")).toEqual([])
    }).pipe(Effect.provide(MemoryEtcd.layer)))

  it.effect.each([0, -1, 1.5, 65_537, Number.NaN])(
    "shards %s: InvalidOptions before any I/O",
    (shards) =>
      Effect.gen(function*() {
        const error = yield* EtcdSeq.runShards({ shards }, () => Effect.void).pipe(
          Effect.provideService(EtcdSeq, throwsOnUse()),
          Effect.flip
        )
        expect(error).toMatchObject({ _tag: "InvalidOptions", field: "shards" })
      })
  )
})

describe("runShards churn over MemoryEtcd, under the TestClock", () => {
  it.scoped(
    "200 joins, leaves, crashes and cut-offs among up to 60 members: never two workers of one shard",
    () =>
      Effect.gen(function*() {
        const memory = yield* MemoryEtcd
        const checker = makeShardChecker()
        const shards = 64
        let state = 11
        const next = () => {
          state = (state * 1_103_515_245 + 12_345) % 2_147_483_648
          return state / 2_147_483_648
        }
        const live: Array<{ readonly name: string; readonly etcd: EtcdClient; readonly leave: Effect.Effect<void> }> =
          []
        let joined = 0
        for (let step = 0; step < 200; step++) {
          const roll = next()
          if (live.length < 3 || (live.length < 60 && roll < 0.5)) {
            const name = `m${joined++}`
            const m = yield* member("g/churn", shards, checker, name, Math.floor(next() * 300))
            live.push({ name, etcd: m.etcd, leave: m.leave })
          } else if (roll < 0.8) {
            const [gone] = live.splice(Math.floor(next() * live.length), 1)
            yield* Effect.forkScoped(gone!.leave)
          } else if (roll < 0.9) {
            // A crash: etcd hears nothing from it again; its claims go with its lease, after the TTL.
            const [gone] = live.splice(Math.floor(next() * live.length), 1)
            yield* memory.crash(gone!.etcd)
            yield* Effect.forkScoped(gone!.leave)
          } else {
            // Cut off for longer than the TTL, then back: it fences itself, loses its lease, registers again.
            const cut = live[Math.floor(next() * live.length)]!
            yield* memory.outage({ clients: [cut.etcd] })
            yield* advance(4_000)
            yield* memory.recover
          }
          yield* advance(Math.floor(next() * 800))
        }
        // Quiet: every shard has exactly one worker.
        yield* advance(10_000)
        const owners = running(checker.runs, shards)
        expect(owners.map((o) => o.length)).toEqual(Array(shards).fill(1))
        expect(checker.runs.length).toBeGreaterThan(200)
        expect(shardOverlaps(checker.runs)).toEqual([])
        expect(fenceRegressions(checker.runs)).toEqual([])
        // Nothing left behind: every member and claim key went with its leave or its lease.
        yield* Effect.forEach(live, (m) => Effect.forkScoped(m.leave), { discard: true })
        yield* advance(10_000)
        expect(yield* memory.read("g/churn/")).toEqual([])
        expect(running(checker.runs, shards).flat()).toEqual([])
      }).pipe(Effect.provide(MemoryEtcd.layer)),
    120_000
  )
})
