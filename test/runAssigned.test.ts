import { expect, layer } from "@effect/vitest"
import { Cause, Clock, Deferred, Duration, Effect, Exit, Fiber, Layer, Option, Ref, Scope } from "effect"
import { performance } from "node:perf_hooks"
import { type Assignment, Etcd, EtcdSeq, type EtcdSeqService, type Exclusive } from "../src/index.js"
import { makeChecker } from "./support/checker.js"
import { EtcdEndpoints, startEtcd } from "./support/etcd.js"
import { client, expectNothingLeft, uniqueGroup, waitForInfo } from "./support/members.js"

const join = (group: string, ttl: Duration.DurationInput = "5 seconds") =>
  Effect.gen(function*() {
    const etcd = yield* client
    const scope = yield* Scope.make()
    const seq = yield* EtcdSeq.make({ key: group, ttl }).pipe(Effect.provideService(Etcd, etcd), Scope.extend(scope))
    return { etcd, seq, leave: Scope.close(scope, Exit.void) }
  })

/** Polls a condition on the test's own records (bounded): for state that is not a stream. */
const eventually = (check: Effect.Effect<boolean>, within = 5_000) =>
  Effect.gen(function*() {
    const deadline = (yield* Clock.currentTimeMillis) + within
    while (!(yield* check)) {
      if ((yield* Clock.currentTimeMillis) > deadline) return yield* Effect.dieMessage("condition not met in time")
      yield* Effect.sleep("10 millis")
    }
  })

const runAssigned = <E, R>(
  seq: EtcdSeqService,
  work: (assignment: Assignment) => Effect.Effect<void, E, R>,
  options?: { readonly exclusive?: Exclusive }
) => EtcdSeq.runAssigned(work, options).pipe(Effect.provideService(EtcdSeq, seq))

