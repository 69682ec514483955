/**
 * The exclusive modes under the faults a review found ways around them with: a member whose requests cannot reach
 * etcd while it still hears the group, a compaction while a member is cut off, two runners on one membership,
 * forged handover values and lock keys that no lease holds. Each checks with the assignment checker that no two
 * members ever ran overlapping work, and that the group gets back to work afterwards.
 */
import { expect, layer } from "@effect/vitest"
import { Clock, Duration, Effect, Exit, Fiber, Scope } from "effect"
import { Etcd, EtcdSeq, type EtcdSeqService, type Exclusive } from "../src/index.js"
import { makeChecker, type Run, shareOverlaps } from "./support/checker.js"
import { EtcdEndpoints } from "./support/etcd.js"
import { foreignMember } from "./support/foreign.js"
import { forward, startGrpcProxy } from "./support/grpcProxy.js"
import { uniqueGroup, waitFor } from "./support/members.js"
import { startProxy } from "./support/proxy.js"
import { admin } from "./support/reliability.js"

/** Polls the test's own records (bounded): the checker's runs are plain data, not a stream. */
const eventually = (what: string, check: () => boolean, within: Duration.DurationInput = "10 seconds") =>
  Effect.gen(function*() {
    const deadline = (yield* Clock.currentTimeMillis) + Duration.toMillis(Duration.decode(within))
    while (!check()) {
      if ((yield* Clock.currentTimeMillis) > deadline) return yield* Effect.dieMessage(`${what}: not within ${within}`)
      yield* Effect.sleep("20 millis")
    }
  })

const running = (runs: ReadonlyArray<Run>, member: string, predicate: (run: Run) => boolean = () => true) =>
  runs.some((r) => r.member === member && !Number.isFinite(r.end) && predicate(r))

/** A member of `group` on its own client (through `endpoints`), with the checker's work under `exclusive`. */
const member = (
  group: string,
  endpoints: ReadonlyArray<string>,
  name: string,
  work: ReturnType<typeof makeChecker>,
  exclusive: Exclusive,
  ttl: Duration.DurationInput = "10 seconds",
  stopMillis = 0
) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const etcd = yield* Etcd.make({ endpoints, requestTimeout: "1 second" }).pipe(Scope.extend(scope))
    const seq = yield* EtcdSeq.make({ key: group, ttl }).pipe(Effect.provideService(Etcd, etcd), Scope.extend(scope))
    yield* EtcdSeq.runAssigned(work.work(name, stopMillis), { exclusive }).pipe(
      Effect.provideService(EtcdSeq, seq),
      Effect.ignore,
      Effect.forkIn(scope)
    )
    yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
    return { seq, leave: Scope.close(scope, Exit.void) }
  })

const current = (seq: EtcdSeqService) => Effect.map(seq.current, String)

