/**
 * The Go original's concurrency test, made stronger: 16 clients, each running 3 members one after another with
 * random lifetimes (0-1 s), all in one group, with the assignment checker on; also with members cut off from etcd
 * longer than the TTL (lease lost) and with members that crash (no graceful revoke).
 */
import { expect, layer } from "@effect/vitest"
import { Clock, Duration, Effect, Exit, Fiber, Scope } from "effect"
import { Etcd, EtcdSeq, type Exclusive } from "../src/index.js"
import { indexOverlaps, makeChecker, type Run, selfOverlaps, shareOverlaps } from "./support/checker.js"
import { EtcdEndpoints } from "./support/etcd.js"
import { uniqueGroup } from "./support/members.js"
import { startProxy } from "./support/proxy.js"

type Variant = "graceful" | "paused" | "crashed"

const CLIENTS = 16
const MEMBERS_PER_CLIENT = 3
const TTL = Duration.seconds(2)

/** A small seeded generator, so a failing run can be replayed. */
const random = (seed: number) => () => {
  seed = (seed * 1_103_515_245 + 12_345) % 2_147_483_648
  return seed / 2_147_483_648
}

const scenario = (exclusive: Exclusive, variant: Variant, seed: number) =>
  Effect.gen(function*() {
    const { endpoints } = yield* EtcdEndpoints
    const group = uniqueGroup(`${exclusive}-${variant}`)
    const checker = makeChecker()
    const next = random(seed)
    const witnessScope = yield* Scope.make()

    const member = (c: number, m: number) =>
      Effect.gen(function*() {
        const name = `c${c}m${m}`
        const lifetime = Duration.millis(Math.floor(next() * 1000))
        // Every fourth client's first member is the disrupted one.
        const disrupted = variant !== "graceful" && m === 0 && c % 4 === 0
        const scope = yield* Scope.make()
        const proxy = disrupted && variant === "paused"
          ? yield* startProxy(endpoints[0]!).pipe(Scope.extend(scope))
          : undefined
        const etcd = yield* Etcd.make({ endpoints: proxy ? [proxy.endpoint] : endpoints }).pipe(Scope.extend(scope))
        const seq = yield* EtcdSeq.make({ key: group, ttl: TTL }).pipe(
          Effect.provideService(Etcd, etcd),
          Scope.extend(scope)
        )
        const stopMillis = Math.floor(next() * 150)
        yield* EtcdSeq.runAssigned(checker.work(name, stopMillis), { exclusive }).pipe(
          Effect.provideService(EtcdSeq, seq),
          Effect.forkIn(scope)
        )
        yield* Effect.sleep(lifetime)
        if (disrupted && proxy !== undefined) {
          // Cut off longer than the TTL: the member fences itself, its lease expires, the others take over.
          yield* proxy.pause
          yield* Effect.sleep(Duration.sum(TTL, Duration.seconds(1)))
          yield* proxy.resume
          yield* Effect.sleep(lifetime)
        }
        // A crash: the connection is gone at once, nobody revokes, the lease expires after the TTL.
        if (disrupted && variant === "crashed") yield* Effect.sync(() => etcd.client.close())
        yield* Scope.close(scope, Exit.void)
      })

    // A witness lives through the churn: once the churn is over, it must get to work, whatever happened before.
    const witness = yield* Effect.gen(function*() {
      const etcd = yield* Etcd.make({ endpoints })
      const seq = yield* EtcdSeq.make({ key: group, ttl: TTL }).pipe(Effect.provideService(Etcd, etcd))
      return yield* EtcdSeq.runAssigned(checker.work("witness"), { exclusive }).pipe(
        Effect.provideService(EtcdSeq, seq),
        Effect.forkScoped
      )
    }).pipe(Scope.extend(witnessScope))

    const start = yield* Clock.currentTimeMillis
    yield* Effect.forEach(
      Array.from({ length: CLIENTS }, (_, c) => c),
      (c) => Effect.forEach([0, 1, 2].slice(0, MEMBERS_PER_CLIENT), (m) => member(c, m), { discard: true }),
      { concurrency: "unbounded", discard: true }
    )
    // Alone at last, the witness must work as 0/1. Crashed members hold their leases (and their locks, and the
    // handover) until the TTL runs out, so this may take up to a TTL.
    const witnessWorks = Effect.sync(() =>
      checker.runs.some((r) => r.member === "witness" && r.count === 1 && !Number.isFinite(r.end))
    )
    const settleBy = (yield* Clock.currentTimeMillis) + Duration.toMillis(TTL) + 10_000
    while (!(yield* witnessWorks) && (yield* Clock.currentTimeMillis) < settleBy) yield* Effect.sleep("20 millis")
    if (!(yield* witnessWorks)) {
      // What holds it up: the keys left under the group, and the witness's own runs.
      const left = yield* Effect.scoped(Effect.gen(function*() {
        const etcd = yield* Etcd.make({ endpoints })
        return yield* Effect.promise(() => etcd.client.getAll().prefix(`${group}/`).keys())
      }))
      expect.fail(
        `the witness never got to work; keys left: ${JSON.stringify(left)}; its runs: ${
          JSON.stringify(checker.runs.filter((r) => r.member === "witness"))
        }`
      )
    }
    yield* Fiber.interrupt(witness)
    yield* Scope.close(witnessScope, Exit.void)

    const runs: ReadonlyArray<Run> = checker.runs
    yield* Effect.logInfo(
      `${exclusive}/${variant}: ${runs.length} runs of work in ${(yield* Clock.currentTimeMillis) - start} ms`
    )
    expect(runs.every((r) => Number.isFinite(r.end))).toBe(true)
    expect(selfOverlaps(runs)).toEqual([])
    if (exclusive === "index") expect(indexOverlaps(runs)).toEqual([])
    if (exclusive === "group") expect(shareOverlaps(runs)).toEqual([])

    // Nothing left behind once crashed leases have expired: no member, lock or handover key.
    const etcd = yield* Etcd.make({ endpoints })
    const deadline = (yield* Clock.currentTimeMillis) + Duration.toMillis(TTL) + 3_000
    let keys: ReadonlyArray<string> = []
    do {
      keys = yield* Effect.promise(() => etcd.client.getAll().prefix(`${group}/`).keys())
      if (keys.length > 0) yield* Effect.sleep("100 millis")
    } while (keys.length > 0 && (yield* Clock.currentTimeMillis) < deadline)
    expect(keys).toEqual([])
  })

