/**
 * The operator's inputs to the shard plan over the in-memory etcd, under the TestClock: weights, pins, pauses, the
 * freeze and drains. Each test asserts the exact shards each member runs: those the pure plan gives it, with the
 * group's weights and controls, computed here from the members as `EtcdSeq.members` lists them.
 */
import { describe, expect, it } from "@effect/vitest"
import { Context, Duration, Effect, Exit, Fiber, Layer, Metric, Option, Scope, Stream } from "effect"
import { Etcd, type EtcdClient, EtcdSeq, type GroupView, type Member, MemoryEtcd } from "../src/index.js"
import * as Memory from "../src/internal/etcd/memory.js"
import * as Metrics from "../src/internal/metrics.js"
import * as Operator from "../src/internal/operator.js"
import type * as Controls from "../src/internal/shardControls.js"
import * as ShardPlan from "../src/internal/shardPlan.js"
import { throwsOnUse } from "./support/members.js"
import { makeShardChecker, running, shardOverlaps } from "./support/shardChecker.js"
import { advance, settle } from "./support/testClock.js"

type Checker = ReturnType<typeof makeShardChecker>

/** A member of `key` on a client of its own, running `shards` shards with the checker's work as `name`. */
const member = (
  key: string,
  shards: number,
  checker: Checker,
  name: string,
  options: { readonly weight?: number; readonly instance?: string } = {}
) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const context = yield* Layer.buildWithScope(Etcd.layerMemory, scope)
    const seq = yield* EtcdSeq.make({ key, ttl: "3 seconds", ...options }).pipe(
      Effect.provide(context),
      Scope.extend(scope)
    )
    const exit = yield* EtcdSeq.runShards({ shards }, checker.work(name)).pipe(
      Effect.provideService(EtcdSeq, seq),
      Effect.exit,
      Effect.forkIn(scope)
    )
    const info = yield* seq.current
    const id = (yield* seq.members).find((m) => m.index === info.index)!.id
    return { name, id, seq, etcd: Context.get(context, Etcd) as EtcdClient, exit, leave: Scope.close(scope, Exit.void) }
  })

type Running = Effect.Effect.Success<ReturnType<typeof member>>

/** The seam to the memory server, as the operator's tools write to it. */
const operatorApi = Effect.map(MemoryEtcd, (memory) => {
  const server = Memory.serverOf(memory)
  return server.api(server.connect(), Duration.seconds(5))
})

/** Each shard's owner by plan id (member name) in the pure plan of `members`, with `controls` and `previous`. */
const planIds = (
  members: ReadonlyArray<Member>,
  shards: number,
  options: {
    readonly controls?: Controls.Controls
    readonly previous?: ShardPlan.ControlledPlan
    readonly draining?: ReadonlySet<string>
  } = {}
) =>
  ShardPlan.weightedPlan(
    members.map((m): ShardPlan.PlanMember => ({
      id: m.instance === undefined ? m.id : `@${m.instance}`,
      weight: m.weight,
      draining: options.draining?.has(m.id) ?? false,
      instance: m.instance
    })),
    shards,
    options.controls,
    options.previous
  )

/** Each member's shards (by checker name) in the pure plan of `members`, with `controls` and `previous`. */
const expected = (
  members: ReadonlyArray<Member>,
  shards: number,
  names: ReadonlyMap<string, string>,
  options: {
    readonly controls?: Controls.Controls
    readonly previous?: ShardPlan.ControlledPlan
    readonly draining?: ReadonlySet<string>
  } = {}
) => {
  const planMembers = members.map((m): ShardPlan.PlanMember => ({
    id: m.instance === undefined ? m.id : `@${m.instance}`,
    weight: m.weight,
    draining: options.draining?.has(m.id) ?? false,
    instance: m.instance
  }))
  const idOfName = new Map(members.map((m) => [m.instance === undefined ? m.id : `@${m.instance}`, m.id]))
  return ShardPlan.weightedPlan(planMembers, shards, options.controls, options.previous).map((owner) =>
    owner === undefined ? "" : names.get(idOfName.get(owner)!)!
  )
}

/** Each shard's single running worker by checker name ("" for none); fails on a shard with two. */
const owners = (checker: Checker, shards: number) =>
  running(checker.runs, shards).map((o) => {
    expect(o.length).toBeLessThanOrEqual(1)
    return o[0] ?? ""
  })

