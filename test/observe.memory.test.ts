/**
 * `EtcdSeq.observe` over the in-memory etcd: the view, the locks, the handover and the shards of a group, seen from
 * outside, and what the group waits for while a change is under way.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Layer, Scope, Stream } from "effect"
import { type Assignment, Etcd, EtcdSeq, type GroupView, MemoryEtcd } from "../src/index.js"
import { throwsOnUse } from "./support/members.js"
import { advance, settle } from "./support/testClock.js"

/** Work that holds until interrupted and takes `stopMillis` to stop. */
const slowStop = (stopMillis: number) => (_: Assignment) =>
  Effect.addFinalizer(() => Effect.sleep(stopMillis)).pipe(Effect.zipRight(Effect.never))

const member = (
  key: string,
  run: (seq: EtcdSeq["Type"]) => Effect.Effect<unknown, unknown, never> = () => Effect.void
) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const context = yield* Layer.buildWithScope(Etcd.layerMemory, scope)
    const seq = yield* EtcdSeq.make({ key, ttl: "3 seconds" }).pipe(Effect.provide(context), Scope.extend(scope))
    yield* Effect.forkIn(run(seq), scope)
    return { seq, leave: Scope.close(scope, Exit.void) }
  })

/** Follows the group from a client of its own; every GroupView seen, in order. */
const observer = (key: string) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const context = yield* Layer.buildWithScope(Etcd.layerMemory, scope)
    const views: Array<GroupView> = []
    yield* EtcdSeq.observe(key).pipe(
      Stream.runForEach((view) => Effect.sync(() => void views.push(view))),
      Effect.provide(context),
      Effect.forkIn(scope)
    )
    return { views, close: Scope.close(scope, Exit.void) }
  })

describe("EtcdSeq.observe over MemoryEtcd", () => {
  it.scoped("the current view first, then every change; group handover waits show until they end", () =>
    Effect.gen(function*() {
      const seen = yield* observer("g/observe")
      yield* settle
      expect(seen.views.map((v) => v.members.length)).toEqual([0])
      const group = (seq: EtcdSeq["Type"]) =>
        EtcdSeq.runAssigned(slowStop(500), { exclusive: "group" }).pipe(Effect.provideService(EtcdSeq, seq))
      const a = yield* member("g/observe", group)
      const b = yield* member("g/observe", group)
      yield* advance(1_000)
      const quiet = seen.views.at(-1)!
      expect(quiet.members.map((m) => m.index)).toEqual([0, 1])
      expect(quiet.members.map((m) => m.id)).toEqual((yield* a.seq.members).map((m) => m.id))
      expect(quiet.handover.map((h) => h.revision)).toEqual([quiet.revision, quiet.revision])
      expect(quiet.waiting).toEqual([])
      expect(quiet.locks).toEqual([])
      expect(quiet.shards).toBeUndefined()

      // A third joins: a and b stop their runs (500 ms each) before they promise the new view.
      const c = yield* member("g/observe", group)
      yield* settle
      const during = seen.views.at(-1)!
      expect(during.members).toHaveLength(3)
      expect(during.waiting.length).toBeGreaterThan(0)
      expect(during.waiting.every((line) => line.startsWith(`handover: view ${during.revision} waits for`))).toBe(true)
      yield* advance(1_000)
      expect(seen.views.at(-1)!.waiting).toEqual([])
      // Views came in order, each one different from the one before.
      const revisions = seen.views.map((v) => v.revision)
      expect(revisions).toEqual([...revisions].sort((x, y) => x - y))
      // Leaves wait for the work to stop (500 ms on the TestClock).
      yield* Effect.forkScoped(Effect.all([a.leave, b.leave, c.leave], { concurrency: "unbounded" }))
      yield* advance(1_000)
      expect(seen.views.at(-1)!.members).toEqual([])
      yield* seen.close
    }).pipe(Effect.provide(MemoryEtcd.layer)))

  it.scoped("index locks and their fences; shards with their planned owners and claims", () =>
    Effect.gen(function*() {
      // A lock key no lease holds (written by hand) is no contender: it must not break the view.
      yield* (yield* MemoryEtcd).put("g/lockers/locks/0/stray", "x")
      const seen = yield* observer("g/lockers")
      const index = (seq: EtcdSeq["Type"]) =>
        EtcdSeq.runAssigned(() => Effect.never, { exclusive: "index" }).pipe(Effect.provideService(EtcdSeq, seq))
      const a = yield* member("g/lockers", index)
      const b = yield* member("g/lockers", index)
      yield* settle
      const locked = seen.views.at(-1)!
      const ids = locked.members.map((m) => m.id)
      expect(locked.locks.map((l) => [l.index, l.holder, l.waiting])).toEqual([[0, ids[0], []], [1, ids[1], []]])
      expect(locked.locks[1]!.fence).toBeGreaterThan(locked.locks[0]!.fence)
      expect(locked.waiting).toEqual([])
      yield* Effect.all([a.leave, b.leave])

      const sharded = (seq: EtcdSeq["Type"]) =>
        EtcdSeq.runShards({ shards: 8 }, () => Effect.never).pipe(Effect.provideService(EtcdSeq, seq))
      const shardsSeen = yield* observer("g/sharded")
      const c = yield* member("g/sharded", sharded)
      const d = yield* member("g/sharded", sharded)
      yield* settle
      const view = shardsSeen.views.at(-1)!
      expect(view.shards?.shards).toBe(8)
      expect(view.shards!.owners.map((o) => o.holder)).toEqual(view.shards!.owners.map((o) => o.planned))
      expect(new Set(view.shards!.owners.map((o) => o.planned))).toEqual(new Set(view.members.map((m) => m.id)))
      expect(view.waiting).toEqual([])
      yield* Effect.all([c.leave, d.leave, seen.close, shardsSeen.close])
    }).pipe(Effect.provide(MemoryEtcd.layer)))

  it.effect("a bad key: InvalidOptions before any I/O", () =>
    Effect.gen(function*() {
      const error = yield* EtcdSeq.observe("a/members").pipe(
        Stream.runDrain,
        Effect.provideService(Etcd, throwsOnUse()),
        Effect.flip
      )
      expect(error).toMatchObject({ _tag: "InvalidOptions", field: "key" })
    }))
})
