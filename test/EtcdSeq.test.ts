import { describe, expect, it, layer } from "@effect/vitest"
import { Clock, ConfigProvider, Deferred, Effect, Exit, Fiber, Layer, Metric, Schedule, Scope, Stream } from "effect"
import { performance } from "node:perf_hooks"
import { expectTypeOf } from "vitest"
import { Etcd, EtcdSeq, EtcdSeqLive, type EtcdSeqService, type Member } from "../src/index.js"
import * as Metrics from "../src/internal/metrics.js"
import { EtcdEndpoints } from "./support/etcd.js"
import { client, expectNothingLeft, ic, leaseOf, record, strip, uniqueGroup, waitForInfo } from "./support/members.js"

/** Joins in a scope of its own, so a test can make the member leave by closing it. */
const join = (options: Parameters<typeof EtcdSeq.make>[0], etcd: Layer.Layer<Etcd>) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const seq = yield* EtcdSeq.make(options).pipe(Effect.provide(etcd), Scope.extend(scope))
    return { seq, leave: Scope.close(scope, Exit.void) }
  })

const clientLayer = Effect.map(client, (c) => Layer.succeed(Etcd, c))

layer(EtcdEndpoints.layer, { timeout: "60 seconds", excludeTestServices: true })(
  "EtcdSeq against a real etcd",
  (it) => {
    it.scoped("one member is 0/1, and lists itself with its metadata", () =>
      Effect.gen(function*() {
        const group = uniqueGroup("one")
        const etcd = yield* clientLayer
        const { leave, seq } = yield* join({ key: group, metadata: "10.0.0.7:8080" }, etcd)
        const info = yield* seq.current
        expect(ic(info)).toBe("0/1")
        const members = yield* seq.members
        expect(members).toHaveLength(1)
        expect(members[0]).toMatchObject({ index: 0, metadata: "10.0.0.7:8080", joinRevision: info.revision })
        yield* leave
        yield* expectNothingLeft(group, members.map((m) => m.id))
      }))

    it.scoped("a second joins: 0/2 and 1/2; the first leaves: the second is 0/1 within a second", () =>
      Effect.gen(function*() {
        const group = uniqueGroup("two")
        const first = yield* join({ key: group }, yield* clientLayer)
        const firstSeen = yield* record(first.seq)
        const second = yield* join({ key: group }, yield* clientLayer)
        expect(ic(yield* second.seq.current)).toBe("1/2")
        yield* waitForInfo(first.seq, 0, 2)
        const [a, b] = [yield* first.seq.current, yield* second.seq.current]
        expect(a.revision).toBe(b.revision) // one view, one name
        const ids = (yield* second.seq.members).map((m) => m.id)

        const leftAt = yield* Clock.currentTimeMillis
        yield* first.leave
        yield* waitForInfo(second.seq, 0, 1, "1 second")
        const tookMillis = (yield* Clock.currentTimeMillis) - leftAt
        expect(tookMillis).toBeLessThan(1000)

        yield* Fiber.join(firstSeen.done)
        expect(strip(yield* firstSeen.infos)).toEqual(["0/1", "0/2", "invalid"])
        expect(ic(yield* first.seq.current)).toBe("invalid")
        yield* second.leave
        yield* expectNothingLeft(group, ids)
      }))

    it.scoped(
      "20 members join one by one and leave one by one, every Info exact after each step",
      () =>
        Effect.gen(function*() {
          const group = uniqueGroup("twenty")
          const members: Array<{ seq: EtcdSeqService; leave: Effect.Effect<void> }> = []
          const expectExact = Effect.suspend(() =>
            Effect.forEach(members, (m, index) => waitForInfo(m.seq, index, members.length), {
              concurrency: "unbounded"
            })
          ).pipe(Effect.flatMap((infos) => {
            // Everyone converged on the same view, and each sees exactly its own place.
            if (infos.length > 0) {
              expect(
                new Set(infos.map((i) => i.revision)).size
              ).toBe(1)
            }
            return Effect.forEach(
              members,
              (m, index) => Effect.map(m.seq.current, (info) => expect(ic(info)).toBe(`${index}/${members.length}`))
            )
          }))
          for (let n = 0; n < 20; n++) {
            // Each member on its own client, as separate processes would be.
            members.push(yield* join({ key: group }, yield* clientLayer))
            yield* expectExact
          }
          const ids = (yield* members[0]!.seq.members).map((m) => m.id)
          expect(ids).toHaveLength(20)
          while (members.length > 0) {
            // Alternate between the head (everyone moves down) and the middle.
            const at = members.length % 2 === 0 ? 0 : Math.floor(members.length / 2)
            const [gone] = members.splice(at, 1)
            yield* gone!.leave
            expect(ic(yield* gone!.seq.current)).toBe("invalid")
            yield* expectExact
          }
          yield* expectNothingLeft(group, ids)
        }),
      { timeout: 60_000 }
    )

    it.scoped("members on one client share one read and one watch of their group, and one lease", () =>
      Effect.gen(function*() {
        const group = uniqueGroup("shared")
        const shared = yield* clientLayer
        const readsBefore = (yield* Metric.value(Metrics.groupReads)).count
        const a = yield* join({ key: group }, shared)
        const b = yield* join({ key: group }, shared)
        const c = yield* join({ key: group }, shared)
        expect((yield* Metric.value(Metrics.groupReads)).count - readsBefore).toBe(1)
        // Members on one client see one view: when a join returns, the others already hold it.
        expect([ic(yield* a.seq.current), ic(yield* b.seq.current), ic(yield* c.seq.current)])
          .toEqual(["0/3", "1/3", "2/3"])

        // A join through another client costs one watch response per client, not one per member.
        const responsesBefore = (yield* Metric.value(Metrics.watchResponses)).count
        const d = yield* join({ key: group }, yield* clientLayer)
        yield* Effect.all([waitForInfo(a.seq, 0, 4), waitForInfo(b.seq, 1, 4), waitForInfo(c.seq, 2, 4)])
        expect(ic(yield* d.seq.current)).toBe("3/4")
        expect((yield* Metric.value(Metrics.watchResponses)).count - responsesBefore).toBe(2)

        const leases = (yield* a.seq.members).map((m) => leaseOf(m.id))
        expect(new Set(leases.slice(0, 3)).size).toBe(1)
        expect(leases[3]).not.toBe(leases[0])

        // One member leaving does not disturb the others on its client, nor their lease.
        yield* b.leave
        yield* Effect.all([waitForInfo(a.seq, 0, 3), waitForInfo(c.seq, 1, 3), waitForInfo(d.seq, 2, 3)])
        const ids = (yield* a.seq.members).map((m) => m.id)
        expect(ids.map(leaseOf)).toEqual([leases[0], leases[0], leases[3]])
        yield* Effect.all([a.leave, c.leave, d.leave])
        yield* expectNothingLeft(group, ids)
      }))

    it.scoped("a member whose key is deleted from outside goes invalid, then registers again at the end", () =>
      Effect.gen(function*() {
        const group = uniqueGroup("deleted")
        const etcd = yield* client
        const a = yield* join({ key: group }, Layer.succeed(Etcd, etcd))
        const b = yield* join({ key: group }, yield* clientLayer)
        yield* waitForInfo(a.seq, 0, 2)
        const seen = yield* record(a.seq)
        const [oldId] = (yield* a.seq.members).map((m) => m.id)
        yield* Effect.promise(() => etcd.client.delete().key(`${group}/members/${oldId}`).exec())
        expect(strip(yield* seen.atLeast(3))).toEqual(["0/2", "invalid", "1/2"])
        yield* waitForInfo(b.seq, 0, 2)
        const ids = (yield* b.seq.members).map((m) => m.id)
        expect(ids[1]).not.toBe(oldId)
        yield* Effect.all([a.leave, b.leave])
        // The member registered anew under the same lease; all of it went with the leaves.
        yield* expectNothingLeft(group, [...ids, oldId!])
      }))

    it.scoped("a short-TTL member whose lease is revoked from outside emits invalid, then a new valid Info", () =>
      Effect.gen(function*() {
        const group = uniqueGroup("revoked")
        const etcd = yield* client
        const a = yield* join({ key: group, ttl: "2 seconds" }, Layer.succeed(Etcd, etcd))
        const seen = yield* record(a.seq)
        const [oldId] = (yield* a.seq.members).map((m) => m.id)
        yield* Effect.promise(() =>
          etcd.client.leaseClient.leaseRevoke({ ID: BigInt(`0x${leaseOf(oldId!)}`).toString() })
        )
        expect(strip(yield* seen.atLeast(3))).toEqual(["0/1", "invalid", "0/1"])
        const ids = (yield* a.seq.members).map((m) => m.id)
        expect(ids).toHaveLength(1)
        expect(ids[0]).not.toBe(oldId)
        yield* a.leave
        yield* expectNothingLeft(group, [...ids, oldId!])
      }))

    it.scoped("members sharing a client's lease all go invalid when it is revoked, then share one new lease", () =>
      Effect.gen(function*() {
        const group = uniqueGroup("shared-revoked")
        const shared = yield* clientLayer
        // A 10 s TTL: the next keepalive would notice the revoke only after 3.3 s; the members recover sooner.
        const a = yield* join({ key: group, ttl: "10 seconds" }, shared)
        const b = yield* join({ key: group, ttl: "10 seconds" }, shared)
        const aSeen = yield* record(a.seq)
        const bSeen = yield* record(b.seq)
        const [oldLease] = (yield* a.seq.members).map((m) => leaseOf(m.id))
        const etcd = yield* client
        yield* Effect.promise(() => etcd.client.leaseClient.leaseRevoke({ ID: BigInt(`0x${oldLease!}`).toString() }))
        expect(strip(yield* aSeen.atLeast(3)).slice(0, 3)).toEqual([
          "0/2",
          "invalid",
          expect.stringMatching(/^[01]\/[12]$/)
        ])
        expect(strip(yield* bSeen.atLeast(3)).slice(0, 3)).toEqual([
          "1/2",
          "invalid",
          expect.stringMatching(/^[01]\/[12]$/)
        ])
        const both = Effect.map(
          Effect.all([a.seq.current, b.seq.current]),
          (infos) => infos.map(ic).sort().join(" ")
        )
        yield* both.pipe(
          Effect.repeat({ until: (s) => s === "0/2 1/2", schedule: Schedule.spaced("20 millis") }),
          Effect.timeoutFail({ duration: "1500 millis", onTimeout: () => new Error("not 0/2 and 1/2 again in 1.5 s") })
        )
        const ids = (yield* a.seq.members).map((m) => m.id)
        expect(new Set(ids.map(leaseOf))).toEqual(new Set([leaseOf(ids[0]!)]))
        expect(leaseOf(ids[0]!)).not.toBe(oldLease)
        yield* Effect.all([a.leave, b.leave])
        yield* expectNothingLeft(group, [...ids, `${oldLease!}_0`])
      }))

    it.scoped(
      "100 members joining at once on one client each get an exact, distinct Info, and leave nothing",
      () =>
        Effect.gen(function*() {
          const group = uniqueGroup("storm")
          const shared = yield* clientLayer
          const size = 100
          const members = yield* Effect.forEach(
            Array.from({ length: size }),
            () => join({ key: group }, shared),
            { concurrency: "unbounded" }
          )
          yield* Effect.forEach(members, (m) =>
            m.seq.changes.pipe(
              Stream.takeUntil((info) => info.count === size),
              Stream.runDrain,
              Effect.timeout("20 seconds")
            ), { concurrency: "unbounded", discard: true })
          const infos = yield* Effect.forEach(members, (m) => m.seq.current)
          expect(infos.map((info) => info.index).sort((x, y) => x - y)).toEqual(
            Array.from({ length: size }, (_, i) => i)
          )
          // One view for all: every member names it by the same revision.
          expect(new Set(infos.map((info) => info.revision)).size).toBe(1)
          const ids = (yield* members[0]!.seq.members).map((m) => m.id)
          expect(new Set(ids.map(leaseOf)).size).toBe(1)
          yield* Effect.forEach(members, (m) => m.leave, { concurrency: "unbounded", discard: true })
          yield* expectNothingLeft(group, ids)
        }),
      { timeout: 60_000 }
    )

    it.scoped("keepalives hold a 2 s lease for three TTLs without a single invalid Info", () =>
      Effect.gen(function*() {
        const group = uniqueGroup("keepalive")
        const a = yield* join({ key: group, ttl: "2 seconds" }, yield* clientLayer)
        const seen = yield* record(a.seq)
        // Time must pass here: the lease would expire after 2 s without keepalives.
        yield* Effect.sleep("6 seconds")
        expect(strip(yield* seen.infos)).toEqual(["0/1"])
        const ids = (yield* a.seq.members).map((m) => m.id)
        yield* a.leave
        yield* expectNothingLeft(group, ids)
      }), { timeout: 20_000 })

    it.scoped(
      "a group whose members' metadata adds up to more than gRPC's default 4 MiB message is read by a new client",
      () =>
        Effect.gen(function*() {
          const group = uniqueGroup("big")
          const shared = yield* clientLayer
          // Each record within the metadata limit; together far over one default gRPC message.
          const metadata = "x".repeat(900 * 1024)
          const members = yield* Effect.forEach([0, 1, 2, 3, 4], () => join({ key: group, metadata }, shared))
          const newcomer = yield* join({ key: group, metadata: "small" }, yield* clientLayer)
          expect(ic(yield* newcomer.seq.current)).toBe("5/6")
          const listed = yield* newcomer.seq.members
          expect(listed.map((m) => m.metadata.length)).toEqual([...members.map(() => metadata.length), 5])
          const ids = listed.map((m) => m.id)
          yield* Effect.forEach([...members, newcomer], (m) => m.leave, { discard: true })
          yield* expectNothingLeft(group, ids)
        }),
      { timeout: 30_000 }
    )

    it.scoped("a member whose key was deleted by someone else registers again only after its work stopped", () =>
      Effect.gen(function*() {
        const group = uniqueGroup("deleted-running")
        const etcd = yield* client
        const a = yield* join({ key: group }, Layer.succeed(Etcd, etcd))
        const started = yield* Deferred.make<void>()
        const stoppedAt = yield* Deferred.make<number>()
        yield* EtcdSeq.runAssigned(() =>
          Effect.addFinalizer(() =>
            Effect.sleep("1 second").pipe(
              Effect.zipRight(Effect.suspend(() => Deferred.succeed(stoppedAt, performance.now())))
            )
          ).pipe(Effect.zipRight(Deferred.succeed(started, undefined)), Effect.zipRight(Effect.never))
        ).pipe(Effect.provideService(EtcdSeq, a.seq), Effect.forkScoped)
        yield* Deferred.await(started)
        // When the member's next key is written, as etcd tells a watcher.
        const putAt = yield* Deferred.make<number>()
        const watcher = yield* Effect.acquireRelease(
          Effect.promise(() => etcd.client.watch().prefix(`${group}/members/`).create()),
          (w) => Effect.promise(() => w.cancel())
        )
        watcher.on("put", () => Deferred.unsafeDone(putAt, Exit.succeed(performance.now())))
        const [old] = yield* a.seq.members
        yield* Effect.promise(() => etcd.client.delete().key(`${group}/members/${old!.id}`).exec())
        const registeredAt = yield* Deferred.await(putAt).pipe(Effect.timeout("5 seconds"))
        expect(yield* Deferred.await(stoppedAt)).toBeLessThan(registeredAt)
        yield* a.leave
      }))

    it.scoped("EtcdSeqLive reads ETCDSEQ_KEY and ETCD_ENDPOINTS through Config", () =>
      Effect.gen(function*() {
        const group = uniqueGroup("live")
        const { endpoints } = yield* EtcdEndpoints
        const first = yield* EtcdSeq.changes.pipe(
          Stream.take(1),
          Stream.runCollect,
          Effect.provide(EtcdSeqLive),
          Effect.withConfigProvider(ConfigProvider.fromMap(
            new Map([["ETCDSEQ_KEY", group], ["ETCD_ENDPOINTS", endpoints.join(",")], ["ETCDSEQ_TTL", "3 seconds"]])
          ))
        )
        expect([...first].map(ic)).toEqual(["0/1"])
        yield* expectNothingLeft(group, [])
      }))
  }
)

describe("EtcdSeq without etcd", () => {
  layer(EtcdEndpoints.layer, { timeout: "60 seconds", excludeTestServices: true })((it) => {
    it.effect("a stream subscribed after the scope closed emits invalid and completes", () =>
      Effect.gen(function*() {
        const group = uniqueGroup("after")
        const seq = yield* Effect.scoped(Effect.flatMap(client, (c) =>
          EtcdSeq.make({ key: group }).pipe(
            Effect.provideService(Etcd, c)
          )))
        const after = yield* seq.changes.pipe(Stream.runCollect, Effect.timeout("2 seconds"))
        expect([...after].map(ic)).toEqual(["invalid"])
      }).pipe(Effect.scoped))
  })
})

describe("EtcdSeq types", () => {
  it("members cannot fail: it reads the view the member already holds", () => {
    expectTypeOf<EtcdSeqService["members"]>().toEqualTypeOf<Effect.Effect<ReadonlyArray<Member>>>()
  })
})
