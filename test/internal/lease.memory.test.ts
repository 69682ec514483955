/**
 * The lease session against the in-memory etcd under the TestClock: renewal when etcd answers late.
 */
import { expect, it } from "@effect/vitest"
import { Duration, Effect, Exit, Fiber, Option } from "effect"
import { EtcdUnavailable, MemoryEtcd } from "../../src/index.js"
import type * as Api from "../../src/internal/etcd/api.js"
import * as Memory from "../../src/internal/etcd/memory.js"
import * as Lease from "../../src/internal/lease.js"
import * as LeasePool from "../../src/internal/leasePool.js"
import { advance } from "../support/testClock.js"

/**
 * A lease session (TTL 6 s unless given) over the in-memory etcd, each keepalive passed through `late` (given etcd's own), and
 * the fences it raised and lifted.
 */
const lateSession = (
  late: (api: Api.EtcdApi) => Api.EtcdApi["keepAlive"],
  ttl: Duration.Duration = Duration.seconds(6)
) =>
  Effect.gen(function*() {
    const server = Memory.serverOf(yield* MemoryEtcd)
    const api = server.api(server.connect(), Duration.seconds(5))
    const session = yield* Lease.make({ ...api, keepAlive: late(api) }, ttl)
    const fences: Array<boolean> = []
    yield* session.onFence((isFenced) => void fences.push(isFenced))
    return { server, session, fences }
  })

/** Keepalives that renew the lease when they reach etcd, and whose answers come `late` after. */
const answeredAfter =
  (late: Duration.DurationInput) => (api: Api.EtcdApi): Api.EtcdApi["keepAlive"] => (lease, within) =>
    Effect.flatMap(api.keepAlive(lease, within), (answer) => Effect.as(Effect.sleep(late), answer))

it.scoped("an etcd that answers keepalives 2.6 s late, within the TTL (6 s), keeps the lease", () =>
  Effect.gen(function*() {
    // Each keepalive renews the lease when it reaches etcd; its answer comes 2.6 s later. One attempt at a time
    // (due every second, the fence 4.8 s after the last one sent that succeeded) fences: the next one goes out only
    // after that answer and is answered past the fence.
    const { fences, server, session } = yield* lateSession((api) => (lease, within) =>
      Effect.flatMap(api.keepAlive(lease, within), (answer) =>
        Duration.lessThan(within, Duration.millis(2_600))
          ? Effect.zipRight(
            Effect.sleep(within),
            Effect.fail(new EtcdUnavailable({ endpoints: api.endpoints, timeout: within }))
          )
          : Effect.as(Effect.sleep("2600 millis"), answer))
    )
    yield* advance(30_000)
    expect(fences).toEqual([])
    // The lease lives at etcd too.
    expect(server.leases().map((l) => l.id)).toContain(session.id)
  }).pipe(Effect.provide(MemoryEtcd.layer)))

it.scoped("keepalives answered 3.2 s late (TTL 6 s) never fence: the first goes out at TTL/6", () =>
  Effect.gen(function*() {
    // The fence is 4.8 s after the last keepalive sent that succeeded, the grant at first. A keepalive due at TTL/3
    // (2 s) would be answered at 5.2 s, past it; one due at TTL/6 (1 s) is answered at 4.2 s.
    const { fences, session } = yield* lateSession(answeredAfter("3200 millis"))
    const lost = yield* Effect.fork(session.lost)
    yield* advance(30_000)
    expect(fences).toEqual([])
    expect(Option.isNone(yield* Fiber.poll(lost))).toBe(true)
  }).pipe(Effect.provide(MemoryEtcd.layer)))

it.scoped("keepalives answered 5.5 s late (TTL 10 s, request timeout 5 s) never fence: an answer counts while it can", () =>
  Effect.gen(function*() {
    // The fence is 8 s after the last keepalive sent that succeeded, and the first attempt after a success goes 1.7 s
    // after it: its answer still keeps the fence away 6.3 s later. Cut at the request timeout, none would ever count.
    const { fences, server, session } = yield* lateSession(
      (api) => (lease, within) =>
        answeredAfter("5500 millis")(api)(lease, within).pipe(
          Effect.timeoutFail({
            duration: within,
            onTimeout: () => new EtcdUnavailable({ endpoints: api.endpoints, timeout: within })
          })
        ),
      Duration.seconds(10)
    )
    yield* advance(40_000)
    expect(fences).toEqual([])
    expect(server.leases().map((l) => l.id)).toContain(session.id)
  }).pipe(Effect.provide(MemoryEtcd.layer)))

it.scoped("an etcd that renews the lease but always answers too late to lift the fence: given up a TTL after it", () =>
  Effect.gen(function*() {
    // TTL 6 s: the fence 4.8 s after the last keepalive sent that succeeded, lifted only with 0.6 s to spare. Every
    // answer comes 4.5 s after etcd renewed the lease: each moves the fence, never far enough to lift it.
    const { fences, server, session } = yield* lateSession(answeredAfter("4500 millis"))
    const lost = yield* Effect.fork(session.lost)
    yield* advance(10_000)
    expect(fences).toEqual([true])
    expect(Option.isNone(yield* Fiber.poll(lost))).toBe(true)
    // A TTL after the fence (at 4.8 s): given up, though etcd still holds it.
    yield* advance(2_000)
    expect(yield* Fiber.poll(lost)).toEqual(Option.some(Exit.succeed("not proved alive within a TTL of its fence")))
    expect(server.leases().map((l) => l.id)).toContain(session.id)
  }).pipe(Effect.provide(MemoryEtcd.layer)))

it.scoped("a fenced lease leaves the client's pool: a member joining meanwhile gets a lease of its own", () =>
  Effect.gen(function*() {
    const server = Memory.serverOf(yield* MemoryEtcd)
    const api = server.api(server.connect(), Duration.seconds(5))
    // Keepalives of the first lease fail; every other request goes through.
    const silenced = { id: "" }
    const pool = yield* LeasePool.makePool({
      ...api,
      keepAlive: (lease, within) =>
        lease === silenced.id
          ? Effect.fail(new EtcdUnavailable({ endpoints: api.endpoints, timeout: within }))
          : api.keepAlive(lease, within)
    })
    const first = yield* pool.hold(Duration.seconds(6))
    silenced.id = first.id
    const fences: Array<boolean> = []
    yield* first.onFence((isFenced) => void fences.push(isFenced))
    expect((yield* pool.hold(Duration.seconds(6))).id).toBe(first.id)
    // The fence, 4.8 s after the grant.
    yield* advance(5_000)
    expect(fences).toEqual([true])
    const second = yield* pool.hold(Duration.seconds(6))
    expect(second.id).not.toBe(first.id)
    // The new one is kept alive; the fenced one is given up a TTL after its fence, as etcd expires it.
    yield* advance(10_000)
    expect(server.leases().map((l) => l.id)).toEqual([second.id])
  }).pipe(Effect.provide(MemoryEtcd.layer)))
