/**
 * runShards over the in-memory etcd under the TestClock: shards split and kept, moves only what moves, checked runs.
 */
import { describe, expect, it } from "@effect/vitest"
import { Cause, Context, Duration, Effect, Exit, Fiber, Layer, Option, Scope, Stream, TestClock } from "effect"
import { Etcd, type EtcdClient, EtcdSeq, type GroupView, Info, MemoryEtcd } from "../src/index.js"
import * as Memory from "../src/internal/etcd/memory.js"
import * as Keys from "../src/internal/keys.js"
import * as Operator from "../src/internal/operator.js"
import * as ShardPlan from "../src/internal/shardPlan.js"
import { throwsOnUse } from "./support/members.js"
import { fenceRegressions, makeShardChecker, running, shardOverlaps, type ShardRun } from "./support/shardChecker.js"
import { advance, settle } from "./support/testClock.js"

/** A member of `key` on a process of its own, running `shards` shards with the checker's work. */
const member = (
  key: string,
  shards: number,
  checker: ReturnType<typeof makeShardChecker>,
  name: string,
  stop = 0,
  policy: { readonly maxMoves?: number; readonly settle?: Duration.DurationInput } = {},
  weight = 1
) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const context = yield* Layer.buildWithScope(Etcd.layerMemory, scope)
    const seq = yield* EtcdSeq.make({ key, ttl: "3 seconds", weight }).pipe(
      Effect.provide(context),
      Scope.extend(scope)
    )
    const exit = yield* EtcdSeq.runShards({ shards, ...policy }, checker.work(name, stop)).pipe(
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

  it.scoped.each([["16", 16], ["0", 0], ["no", undefined]] as const)(
    "a member that joins and runs %s shards (the group runs 8) moves nobody's shard, before or after it fails",
    ([, asked]) =>
      Effect.gen(function*() {
        const checker = makeShardChecker()
        yield* member("g/misfit", 8, checker, "a")
        yield* member("g/misfit", 8, checker, "b")
        yield* settle
        const runsBefore = checker.runs.map((r) => `${r.member}:${r.shard}`)
        // A process of its own joins the group; its runShards asks for another number, or a bad one, or none at all.
        const scope = yield* Scope.make()
        const context = yield* Layer.buildWithScope(Etcd.layerMemory, scope)
        const seq = yield* EtcdSeq.make({ key: "g/misfit", ttl: "3 seconds" }).pipe(
          Effect.provide(context),
          Scope.extend(scope)
        )
        const exit = asked === undefined
          ? undefined
          : yield* EtcdSeq.runShards({ shards: asked }, checker.work("c")).pipe(
            Effect.provideService(EtcdSeq, seq),
            Effect.exit
          )
        yield* advance(1_000)
        if (exit !== undefined) {
          const failure = Exit.isFailure(exit) ? Option.getOrUndefined(Cause.failureOption(exit.cause)) : undefined
          expect(failure?._tag).toBe(asked === 0 ? "InvalidOptions" : "ShardCountMismatch")
        }
        // Its index and count are the group's: 2/3. Its shards: none. Nobody else's moved, stopped or started.
        expect(String(yield* seq.current)).toMatch(/^2\/3@/)
        expect(checker.runs.map((r) => `${r.member}:${r.shard}`)).toEqual(runsBefore)
        expect(checker.runs.every((r) => !Number.isFinite(r.end))).toBe(true)
        yield* Scope.close(scope, Exit.void)
        yield* advance(1_000)
        expect(checker.runs.map((r) => `${r.member}:${r.shard}`)).toEqual(runsBefore)
        expect(shardOverlaps(checker.runs)).toEqual([])
      }).pipe(Effect.provide(MemoryEtcd.layer))
  )

  it.scoped("a registration lost while its number of shards is declared: runShards follows the new one", () =>
    Effect.gen(function*() {
      const memory = yield* MemoryEtcd
      const checker = makeShardChecker()
      yield* member("g/follow", 12, checker, "b")
      // Client x: a2 runs runShards already (the client's claims watch is open), a1 joins.
      const scope = yield* Scope.make()
      const x = yield* Layer.buildWithScope(Etcd.layerMemory, scope)
      const join = EtcdSeq.make({ key: "g/follow", ttl: "3 seconds" }).pipe(Effect.provide(x), Scope.extend(scope))
      const a2 = yield* join
      yield* EtcdSeq.runShards({ shards: 12 }, checker.work("a2")).pipe(
        Effect.provideService(EtcdSeq, a2),
        Effect.exit,
        Effect.forkIn(scope)
      )
      const a1 = yield* join
      yield* settle
      // x is cut off just as a1 starts runShards, past its TTL: its registrations are lost, then made again.
      yield* memory.outage({ clients: [Context.get(x, Etcd) as EtcdClient] })
      const run = yield* EtcdSeq.runShards({ shards: 12 }, checker.work("a1")).pipe(
        Effect.provideService(EtcdSeq, a1),
        Effect.exit,
        Effect.forkIn(scope)
      )
      yield* advance(6_000)
      yield* memory.recover
      yield* advance(10_000)
      expect(run.unsafePoll()).toBeNull()
      // Every shard runs, at its planned owner: a1's new registration runs its own.
      const owners = running(checker.runs, 12)
      expect(owners.map((o) => o.length)).toEqual(Array(12).fill(1))
      expect(owners.flat().filter((o) => o === "a1").length).toBeGreaterThan(0)
      expect(shardOverlaps(checker.runs)).toEqual([])
      yield* Scope.close(scope, Exit.void)
    }).pipe(Effect.provide(MemoryEtcd.layer)))

  it.scoped("an instance taken over while runShards declares: it fails with InstanceTaken, not waits", () =>
    Effect.gen(function*() {
      const memory = yield* MemoryEtcd
      const checker = makeShardChecker()
      const scope = yield* Scope.make()
      const x = yield* Layer.buildWithScope(Etcd.layerMemory, scope)
      const helper = yield* EtcdSeq.make({ key: "g/taken", ttl: "10 seconds" }).pipe(
        Effect.provide(x),
        Scope.extend(scope)
      )
      yield* EtcdSeq.runShards({ shards: 4 }, checker.work("helper")).pipe(
        Effect.provideService(EtcdSeq, helper),
        Effect.exit,
        Effect.forkIn(scope)
      )
      const a1 = yield* EtcdSeq.make({ key: "g/taken", ttl: "10 seconds", instance: "x" }).pipe(
        Effect.provide(x),
        Scope.extend(scope)
      )
      yield* settle
      // x's requests hang as a1 starts runShards; meanwhile a new incarnation of "x" starts elsewhere.
      yield* memory.outage({ mode: "hang", clients: [Context.get(x, Etcd) as EtcdClient] })
      const run = yield* EtcdSeq.runShards({ shards: 4 }, checker.work("a1")).pipe(
        Effect.provideService(EtcdSeq, a1),
        Effect.exit,
        Effect.forkIn(scope)
      )
      yield* settle
      yield* EtcdSeq.make({ key: "g/taken", ttl: "10 seconds", instance: "x" }).pipe(
        Effect.provide(yield* Layer.buildWithScope(Etcd.layerMemory, scope)),
        Scope.extend(scope)
      )
      yield* advance(3_000)
      yield* memory.recover
      yield* advance(10_000)
      const polled = run.unsafePoll()
      expect(polled).not.toBeNull()
      const exit = polled !== null && Exit.isSuccess(polled) ? polled.value : undefined
      const failure = exit !== undefined && Exit.isFailure(exit)
        ? Option.getOrUndefined(Cause.failureOption(exit.cause))
        : undefined
      expect(failure).toMatchObject({ _tag: "InstanceTaken", group: "g/taken", instance: "x" })
      expect(checker.runs.filter((r) => r.member === "a1" && !Number.isFinite(r.end))).toEqual([])
      yield* Scope.close(scope, Exit.void)
    }).pipe(Effect.provide(MemoryEtcd.layer)))

  it.scoped("a member record declaring 2^32 shards: observe shows the group, runShards fails with a typed error", () =>
    Effect.gen(function*() {
      const server = Memory.serverOf(yield* MemoryEtcd)
      const api = server.api(server.connect(), Duration.seconds(5))
      const lease = yield* api.grant(60)
      yield* api.put(
        `g/huge/members/${Keys.memberId(lease, 0)}`,
        JSON.stringify({ v: 1, metadata: "", shards: 2 ** 32 }),
        lease
      )
      const context = yield* Layer.build(Etcd.layerMemory)
      const view = yield* EtcdSeq.observe("g/huge").pipe(Stream.runHead, Effect.provide(context))
      expect(Option.map(view, (v) => [v.members.length, v.shards])).toEqual(Option.some([1, undefined]))
      const seq = yield* EtcdSeq.make({ key: "g/huge", ttl: "3 seconds" }).pipe(Effect.provide(context))
      const refused = yield* EtcdSeq.runShards({ shards: 8 }, () => Effect.never).pipe(
        Effect.provideService(EtcdSeq, seq),
        Effect.flip
      )
      expect(refused).toMatchObject({ _tag: "ShardCountMismatch", shards: 2 ** 32, requested: 8 })
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

/** The claims of each shard at a quiet point: one, its runner's, or none (paused); any more wait for nothing. */
const claimsPerShard = (memory: MemoryEtcd["Type"], group: string, shards: number) =>
  Effect.map(memory.read(Keys.claimsPrefix(group)), (kvs) => {
    const counts = new Array<number>(shards).fill(0)
    for (const kv of kvs) counts[Number(kv.key.slice(Keys.claimsPrefix(group).length).split("/")[0])]!++
    return counts
  })

describe("runShards churn over MemoryEtcd, under the TestClock", () => {
  // The default policy (no bound, no window: moves without a gap only), then policies drawn from the seed.
  it.scoped.each([[11, 200], [23, 120], [37, 120]] as const)(
    "seed %s, %s joins, leaves, crashes and cut-offs among up to 60 members: never two workers of one shard",
    ([seed, steps]) =>
      Effect.gen(function*() {
        const memory = yield* MemoryEtcd
        const checker = makeShardChecker()
        const shards = 64
        let state: number = seed
        const next = () => {
          state = (state * 1_103_515_245 + 12_345) % 2_147_483_648
          return state / 2_147_483_648
        }
        const policy = seed === 11 ? {} : {
          maxMoves: [1, 2, 4, Infinity][Math.floor(next() * 4)]!,
          settle: Duration.millis([0, 500, 2_000][Math.floor(next() * 3)]!)
        }
        yield* Effect.logInfo(`churn policy: ${JSON.stringify(policy)}`)
        const live: Array<{ readonly name: string; readonly etcd: EtcdClient; readonly leave: Effect.Effect<void> }> =
          []
        let joined = 0
        for (let step = 0; step < steps; step++) {
          const roll = next()
          if (live.length < 3 || (live.length < 60 && roll < 0.5)) {
            const name = `m${joined++}`
            const m = yield* member("g/churn", shards, checker, name, Math.floor(next() * 300), policy)
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
        expect(yield* claimsPerShard(memory, "g/churn", shards)).toEqual(Array(shards).fill(1))
        expect(checker.runs.length).toBeGreaterThan(steps)
        expect(shardOverlaps(checker.runs)).toEqual([])
        expect(fenceRegressions(checker.runs)).toEqual([])
        // Nothing left behind: every member and claim key went with its leave or its lease.
        yield* Effect.forEach(live, (m) => Effect.forkScoped(m.leave), { discard: true })
        yield* advance(10_000)
        expect(yield* memory.read("g/churn/")).toEqual([])
        expect(running(checker.runs, shards).flat()).toEqual([])
      }).pipe(Effect.provide(MemoryEtcd.layer)),
    // The machine may be shared: the churn is CPU-bound, and each run takes one to two minutes alone.
    300_000
  )
})

describe("runShards churn with the operator's inputs, under the TestClock", () => {
  it.scoped(
    "joins, leaves, crashes and cut-offs with weights, drains, pins, pauses and freezes: never two workers of a " +
      "shard, fences grow, and at every quiet point each shard runs exactly where the controlled plan says",
    () =>
      Effect.gen(function*() {
        const memory = yield* MemoryEtcd
        const server = Memory.serverOf(memory)
        const api = server.api(server.connect(), Duration.seconds(5))
        const checker = makeShardChecker()
        const shards = 48
        const g = "g/churn-ops"
        let state = 29
        const next = () => {
          state = (state * 1_103_515_245 + 12_345) % 2_147_483_648
          return state / 2_147_483_648
        }
        const pick = <A>(list: ReadonlyArray<A>): A => list[Math.floor(next() * list.length)]!
        const live: Array<
          {
            readonly name: string
            readonly etcd: EtcdClient
            readonly seq: EtcdSeq["Type"]
            readonly leave: Effect.Effect<void>
          }
        > = []
        // The group as an observer sees it: members, weights, drains and controls.
        let latest: GroupView | undefined
        const observerScope = yield* Scope.make()
        yield* EtcdSeq.observe(g).pipe(
          Stream.runForEach((view) => Effect.sync(() => void (latest = view))),
          Effect.provide(yield* Layer.buildWithScope(Etcd.layerMemory, observerScope)),
          Effect.forkIn(observerScope)
        )
        const idOf = (m: (typeof live)[number]) =>
          Effect.gen(function*() {
            const info = yield* m.seq.current
            return Info.isValid(info) ? (yield* m.seq.members)[info.index]?.id : undefined
          })
        const quiet = Effect.gen(function*() {
          yield* advance(10_000)
          const view = latest!
          const names = new Map<string, string>()
          for (const m of live) {
            const id = yield* idOf(m)
            if (id !== undefined) names.set(id, m.name)
          }
          expect(view.members.map((m) => names.get(m.id)).sort()).toEqual(live.map((m) => m.name).sort())
          const want = ShardPlan.weightedPlan(
            view.members.map((m) => ({ id: m.id, weight: m.weight, draining: view.drains.includes(m.id) })),
            shards,
            {
              pins: new Map(view.controls.pins.map((p) => [p.shard, p.to])),
              paused: new Set(view.controls.paused),
              frozen: view.controls.frozen
            },
            view.controls.frozenOwners?.map((o) => o ?? undefined)
          ).map((o) => o === undefined ? "" : names.get(o)!)
          expect(running(checker.runs, shards).map((o) => o.join("+"))).toEqual(want)
          expect(yield* claimsPerShard(memory, g, shards)).toEqual(want.map((o) => o === "" ? 0 : 1))
        })
        let joined = 0
        let quietPoints = 0
        for (let step = 0; step < 80; step++) {
          const roll = next()
          if (live.length < 3 || (live.length < 20 && roll < 0.35)) {
            const name = `m${joined++}`
            const m = yield* member(g, shards, checker, name, Math.floor(next() * 300), {}, pick([1, 1, 2, 4]))
            live.push({ name, etcd: m.etcd, seq: m.seq, leave: m.leave })
          } else if (roll < 0.5) {
            const [gone] = live.splice(Math.floor(next() * live.length), 1)
            yield* Effect.forkScoped(gone!.leave)
          } else if (roll < 0.55) {
            const [gone] = live.splice(Math.floor(next() * live.length), 1)
            yield* memory.crash(gone!.etcd)
            yield* Effect.forkScoped(gone!.leave)
          } else if (roll < 0.6) {
            const cut = pick(live)
            yield* memory.outage({ clients: [cut.etcd] })
            yield* advance(4_000)
            yield* memory.recover
          } else if (roll < 0.67) {
            // A drain from inside, not waited for: the member drains until it leaves.
            yield* EtcdSeq.drain.pipe(Effect.provideService(EtcdSeq, pick(live).seq), Effect.ignore, Effect.forkScoped)
          } else if (roll < 0.77) {
            const id = yield* idOf(pick(live))
            const shard = Math.floor(next() * shards)
            yield* next() < 0.7 && id !== undefined ? Operator.pin(api, g, shard, id) : Operator.unpin(api, g, shard)
          } else if (roll < 0.87) {
            const shard = Math.floor(next() * shards)
            yield* next() < 0.6 ? Operator.pause(api, g, shard) : Operator.resume(api, g, shard)
          } else if (roll < 0.93 && latest?.shards !== undefined) {
            yield* next() < 0.5
              ? Operator.freeze(api, g, latest.shards.owners.map((o) => o.planned))
              : Operator.thaw(api, g)
          } else {
            yield* quiet
            quietPoints++
          }
          yield* advance(Math.floor(next() * 800))
        }
        yield* quiet
        expect(quietPoints).toBeGreaterThan(2)
        expect(shardOverlaps(checker.runs)).toEqual([])
        expect(fenceRegressions(checker.runs)).toEqual([])
        yield* Effect.forEach(live, (m) => Effect.forkScoped(m.leave), { discard: true })
        yield* Scope.close(observerScope, Exit.void)
        yield* advance(10_000)
        // Every member, claim and drain key went with its leave or its lease; the operator's own keys stay.
        expect((yield* memory.read(`${g}/`)).filter((kv) => !/\/shards\/(pins|paused|frozen)/.test(kv.key))).toEqual([])
      }).pipe(Effect.provide(MemoryEtcd.layer)),
    120_000
  )
})