layer(EtcdEndpoints.layer, { timeout: "60 seconds", excludeTestServices: true })(
  "exclusive modes under faults",
  (it) => {
    it.scoped(
      "group mode: a member that hears the group but cannot reach etcd stops its work at its self-fence, though a same-share view asks it to publish",
      () =>
        Effect.gen(function*() {
          const { endpoints } = yield* EtcdEndpoints
          const group = uniqueGroup("publish-blocked")
          const checker = makeChecker()
          const proxy = yield* startProxy(endpoints[0]!)
          const client = yield* admin(endpoints)
          const a = yield* member(group, [proxy.endpoint], "a", checker, "group", "3 seconds")
          yield* member(group, endpoints, "b", checker, "group", "3 seconds")
          const foreign = yield* foreignMember(client, group)
          yield* eventually(
            "a and b at work as 0/3 and 1/3",
            () => running(checker.runs, "a", (r) => r.count === 3) && running(checker.runs, "b", (r) => r.count === 3)
          )

          // a's requests stop reaching etcd, its watch still delivers: it sees the foreign member replaced, a view
          // in which its share is unchanged, and must publish it. Its lease runs out meanwhile.
          yield* proxy.blockUp
          yield* foreign.replace
          // a's lease expires at etcd: b becomes 0/2 and starts shares a's 0/3 work overlaps with, if still running.
          yield* eventually("b at work as 0/2", () => running(checker.runs, "b", (r) => r.count === 2), "15 seconds")
          expect(running(checker.runs, "a")).toBe(false)
          expect(shareOverlaps(checker.runs)).toEqual([])

          // Back in touch: a registers again and the group of three gets back to work.
          yield* proxy.resume
          yield* eventually(
            "a and b at work in a group of three again",
            () => running(checker.runs, "a", (r) => r.count === 3) && running(checker.runs, "b", (r) => r.count === 3),
            "20 seconds"
          )
          expect(yield* current(a.seq)).toMatch(/^2\/3@/)
          expect(shareOverlaps(checker.runs)).toEqual([])
        }),
      { timeout: 60_000 }
    )

    it.scoped(
      "group mode: a member that re-read the group after a compaction names the view as the others do, and the group moves on",
      () =>
        Effect.gen(function*() {
          const { endpoints } = yield* EtcdEndpoints
          const group = uniqueGroup("compacted")
          const checker = makeChecker()
          const proxy = yield* startProxy(endpoints[0]!)
          const client = yield* admin(endpoints)
          const a = yield* member(group, [proxy.endpoint], "a", checker, "group")
          const b = yield* member(group, endpoints, "b", checker, "group")
          const d = yield* member(group, endpoints, "d", checker, "group")
          yield* eventually("three at work", () => ["a", "b", "d"].every((m) => running(checker.runs, m)))
          const fenceBefore = checker.runs.find((r) => r.member === "a")!.fence

          // a loses its connection; d leaves; etcd compacts past the leave: a's watch cannot resume, it re-reads.
          yield* proxy.cut
          yield* d.leave
          yield* waitFor(b.seq, (info) => info.count === 2)
          const revision = (yield* Effect.promise(() => client.get("x").exec())).header.revision
          yield* Effect.promise(() => client.kv.compact({ revision, physical: true }))
          yield* proxy.resume

          yield* eventually(
            "a and b at work in a group of two",
            () => running(checker.runs, "a", (r) => r.count === 2) && running(checker.runs, "b", (r) => r.count === 2),
            "20 seconds"
          )
          const [infoA, infoB] = [yield* a.seq.current, yield* b.seq.current]
          expect(infoA.revision).toBe(infoB.revision)
          const runA = checker.runs.filter((r) => r.member === "a").at(-1)!
          expect(runA.fence).toBeGreaterThan(fenceBefore)
          expect(shareOverlaps(checker.runs)).toEqual([])
        }),
      { timeout: 60_000 }
    )

    it.scoped("a second runner on one membership is refused with a typed error; the first keeps its lock", () =>
      Effect.gen(function*() {
        const { endpoints } = yield* EtcdEndpoints
        const group = uniqueGroup("two-runs")
        const checker = makeChecker()
        const client = yield* admin(endpoints)
        const etcd = yield* Etcd.make({ endpoints })
        const seq = yield* EtcdSeq.make({ key: group }).pipe(Effect.provideService(Etcd, etcd))
        const first = yield* EtcdSeq.runAssigned(checker.work("first"), { exclusive: "index" }).pipe(
          Effect.provideService(EtcdSeq, seq),
          Effect.forkScoped
        )
        yield* eventually("the first at work", () => running(checker.runs, "first"))
        const locks = () => Effect.promise(() => client.getAll().prefix(`${group}/locks/`).keys())
        const held = yield* locks()
        expect(held).toHaveLength(1)

        const second = yield* EtcdSeq.runAssigned(checker.work("second"), { exclusive: "index" }).pipe(
          Effect.provideService(EtcdSeq, seq),
          Effect.flip,
          Effect.timeout("5 seconds")
        )
        expect(second).toMatchObject({ _tag: "AlreadyRunning", group })
        expect(checker.runs.filter((r) => r.member === "second")).toEqual([])
        expect(yield* locks()).toEqual(held)
        expect(running(checker.runs, "first")).toBe(true)

        // Once the first has ended, a new runner may start.
        yield* Fiber.interrupt(first)
        yield* EtcdSeq.runAssigned(checker.work("third"), { exclusive: "index" }).pipe(
          Effect.provideService(EtcdSeq, seq),
          Effect.forkScoped
        )
        yield* eventually("the third at work", () => running(checker.runs, "third"))
      }))

    it.scoped("group mode: a handover value not bound to its member's lease is ignored", () =>
      Effect.gen(function*() {
        const { endpoints } = yield* EtcdEndpoints
        const group = uniqueGroup("forged")
        const checker = makeChecker()
        const client = yield* admin(endpoints)
        // b stops slowly: while it drains, its published revision is older than the new view.
        yield* member(group, endpoints, "a", checker, "group")
        const b = yield* member(group, endpoints, "b", checker, "group", "10 seconds", 3_000)
        yield* eventually("both at work", () => running(checker.runs, "a") && running(checker.runs, "b"))
        const [, idB] = (yield* b.seq.members).map((m) => m.id)

        // A third member joins: a and b must change work. While b drains, a forged "b is done" appears, not bound to
        // b's lease: a must not believe it.
        yield* member(group, endpoints, "c", checker, "group")
        yield* Effect.promise(() =>
          client.put(`${group}/handover/${idB}`).value(String(Number.MAX_SAFE_INTEGER)).exec()
        )
        yield* eventually(
          "b at work in the group of three",
          () => running(checker.runs, "b", (r) => r.count === 3),
          "15 seconds"
        )
        expect(shareOverlaps(checker.runs)).toEqual([])
      }), { timeout: 40_000 })

    it.scoped(
      "group mode: a handover publish in flight when its member leaves lands before the leave's delete",
      () =>
        Effect.gen(function*() {
          const { endpoints } = yield* EtcdEndpoints
          const group = uniqueGroup("publish-in-flight")
          const checker = makeChecker()
          const proxy = yield* startGrpcProxy(endpoints[0]!)
          const client = yield* admin(endpoints)
          // a and k share a client, so its lease outlives a: a key a left behind would stay.
          const shared = yield* Etcd.make({ endpoints: [proxy.endpoint] })
          const joinShared = (name: string) =>
            Effect.gen(function*() {
              const scope = yield* Scope.make()
              const seq = yield* EtcdSeq.make({ key: group }).pipe(
                Effect.provideService(Etcd, shared),
                Scope.extend(scope)
              )
              yield* EtcdSeq.runAssigned(checker.work(name), { exclusive: "group" }).pipe(
                Effect.provideService(EtcdSeq, seq),
                Effect.ignore,
                Effect.forkIn(scope)
              )
              return { seq, leave: Scope.close(scope, Exit.void) }
            })
          const a = yield* joinShared("a")
          const k = yield* joinShared("k")
          yield* eventually("a and k at work", () => running(checker.runs, "a") && running(checker.runs, "k"))
          const [idA] = (yield* a.seq.members).map((m) => m.id)

          // Handover publishes now take a while to reach etcd; b joins, so a and k publish, and a leaves meanwhile.
          yield* proxy.setRule(({ body, method }) =>
            method === "/etcdserverpb.KV/Put" && body.includes(`${group}/handover/`)
              ? { _tag: "Delay", millis: 1_500 }
              : forward
          )
          yield* member(group, endpoints, "b", checker, "group")
          yield* Effect.sleep("300 millis")
          yield* a.leave
          yield* proxy.setRule(() => forward)
          yield* eventually(
            "k and b at work in a group of two",
            () => running(checker.runs, "k", (r) => r.count === 2) && running(checker.runs, "b", (r) => r.count === 2)
          )
          // Past the delay: a publish that was abandoned would have landed by now.
          yield* Effect.sleep("2 seconds")
          const left = yield* Effect.promise(() => client.getAll().prefix(`${group}/`).keys())
          expect(left.filter((key) => key.includes(idA!))).toEqual([])
          yield* k.leave
        }),
      { timeout: 40_000 }
    )

    it.scoped("index mode: a lock key that no lease holds never blocks its index", () =>
      Effect.gen(function*() {
        const { endpoints } = yield* EtcdEndpoints
        const group = uniqueGroup("leaseless-lock")
        const checker = makeChecker()
        const client = yield* admin(endpoints)
        // Written before anyone locks index 0, so it is first in line, and no lease will ever take it away.
        yield* Effect.promise(() => client.put(`${group}/locks/0/1_0.0`).value("").exec())
        yield* member(group, endpoints, "a", checker, "index")
        yield* eventually("a at work on index 0", () => running(checker.runs, "a"), "5 seconds")
        yield* Effect.promise(() => client.delete().key(`${group}/locks/0/1_0.0`).exec())
      }))
  }
)