const namesOf = (ms: ReadonlyArray<Running>) => new Map(ms.map((m) => [m.id, m.name]))

const controls = (
  pins: ReadonlyArray<readonly [number, string]> = [],
  paused: ReadonlyArray<number> = [],
  frozen = false
): Controls.Controls => ({ pins: new Map(pins), paused: new Set(paused), frozen })

describe("shard weights over MemoryEtcd", () => {
  it.scoped("weights 1, 2 and 4: each member runs exactly its shards of the weighted plan, within its cap", () =>
    Effect.gen(function*() {
      const checker = makeShardChecker()
      const shards = 56
      const ms = [
        yield* member("g/weights", shards, checker, "w1", { weight: 1 }),
        yield* member("g/weights", shards, checker, "w2", { weight: 2 }),
        yield* member("g/weights", shards, checker, "w4", { weight: 4 })
      ]
      yield* advance(1_000)
      const members = yield* ms[0]!.seq.members
      expect(members.map((m) => m.weight)).toEqual([1, 2, 4])
      const want = expected(members, shards, namesOf(ms))
      expect(owners(checker, shards)).toEqual(want)
      const count = (name: string) => want.filter((o) => o === name).length
      // At most ⌈1.25 · S · w / W⌉ each (W = 7), and ordered by weight.
      expect(count("w1")).toBeLessThanOrEqual(Math.ceil(1.25 * shards / 7))
      expect(count("w2")).toBeLessThanOrEqual(Math.ceil(1.25 * shards * 2 / 7))
      expect(count("w4")).toBeLessThanOrEqual(Math.ceil(1.25 * shards * 4 / 7))
      expect(count("w1")).toBeLessThan(count("w2"))
      expect(count("w2")).toBeLessThan(count("w4"))
      // Infos are the group's, whatever the weights: index by join order, count 3.
      for (const [i, m] of ms.entries()) expect(String(yield* m.seq.current)).toMatch(new RegExp(`^${i}/3@`))
      expect(shardOverlaps(checker.runs)).toEqual([])
    }).pipe(Effect.provide(MemoryEtcd.layer)))

  it.scoped("a default weight writes the record as before (no weight field); others are written and decoded", () =>
    Effect.gen(function*() {
      const memory = yield* MemoryEtcd
      const checker = makeShardChecker()
      yield* member("g/records", 4, checker, "a")
      yield* member("g/records", 4, checker, "b", { weight: 2.5 })
      yield* settle
      const records = (yield* memory.read("g/records/members/")).map((kv) => JSON.parse(kv.value))
      expect(records).toEqual([{ v: 1, metadata: "", shards: 4 }, { v: 1, metadata: "", shards: 4, weight: 2.5 }])
    }).pipe(Effect.provide(MemoryEtcd.layer)))

  it.effect.each([0, -1, Number.NaN, Infinity, "2" as unknown as number])(
    "weight %s: InvalidOptions naming the field, before any I/O",
    (weight) =>
      Effect.gen(function*() {
        const error = yield* EtcdSeq.make({ key: "g/bad", weight }).pipe(
          Effect.provideService(Etcd, throwsOnUse()),
          Effect.scoped,
          Effect.flip
        )
        expect(error).toMatchObject({ _tag: "InvalidOptions", field: "weight" })
      })
  )
})