layer(EtcdEndpoints.layer, { timeout: "60 seconds", excludeTestServices: true })("runAssigned", (it) => {
  it.scoped("restarts work per Info, closing the previous scope first, and stops it while invalid", () =>
    Effect.gen(function*() {
      const group = uniqueGroup("per-info")
      const events = yield* Ref.make<ReadonlyArray<string>>([])
      const log = (e: string) => Ref.update(events, (all) => [...all, e])
      const a = yield* join(group)
      yield* runAssigned(a.seq, (assignment) =>
        Effect.acquireRelease(
          log(`start ${assignment.info.index}/${assignment.info.count}`),
          () => log(`stop ${assignment.info.index}/${assignment.info.count}`)
        ).pipe(Effect.zipRight(Effect.never))).pipe(Effect.forkScoped)
      yield* eventually(Effect.map(Ref.get(events), (e) => e.length === 1))
      const b = yield* join(group)
      yield* eventually(Effect.map(Ref.get(events), (e) => e.length === 3))
      yield* b.leave
      yield* eventually(Effect.map(Ref.get(events), (e) => e.length === 5))
      const [id] = (yield* a.seq.members).map((m) => m.id)
      yield* Effect.promise(() => a.etcd.client.delete().key(`${group}/members/${id}`).exec())
      yield* eventually(Effect.map(Ref.get(events), (e) => e.length === 7))
      expect(yield* Ref.get(events)).toEqual([
        "start 0/1",
        "stop 0/1",
        "start 0/2",
        "stop 0/2",
        "start 0/1",
        "stop 0/1", // invalid: its key was deleted
        "start 0/1" // registered again
      ])
      yield* a.leave
      expect((yield* Ref.get(events)).at(-1)).toBe("stop 0/1")
    }))

  it.scoped("a failing work is the result, after its scope closed; a completed work waits for the next Info", () =>
    Effect.gen(function*() {
      const group = uniqueGroup("fail")
      const a = yield* join(group)
      const closed = yield* Ref.make(false)
      const runs = yield* Ref.make(0)
      const exit = yield* runAssigned(a.seq, () =>
        Effect.gen(function*() {
          yield* Effect.addFinalizer(() => Ref.set(closed, true))
          return yield* Effect.fail("boom" as const)
        })).pipe(Effect.exit)
      expect(Exit.isFailure(exit) && Option.getOrUndefined(Cause.failureOption(exit.cause))).toBe("boom")
      expect(yield* Ref.get(closed)).toBe(true)

      const fiber = yield* runAssigned(a.seq, () => Ref.update(runs, (n) => n + 1)).pipe(Effect.forkScoped)
      yield* eventually(Effect.map(Ref.get(runs), (n) => n === 1))
      const b = yield* join(group)
      yield* eventually(Effect.map(Ref.get(runs), (n) => n === 2))
      yield* waitForInfo(a.seq, 0, 2)
      expect(yield* Ref.get(runs)).toBe(2)
      yield* Fiber.interrupt(fiber)
      const ids = (yield* a.seq.members).map((m) => m.id)
      yield* Effect.all([a.leave, b.leave])
      yield* expectNothingLeft(group, ids)
    }))

  it.scoped("a graceful leave stops the work before the others see the member gone", () =>
    Effect.gen(function*() {
      const group = uniqueGroup("leave")
      const a = yield* join(group)
      const b = yield* join(group)
      const stoppedAt = yield* Deferred.make<number>()
      yield* runAssigned(a.seq, () =>
        Effect.addFinalizer(() =>
          Effect.sleep("200 millis").pipe(Effect.zipRight(Deferred.succeed(stoppedAt, performance.now())))
        ).pipe(Effect.zipRight(Effect.never))).pipe(Effect.forkScoped)
      yield* waitForInfo(b.seq, 1, 2)
      yield* Effect.sleep("100 millis") // let a's work start
      const seenAlone = b.seq.changes.pipe(
        (s) =>
          waitForInfo({ ...b.seq, changes: s }, 0, 1),
        Effect.map(() =>
          performance.now()
        ),
        Effect.fork
      )
      const seen = yield* seenAlone
      yield* a.leave
      const bSawAt = yield* Fiber.join(seen)
      expect(yield* Deferred.await(stoppedAt)).toBeLessThan(bSawAt)
      yield* b.leave
    }))

  it.scoped("a member re-registered under a new lease still stops its work before its lock goes, client and member in one scope", () =>
    Effect.gen(function*() {
      const group = uniqueGroup("one-scope")
      const { endpoints } = yield* EtcdEndpoints
      const scope = yield* Scope.make()
      const etcd = yield* Etcd.make({ endpoints }).pipe(Scope.extend(scope))
      const seq = yield* EtcdSeq.make({ key: group, ttl: "5 seconds" }).pipe(
        Effect.provideService(Etcd, etcd),
        Scope.extend(scope)
      )
      const starts = yield* Ref.make(0)
      const lockHeldAtStop = yield* Ref.make<ReadonlyArray<boolean>>([])
      yield* runAssigned(seq, () =>
        Effect.acquireRelease(
          Ref.update(starts, (n) => n + 1),
          () =>
            Effect.promise(() => etcd.client.getAll().prefix(`${group}/locks/`).keys()).pipe(
              Effect.flatMap((keys) => Ref.update(lockHeldAtStop, (all) => [...all, keys.length === 1]))
            )
        ).pipe(Effect.zipRight(Effect.never)), { exclusive: "index" }).pipe(Effect.ignore, Effect.forkIn(scope))
      yield* eventually(Effect.map(Ref.get(starts), (n) => n === 1))
      // Revoked from outside: the member registers again under a lease granted after the work was forked, so the
      // new lease's resources come last in the scope the client and the member share.
      const [first] = yield* Effect.orDie(seq.members)
      yield* Effect.promise(() =>
        etcd.client.leaseClient.leaseRevoke({ ID: BigInt(`0x${first!.id.split("_")[0]}`).toString() })
      )
      yield* eventually(Effect.map(Ref.get(starts), (n) => n === 2))
      yield* Scope.close(scope, Exit.void)
      // The work stopped while it still held its lock: its lease was not revoked under it.
      expect((yield* Ref.get(lockHeldAtStop)).at(-1)).toBe(true)
    }))

  it.scoped("index mode: fences grow, and the lock keys go with the work", () =>
    Effect.gen(function*() {
      const group = uniqueGroup("fence")
      const a = yield* join(group)
      const fences = yield* Ref.make<ReadonlyArray<number>>([])
      yield* runAssigned(a.seq, (assignment) => Ref.update(fences, (f) => [...f, assignment.fence]), {
        exclusive: "index"
      }).pipe(Effect.forkScoped)
      yield* eventually(Effect.map(Ref.get(fences), (f) => f.length === 1))
      const b = yield* join(group)
      yield* eventually(Effect.map(Ref.get(fences), (f) => f.length === 2))
      yield* b.leave
      yield* eventually(Effect.map(Ref.get(fences), (f) => f.length === 3))
      const f = yield* Ref.get(fences)
      expect(f[0]! < f[1]! && f[1]! < f[2]!).toBe(true)
    }))
})

layer(Layer.empty, { timeout: "60 seconds", excludeTestServices: true })("self-fencing", (it) => {
  it.scoped(
    "etcd paused longer than the TTL: work stops before the TTL elapses, and restarts after resume",
    () =>
      Effect.gen(function*() {
        const node = yield* startEtcd({ name: "fence" })
        const etcd = yield* Etcd.make({ endpoints: [node.clientUrl], requestTimeout: "1 second" })
        const seq = yield* EtcdSeq.make({ key: uniqueGroup("fence"), ttl: "2 seconds" }).pipe(
          Effect.provideService(Etcd, etcd)
        )
        const checker = makeChecker()
        yield* runAssigned(seq, checker.work("m"), { exclusive: "index" }).pipe(Effect.forkScoped)
        yield* eventually(Effect.sync(() => checker.runs.length === 1))
        yield* Effect.sleep("1 second") // a keepalive or two go through first
        const pausedAt = performance.now()
        yield* node.pause
        yield* eventually(Effect.sync(() => Number.isFinite(checker.runs[0]!.end)), 4_000)
        const stoppedAfter = checker.runs[0]!.end - pausedAt
        expect(stoppedAfter).toBeLessThan(2_000)
        yield* node.resume
        yield* eventually(Effect.sync(() => checker.runs.length === 2), 15_000)
        expect(checker.runs[1]!.start).toBeGreaterThan(checker.runs[0]!.end)
      }),
    { timeout: 40_000 }
  )
})
