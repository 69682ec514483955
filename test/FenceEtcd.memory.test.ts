/**
 * FenceEtcd over the in-memory etcd under the TestClock: a holder's writes land while its claim or lock key lives and
 * fail with StaleFence from the moment it is gone; fence records refuse lower fences, pass equal ones, and start out
 * missing or written by hand.
 */
import { describe, expect, it } from "@effect/vitest"
import { Cause, Context, Deferred, Effect, Exit, Layer, Metric, Scope } from "effect"
import {
  type Assignment,
  Etcd,
  type EtcdClient,
  EtcdSeq,
  type EtcdSeqService,
  FenceEtcd,
  MemoryEtcd,
  type Shard,
  StaleFence
} from "../src/index.js"
import * as Metrics from "../src/internal/metrics.js"
import { throwsOnUse } from "./support/members.js"
import { advance } from "./support/testClock.js"

/** A member on a process (client) of its own, whose work hands out what it was given and runs until interrupted. */
const member = <A>(
  key: string,
  run: (seq: EtcdSeqService, got: Deferred.Deferred<A>) => Effect.Effect<unknown, unknown, Etcd>
) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const context = yield* Layer.buildWithScope(Etcd.layerMemory, scope)
    const seq = yield* EtcdSeq.make({ key, ttl: "3 seconds" }).pipe(Effect.provide(context), Scope.extend(scope))
    const got = yield* Deferred.make<A>()
    yield* run(seq, got).pipe(Effect.provide(context), Effect.ignore, Effect.forkIn(scope))
    return { etcd: Context.get(context, Etcd), got, leave: Scope.close(scope, Exit.void) }
  })

const shardMember = (key: string) =>
  member<Shard>(key, (seq, got) =>
    EtcdSeq.runShards(
      { shards: 1 },
      (shard) => Effect.zipRight(Deferred.succeed(got, shard), Effect.never)
    ).pipe(Effect.provideService(EtcdSeq, seq)))

const leaseOfKey = (key: string) =>
  Effect.flatMap(MemoryEtcd, (memory) => memory.read(key)).pipe(
    Effect.map((kvs) => kvs.find((kv) => kv.key === key)?.lease)
  )

const refusals = Metric.value(Metric.tagged(Metrics.staleFences, "store", "etcd")).pipe(Effect.map((s) => s.count))