describe("pins, pauses and the freeze over MemoryEtcd", () => {
  it.scoped("pin, unpin, pause, resume, freeze and thaw: every shard runs exactly where the controlled plan says", () =>
    Effect.gen(function*() {
      const api = yield* operatorApi
      const checker = makeShardChecker()
      const shards = 12
      const g = "g/controls"
      const ms = [
        yield* member(g, shards, checker, "a"),
        yield* member(g, shards, checker, "b"),
        yield* member(g, shards, checker, "c", { instance: "c-inst" })
      ]
      yield* advance(1_000)
      const members = yield* ms[0]!.seq.members
      const names = namesOf(ms)
      const plain = expected(members, shards, names)
      expect(owners(checker, shards)).toEqual(plain)

      // A pin to c's instance: that shard moves to c, and no other shard moves.
      const p = plain.indexOf("a")
      yield* Operator.pin(api, g, p, "c-inst")
      yield* advance(500)
      const pinned = expected(members, shards, names, { controls: controls([[p, "c-inst"]]) })
      expect(pinned[p]).toBe("c")
      expect(owners(checker, shards)).toEqual(pinned)
      expect(pinned.filter((o, s) => o !== plain[s])).toEqual(["c"])

      // A pin to an instance that is not live leaves the shard with the plan's owner.
      const q = plain.indexOf("b")
      yield* Operator.pin(api, g, q, "nobody")
      yield* advance(500)
      expect(owners(checker, shards)).toEqual(pinned)

      // A pause stops the shard's running work; nobody runs it, pinned or not.
      yield* Operator.pause(api, g, p)
      yield* advance(500)
      const paused = expected(members, shards, names, { controls: controls([[p, "c-inst"], [q, "nobody"]], [p]) })
      expect(paused[p]).toBe("")
      expect(owners(checker, shards)).toEqual(paused)
      expect(checker.runs.filter((r) => r.shard === p).every((r) => Number.isFinite(r.end))).toBe(true)
      yield* Operator.resume(api, g, p)
      yield* Operator.unpin(api, g, p)
      yield* Operator.unpin(api, g, q)
      yield* advance(500)
      expect(owners(checker, shards)).toEqual(plain)

      // Frozen: a newcomer gets nothing; a leaver's shards still move (to the plan's owners).
      const previous = planIds(members, shards)
      yield* Operator.freeze(api, g, previous)
      yield* advance(500)
      const d = yield* member(g, shards, checker, "d")
      yield* advance(1_000)
      names.set(d.id, "d")
      const withD = yield* ms[0]!.seq.members
      const frozen = controls([], [], true)
      expect(owners(checker, shards)).toEqual(expected(withD, shards, names, { controls: frozen, previous }))
      expect(owners(checker, shards)).toEqual(plain)
      yield* ms[0]!.leave
      yield* advance(1_000)
      const afterLeave = yield* ms[1]!.seq.members
      const frozenAfter = expected(afterLeave, shards, names, { controls: frozen, previous })
      expect(owners(checker, shards)).toEqual(frozenAfter)
      // b's and c's shards did not move; a's went where the plan without a puts them.
      const planNow = expected(afterLeave, shards, names)
      for (let s = 0; s < shards; s++) expect(frozenAfter[s]).toBe(plain[s] === "a" ? planNow[s] : plain[s])

      // Thawed: the plan as it is.
      yield* Operator.thaw(api, g)
      yield* advance(1_000)
      expect(owners(checker, shards)).toEqual(planNow)
      expect(shardOverlaps(checker.runs)).toEqual([])
    }).pipe(Effect.provide(MemoryEtcd.layer)))

  it.scoped("a pin undone before its new owner's claim lands: the claimant withdraws, the shard stays where it ran", () =>
    Effect.gen(function*() {
      const memory = yield* MemoryEtcd
      const api = yield* operatorApi
      const checker = makeShardChecker()
      const shards = 8
      const g = "g/flip"
      const ms = [yield* member(g, shards, checker, "a"), yield* member(g, shards, checker, "b")]
      yield* advance(1_000)
      const members = yield* ms[0]!.seq.members
      const plain = expected(members, shards, namesOf(ms))
      expect(owners(checker, shards)).toEqual(plain)
      // The pin and its undoing in one moment: b claims the shard (its claim is written an event-loop turn later) and
      // a, seeing the pin go first, keeps it. b's claim, once it lands, is a move whose target is its holder again:
      // off for every member, so b withdraws its claim and a keeps running the shard. Nothing may wait forever (the
      // runner of 90eb17b left b's claim waiting behind a's for good).
      const s = plain.indexOf("a")
      yield* Operator.pin(api, g, s, ms[1]!.id)
      // Event-loop turns one at a time, until b took the move: its shard's fiber forked, its claim queued for a turn.
      const owned0 = (yield* Metric.value(Metrics.shardsOwned)).value
      for (let i = 0; i < 100 && (yield* Metric.value(Metrics.shardsOwned)).value === owned0; i++) {
        yield* Effect.yieldNow()
        yield* Effect.async<void>((resume) => void setImmediate(() => resume(Effect.void)))
      }
      // b took the move (its shard's fiber forked), and its claim is not written yet.
      expect((yield* Metric.value(Metrics.shardsOwned)).value).toBe(owned0 + 1)
      expect((yield* memory.read(`${g}/claims/${s}/`)).length).toBe(1)
      yield* Operator.unpin(api, g, s)
      yield* advance(2_000)
      expect(owners(checker, shards)).toEqual(plain)
      const claims = yield* memory.read(`${g}/claims/`)
      expect(claims.map((kv) => Number(kv.key.slice(`${g}/claims/`.length).split("/")[0])).sort((x, y) => x - y))
        .toEqual(Array.from({ length: shards }, (_, k) => k))
      expect(checker.runs.filter((r) => r.shard === s).map((r) => [r.member, r.end])).toEqual([["a", Infinity]])
      expect(shardOverlaps(checker.runs)).toEqual([])
    }).pipe(Effect.provide(MemoryEtcd.layer)))

  it.scoped("malformed control keys and values are ignored by every member alike; observe shows the controls", () =>
    Effect.gen(function*() {
      const api = yield* operatorApi
      const checker = makeShardChecker()
      const shards = 6
      const g = "g/malformed"
      const ms = [yield* member(g, shards, checker, "a"), yield* member(g, shards, checker, "b")]
      yield* advance(1_000)
      const members = yield* ms[0]!.seq.members
      const plain = expected(members, shards, namesOf(ms))
      yield* api.put(`${g}/shards/pins/x`, "a")
      yield* api.put(`${g}/shards/pins/1`, "not an instance!")
      yield* api.put(`${g}/shards/frozen`, "[1, 2")
      yield* api.put(`${g}/shards/drains/${ms[0]!.id}`, "")
      yield* api.put(`${g}/shards/other`, "")
      yield* api.put(`${g}/shards/paused/2`, "")
      yield* advance(500)
      expect(owners(checker, shards)).toEqual(expected(members, shards, namesOf(ms), { controls: controls([], [2]) }))
      expect(plain[2]).not.toBe("")
      const view = yield* EtcdSeq.observe(g).pipe(Stream.runHead, Effect.map(Option.getOrThrow))
      expect(view.controls).toEqual({ pins: [], paused: [2], frozen: false, frozenOwners: undefined })
      // The drain key above has no lease: it drains nobody.
      expect(view.drains).toEqual([])
      expect(view.shards!.owners[2]!.planned).toBeUndefined()
    }).pipe(Effect.provide(Layer.provideMerge(Etcd.layerMemory, MemoryEtcd.layer))))
})