layer(EtcdEndpoints.layer, { timeout: "60 seconds", excludeTestServices: true })("runAssigned under churn", (it) => {
  for (const variant of ["graceful", "paused", "crashed"] as const) {
    for (const exclusive of ["index", "group"] as const) {
      it.scoped(`${exclusive} mode, ${variant} members: no forbidden overlap`, () => scenario(exclusive, variant, 42), {
        timeout: 60_000
      })
    }
  }
  it.scoped("none mode: each member stops its work before starting the next", () => scenario("none", "graceful", 7), {
    timeout: 60_000
  })

  it("the checker finds what it must", () => {
    const run = (member: string, index: number, count: number, start: number, end: number): Run => ({
      member,
      index,
      count,
      revision: 1,
      fence: 1,
      shares: Array.from({ length: 12 }, (_, s) => s).filter((s) => s % count === index),
      start,
      end
    })
    expect(indexOverlaps([run("a", 0, 3, 0, 10), run("b", 0, 4, 5, 15)])).toHaveLength(1)
    expect(indexOverlaps([run("a", 0, 3, 0, 10), run("b", 0, 4, 10, 15)])).toHaveLength(0)
    // 0/3 and 3/4 both own shard 3: index locks alone do not prevent this, the group handover must.
    expect(shareOverlaps([run("a", 0, 3, 0, 10), run("b", 3, 4, 5, 15)])).toHaveLength(1)
    expect(shareOverlaps([run("a", 0, 2, 0, 10), run("b", 1, 2, 5, 15)])).toHaveLength(0)
    expect(selfOverlaps([run("a", 0, 2, 0, 10), run("a", 0, 3, 9, 15)])).toHaveLength(1)
  })
})