describe("FenceEtcd over MemoryEtcd", () => {
  it.scoped("a shard's writes land while its claim lives; once the claim is gone they fail, before the next owner writes", () =>
    Effect.gen(function*() {
      const memory = yield* MemoryEtcd
      const a = yield* shardMember("g/shard-guard")
      const shardA = yield* Deferred.await(a.got)
      const written = yield* FenceEtcd.commit(FenceEtcd.ofShard(shardA), [FenceEtcd.put("app/p0", "a")]).pipe(
        Effect.provideService(Etcd, a.etcd)
      )
      expect((yield* memory.read("app/p0"))[0]).toMatchObject({ value: "a", modRevision: written.revision })

      // a's lease goes (as a paused process's expires), its claim with it: from then on its writes fail, although no
      // other member holds the shard yet, let alone wrote.
      const before = yield* refusals
      const lease = yield* leaseOfKey(shardA.claimKey)
      expect(yield* memory.revoke(lease!)).toBe(true)
      const late = yield* FenceEtcd.commit(FenceEtcd.ofShard(shardA), [
        FenceEtcd.put("app/p0", "a, late"),
        FenceEtcd.remove("app/other")
      ]).pipe(Effect.provideService(Etcd, a.etcd), Effect.flip)
      expect(late).toBeInstanceOf(StaleFence)
      expect(late).toMatchObject({ _tag: "StaleFence", resource: shardA.claimKey, fence: shardA.fence })
      const current = late._tag === "StaleFence" ? late.current : 0
      expect(current).toBe(yield* memory.revision)
      expect(late.message).toBe(`fence ${shardA.fence} of "${shardA.claimKey}" is stale: the store holds ${current}`)
      expect((yield* memory.read("app/p0"))[0]?.value).toBe("a")
      expect((yield* refusals) - before).toBe(1)
      yield* a.leave

      const b = yield* shardMember("g/shard-guard")
      // b holds the shard now, under a higher fence; its writes land, a's still do not, and name b's fence.
      const shardB = yield* Deferred.await(b.got)
      expect(shardB.fence).toBeGreaterThan(shardA.fence)
      yield* FenceEtcd.commit(FenceEtcd.ofShard(shardB), [FenceEtcd.put("app/p0", "b")]).pipe(
        Effect.provideService(Etcd, b.etcd)
      )
      const again = yield* FenceEtcd.commit(FenceEtcd.ofShard(shardA), [FenceEtcd.put("app/p0", "a, later")]).pipe(
        Effect.provideService(Etcd, b.etcd),
        Effect.flip
      )
      expect(again).toMatchObject({ _tag: "StaleFence", fence: shardA.fence, current: shardB.fence })
      expect((yield* memory.read("app/p0"))[0]?.value).toBe("b")
      yield* b.leave
    }).pipe(Effect.provide(MemoryEtcd.layer)))

  it.scoped("a shard's claim expired with its lease (a process cut off past its TTL): its write fails", () =>
    Effect.gen(function*() {
      const memory = yield* MemoryEtcd
      const a = yield* shardMember("g/shard-expiry")
      const shardA = yield* Deferred.await(a.got)
      yield* memory.outage({ mode: "hang", clients: [a.etcd] })
      yield* advance(3_500)
      yield* memory.recover
      const refused = yield* FenceEtcd.commit(FenceEtcd.ofShard(shardA), [FenceEtcd.put("app/p0", "a")]).pipe(
        Effect.provideService(Etcd, a.etcd),
        Effect.flip
      )
      expect(refused).toMatchObject({ _tag: "StaleFence", resource: shardA.claimKey, fence: shardA.fence })
      expect(yield* memory.read("app/p0")).toEqual([])
    }).pipe(Effect.provide(MemoryEtcd.layer)))

  it.scoped("an \"index\" run compares its lock key; \"none\" and \"group\" runs a fence record", () =>
    Effect.gen(function*() {
      const memory = yield* MemoryEtcd
      const runner = (exclusive: "none" | "index" | "group") =>
        member<Assignment>(
          `g/assign-${exclusive}`,
          (seq, got) =>
            EtcdSeq.runAssigned((a) => Effect.zipRight(Deferred.succeed(got, a), Effect.never), { exclusive }).pipe(
              Effect.provideService(EtcdSeq, seq)
            )
        )
      const indexed = yield* runner("index")
      const a = yield* Deferred.await(indexed.got)
      expect(a.lockKey).toMatch(/^g\/assign-index\/locks\/0\/[0-9a-f]+_0\.[0-9]+$/)
      const guard = FenceEtcd.ofAssignment(a, "app/fences/unused")
      expect(guard).toEqual({ _tag: "Holder", key: a.lockKey, fence: a.fence })
      yield* FenceEtcd.commit(guard, [FenceEtcd.put("app/i0", "1")]).pipe(Effect.provideService(Etcd, indexed.etcd))
      expect(yield* memory.revoke((yield* leaseOfKey(a.lockKey!))!)).toBe(true)
      const refused = yield* FenceEtcd.commit(guard, [FenceEtcd.put("app/i0", "2")]).pipe(
        Effect.provideService(Etcd, indexed.etcd),
        Effect.flip
      )
      expect(refused).toMatchObject({ _tag: "StaleFence", resource: a.lockKey, fence: a.fence })
      expect((yield* memory.read("app/fences/")).length).toBe(0)

      for (const exclusive of ["none", "group"] as const) {
        const m = yield* runner(exclusive)
        const run = yield* Deferred.await(m.got)
        expect(run.lockKey).toBeUndefined()
        expect(FenceEtcd.ofAssignment(run, `app/fences/${exclusive}`)).toEqual({
          _tag: "Record",
          key: `app/fences/${exclusive}`,
          fence: run.fence
        })
        yield* m.leave
      }
    }).pipe(Effect.provide(MemoryEtcd.layer)))

  it.scoped("a fence record: created when missing, equal fences pass, a higher one moves it, a lower one is refused", () =>
    Effect.gen(function*() {
      const memory = yield* MemoryEtcd
      const etcd = Context.get(yield* Layer.build(Etcd.layerMemory), Etcd)
      const write = (fence: number, value: string) =>
        FenceEtcd.commit(FenceEtcd.record("app/fences/orders", fence), [FenceEtcd.put("app/orders", value)]).pipe(
          Effect.provideService(Etcd, etcd)
        )
      const record = Effect.map(memory.read("app/fences/orders"), (kvs) => kvs[0]?.value)
      yield* write(7, "seven")
      expect(yield* record).toBe("00000000000000000007")
      yield* write(7, "seven again")
      yield* write(12, "twelve")
      expect(yield* record).toBe("00000000000000000012")
      const refused = yield* Effect.flip(write(9, "nine"))
      expect(refused).toMatchObject({ _tag: "StaleFence", resource: "app/fences/orders", fence: 9, current: 12 })
      expect((yield* memory.read("app/orders"))[0]?.value).toBe("twelve")
      // Ten is above nine, below twelve: a byte-wise compare of unpadded decimals would get it wrong.
      expect(yield* Effect.flip(write(10, "ten"))).toMatchObject({ fence: 10, current: 12 })
      yield* write(100, "hundred")
      expect(yield* record).toBe("00000000000000000100")

      // A record written by hand, unpadded: read as a number, replaced by a higher fence, refused by a lower one.
      yield* memory.put("app/fences/by-hand", "15")
      const byHand = (fence: number) =>
        FenceEtcd.commit(FenceEtcd.record("app/fences/by-hand", fence), []).pipe(Effect.provideService(Etcd, etcd))
      expect(yield* Effect.flip(byHand(9))).toMatchObject({ fence: 9, current: 15 })
      yield* byHand(15)
      expect((yield* memory.read("app/fences/by-hand"))[0]?.value).toBe("00000000000000000015")
      // Something that is no fence is not overwritten.
      yield* memory.put("app/fences/foreign", "hello")
      const foreign = yield* FenceEtcd.commit(FenceEtcd.record("app/fences/foreign", 3), []).pipe(
        Effect.provideService(Etcd, etcd),
        Effect.flip
      )
      expect(foreign).toMatchObject({ _tag: "InvalidOptions", field: "guard" })
      expect((yield* memory.read("app/fences/foreign"))[0]?.value).toBe("hello")
    }).pipe(Effect.provide(MemoryEtcd.layer)))

  it.scoped("writers of one record in a race: the record ends at the highest fence, and no lower write lands after it", () =>
    Effect.gen(function*() {
      const memory = yield* MemoryEtcd
      const clients = yield* Effect.forEach([1, 2, 3], () => Layer.build(Etcd.layerMemory))
      const fences = [5, 9, 7, 9, 3, 8, 11, 6, 11, 2]
      const outcomes = yield* Effect.forEach(
        fences,
        (fence, i) =>
          FenceEtcd.commit(FenceEtcd.record("app/fences/race", fence), [FenceEtcd.put(`app/race/${i}`, String(fence))])
            .pipe(
              Effect.provide(clients[i % clients.length]!),
              Effect.map((c) => ({ fence, revision: c.revision })),
              Effect.either
            ),
        { concurrency: "unbounded" }
      )
      expect((yield* memory.read("app/fences/race"))[0]?.value).toBe("00000000000000000011")
      // In the order they landed, the fences never go down.
      const landed = [...(yield* memory.read("app/race/"))].sort((x, y) => x.modRevision - y.modRevision).map((kv) =>
        Number(kv.value)
      )
      expect(landed).toEqual([...landed].sort((x, y) => x - y))
      expect(landed.length + outcomes.filter((o) => o._tag === "Left").length).toBe(fences.length)
    }).pipe(Effect.provide(MemoryEtcd.layer)))

  it("StaleFence prints as its one line", () => {
    const error = new StaleFence({ resource: "orders", fence: 7, current: 9 })
    expect(Cause.pretty(Cause.fail(error), { renderErrorCause: true })).toBe(
      "StaleFence: fence 7 of \"orders\" is stale: the store holds 9"
    )
  })

  it.effect("a guard that is no guard is refused before any I/O", () =>
    Effect.gen(function*() {
      const etcd = throwsOnUse<EtcdClient>()
      const refused = (guard: FenceEtcd.Guard) =>
        FenceEtcd.commit(guard, []).pipe(Effect.provideService(Etcd, etcd), Effect.flip)
      expect(yield* refused(FenceEtcd.record("", 3))).toMatchObject({ _tag: "InvalidOptions", field: "guard" })
      expect(yield* refused(FenceEtcd.record("k", 0))).toMatchObject({ reason: expect.stringContaining("positive") })
      expect(yield* refused(FenceEtcd.holder("k", 1.5))).toMatchObject({ _tag: "InvalidOptions" })
      expect(yield* refused(FenceEtcd.holder("k", Number.NaN))).toMatchObject({ _tag: "InvalidOptions" })
    }))
})