describe("drain over MemoryEtcd", () => {
  it.scoped("EtcdSeq.drain: Info unchanged, the member holds none, each moved shard moved once and runs at its new owner", () =>
    Effect.gen(function*() {
      const memory = yield* MemoryEtcd
      const checker = makeShardChecker()
      const shards = 16
      const g = "g/drain"
      const ms = [
        yield* member(g, shards, checker, "a"),
        yield* member(g, shards, checker, "b", { weight: 2 }),
        yield* member(g, shards, checker, "c", { instance: "c-inst" })
      ]
      yield* advance(1_000)
      const members = yield* ms[0]!.seq.members
      const names = namesOf(ms)
      const before = owners(checker, shards)
      expect(before).toEqual(expected(members, shards, names))
      const ofB = before.flatMap((o, s) => o === "b" ? [s] : [])
      expect(ofB.length).toBeGreaterThan(0)
      const info = String(yield* ms[1]!.seq.current)
      const runsBefore = checker.runs.length

      // What b's client holds when the drain returns: the claims cache the drain waited on.
      const seen: Array<GroupView> = []
      yield* EtcdSeq.observe(g).pipe(
        Stream.runForEach((v) => Effect.sync(() => void seen.push(v))),
        Effect.provideService(Etcd, ms[1]!.etcd),
        Effect.forkScoped
      )
      const drained = yield* EtcdSeq.drain.pipe(Effect.provideService(EtcdSeq, ms[1]!.seq), Effect.fork)
      let atReturn: GroupView | undefined
      yield* Fiber.await(drained).pipe(Effect.zipRight(Effect.sync(() => void (atReturn = seen.at(-1)))), Effect.fork)
      for (let i = 0; i < 40 && atReturn === undefined; i++) yield* advance(100)
      expect(atReturn).toBeDefined()
      // Each moved shard's holding claim is its planned owner's when the drain returns; its work starts in the new
      // owner's next turns (no time passes).
      for (const s of ofB) {
        expect(atReturn!.shards!.owners[s]!.holder).toBe(atReturn!.shards!.owners[s]!.planned)
        expect(atReturn!.shards!.owners[s]!.planned).not.toBe(ms[1]!.id)
      }
      expect(atReturn!.shards!.owners.every((o) => o.holder !== ms[1]!.id && !o.waiting.includes(ms[1]!.id))).toBe(true)
      yield* settle
      const want = expected(members, shards, names, { draining: new Set([ms[1]!.id]) })
      expect(want.includes("b")).toBe(false)
      expect(owners(checker, shards)).toEqual(want)
      // Only b's shards moved, each once, straight to its final owner.
      const started = checker.runs.slice(runsBefore)
      expect(started.map((r) => r.shard).sort((x, y) => x - y)).toEqual(ofB)
      for (const run of started) expect(run.member).toBe(want[run.shard])
      expect(String(yield* ms[1]!.seq.current)).toBe(info)
      expect(atReturn!.drains).toEqual([ms[1]!.id])

      // Drained it stays; its leave deletes the drain key with its other keys, and moves no shard (the drain's end,
      // seen by the controls watch, must not give it shards again before the view sees it go).
      yield* advance(1_000)
      expect(owners(checker, shards)).toEqual(want)
      const runsBeforeLeave = checker.runs.length
      yield* ms[1]!.leave
      yield* advance(500)
      expect(yield* memory.read(`${g}/shards/`)).toEqual([])
      expect(checker.runs.slice(runsBeforeLeave)).toEqual([])
      expect(owners(checker, shards)).toEqual(want)
      expect(shardOverlaps(checker.runs)).toEqual([])
    }).pipe(Effect.provide(MemoryEtcd.layer)))

  it.scoped("a drain from outside (the key under the member's lease); every member draining keeps today's plan", () =>
    Effect.gen(function*() {
      const api = yield* operatorApi
      const checker = makeShardChecker()
      const shards = 8
      const g = "g/drain-out"
      const ms = [yield* member(g, shards, checker, "a"), yield* member(g, shards, checker, "b", { instance: "b-1" })]
      yield* advance(1_000)
      const members = yield* ms[0]!.seq.members
      const names = namesOf(ms)
      const plain = expected(members, shards, names)
      const found = yield* Operator.findMember(api, g, { instance: "b-1" })
      expect(found?.id).toBe(ms[1]!.id)
      yield* Operator.drain(api, g, found!)
      yield* advance(500)
      expect(owners(checker, shards)).toEqual(Array(shards).fill("a"))
      // a drains too: nowhere left to move, the plan is today's; a's own drain completes without moving anything.
      const runs = checker.runs.length
      const drained = yield* EtcdSeq.drain.pipe(Effect.provideService(EtcdSeq, ms[0]!.seq), Effect.fork)
      yield* advance(500)
      expect(drained.unsafePoll()).not.toBeNull()
      expect(owners(checker, shards)).toEqual(plain)
      expect(
        expected(members, shards, names, { draining: new Set([ms[0]!.id, ms[1]!.id]) })
      ).toEqual(plain)
      expect(checker.runs.slice(runs).every((r) => r.member === "b")).toBe(true)
      expect(yield* Operator.findMember(api, g, { id: "ff_0" })).toBeUndefined()
      expect(shardOverlaps(checker.runs)).toEqual([])
    }).pipe(Effect.provide(MemoryEtcd.layer)))

  it.effect("drain of a hand-made membership: InvalidOptions", () =>
    Effect.gen(function*() {
      const error = yield* EtcdSeq.drain.pipe(
        Effect.provideService(EtcdSeq, {
          group: "g",
          changes: Stream.empty,
          current: Effect.never,
          members: Effect.never
        }),
        Effect.flip
      )
      expect(error).toMatchObject({ _tag: "InvalidOptions", field: "EtcdSeq" })
    }))
})
