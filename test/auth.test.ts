/**
 * etcd with auth enabled. etcd3 opens one watch stream per client and sends the client's token once, when the stream
 * opens; etcd checks it on every watch created on that stream. Simple tokens die after `--auth-token-ttl` without a
 * unary request, and all of them with an etcd restart: a watch created after that on the old stream is refused, and
 * etcd3 then stops attaching watches to that stream at all. These tests use a 2 s token TTL and check that views,
 * joins, index lock waits and group handover waits keep working on clients whose stream carries a dead token.
 */
import { describe, expect, it } from "@effect/vitest"
import { Clock, Deferred, Duration, Effect, Redacted, Ref } from "effect"
import { Etcd3, Range } from "etcd3"
import type { EtcdClient } from "../src/Etcd.js"
import { type Assignment, Etcd, EtcdSeq, type EtcdSeqService, type Exclusive } from "../src/index.js"
import { type EtcdNode, startEtcd } from "./support/etcd.js"
import { uniqueGroup, waitForInfo } from "./support/members.js"

/** etcd's `--auth-token-ttl`, in seconds. */
const tokenTtl = 2
/**
 * How long a client must stay idle for its token to be gone: etcd drops a simple token `tokenTtl` after its last use,
 * checking once a second.
 */
const tokenExpiry = Duration.millis(tokenTtl * 1_000 + 1_500)

const user = { username: "seq", password: Redacted.make("seq-secret") }

/** A fresh etcd with auth on: `root`, and `seq` with a role that may read and write `test/` only. */
const authEtcd = Effect.gen(function*() {
  const node = yield* startEtcd({ name: "auth", args: ["--auth-token-ttl", String(tokenTtl)] })
  yield* Effect.acquireUseRelease(
    Effect.sync(() => new Etcd3({ hosts: [node.clientUrl] })),
    (setup) =>
      Effect.promise(async () => {
        await setup.user("root").create("root-secret")
        await setup.role("root").create()
        await setup.user("root").addRole("root")
        await setup.role("seq").create()
        await setup.role("seq").grant({ permission: "Readwrite", range: Range.prefix("test/") })
        await setup.user(user.username).create(Redacted.value(user.password))
        await setup.user(user.username).addRole("seq")
        await setup.auth.authEnable({})
      }),
    (setup) => Effect.sync(() => setup.close())
  )
  return node
})

/** A library client logged in as `seq`, closed with the scope. */
const connect = (node: EtcdNode) => Etcd.make({ endpoints: [node.clientUrl], auth: user })

/** A plain etcd3 client logged in as `seq`, for the test's own keys. */
const plainClient = (node: EtcdNode) =>
  Effect.acquireRelease(
    Effect.sync(() =>
      new Etcd3({ hosts: [node.clientUrl], auth: { username: user.username, password: Redacted.value(user.password) } })
    ),
    (client) => Effect.sync(() => client.close())
  )

const join = (etcd: EtcdClient, group: string) =>
  EtcdSeq.make({ key: group, ttl: "10 seconds" }).pipe(Effect.provideService(Etcd, etcd))

/** Runs `runAssigned` for the life of the scope, recording each assignment when its work starts. */
const runAssigned = (seq: EtcdSeqService, exclusive: Exclusive) =>
  Effect.gen(function*() {
    const started = yield* Ref.make<ReadonlyArray<Assignment>>([])
    yield* EtcdSeq.runAssigned(
      (assignment) => Effect.zipRight(Ref.update(started, (all) => [...all, assignment]), Effect.never),
      { exclusive }
    ).pipe(Effect.provideService(EtcdSeq, seq), Effect.forkScoped)
    return started
  })

/** Polls the test's own records until `check` holds; dies after `within`. */
const eventually = (what: string, check: Effect.Effect<boolean>, within: Duration.DurationInput = "5 seconds") =>
  Effect.gen(function*() {
    const deadline = (yield* Clock.currentTimeMillis) + Duration.toMillis(Duration.decode(within))
    while (!(yield* check)) {
      if ((yield* Clock.currentTimeMillis) > deadline) {
        return yield* Effect.dieMessage(`${what}: not within ${Duration.format(Duration.decode(within))}`)
      }
      yield* Effect.sleep("20 millis")
    }
  })

const startedAs = (started: Ref.Ref<ReadonlyArray<Assignment>>, index: number, count: number) =>
  Effect.map(Ref.get(started), (all) => all.some((a) => a.info.index === index && a.info.count === count))

describe("etcd with auth: watches on a stream whose token died", () => {
  it.live(
    "after the token expired while idle, a new group on existing clients converges and existing views keep flowing",
    () =>
      Effect.scoped(Effect.gen(function*() {
        const node = yield* authEtcd
        const u = yield* connect(node)
        const v = yield* connect(node)
        const old = uniqueGroup("auth-old")
        const a1 = yield* join(u, old)
        const a2 = yield* join(v, old)
        yield* waitForInfo(a1, 0, 2)
        yield* waitForInfo(a2, 1, 2)

        // Time must pass: both clients' tokens expire (their watch streams keep carrying them).
        yield* Effect.sleep(tokenExpiry)

        // A new group: a new watch on each client's existing stream.
        const fresh = uniqueGroup("auth-new")
        const b1 = yield* join(u, fresh)
        const b2 = yield* join(v, fresh)
        yield* waitForInfo(b1, 0, 2)
        yield* waitForInfo(b2, 1, 2)

        // The watches of before go on: a join through a third client reaches both old members.
        const w = yield* connect(node)
        const a3 = yield* join(w, old)
        yield* waitForInfo(a3, 2, 3)
        yield* waitForInfo(a1, 0, 3)
        yield* waitForInfo(a2, 1, 3)
        // ...and so does the new group's.
        const b3 = yield* join(w, fresh)
        yield* waitForInfo(b3, 2, 3)
        yield* waitForInfo(b1, 0, 3)
        yield* waitForInfo(b2, 1, 3)
      })),
    30_000
  )

  it.live(
    "across an etcd restart (every token gone), views keep flowing and joins reach every member",
    () =>
      Effect.scoped(Effect.gen(function*() {
        const node = yield* authEtcd
        const u = yield* connect(node)
        const v = yield* connect(node)
        const group = uniqueGroup("auth-restart")
        const a1 = yield* join(u, group)
        const a2 = yield* join(v, group)
        yield* waitForInfo(a1, 0, 2)
        yield* waitForInfo(a2, 1, 2)

        yield* node.restart

        // A join through a client made after the restart reaches the members on the clients of before.
        const w = yield* connect(node)
        const a3 = yield* join(w, group)
        yield* waitForInfo(a3, 2, 3, "10 seconds")
        yield* waitForInfo(a1, 0, 3, "10 seconds")
        yield* waitForInfo(a2, 1, 3, "10 seconds")
        // A new group on the clients of before.
        const other = uniqueGroup("auth-restart-new")
        const b1 = yield* join(u, other)
        const b2 = yield* join(v, other)
        yield* waitForInfo(b1, 0, 2)
        yield* waitForInfo(b2, 1, 2)
      })),
    30_000
  )

  it.live(
    "runAssigned with exclusive \"index\": an index lock wait that starts after the token expired completes",
    () =>
      Effect.scoped(Effect.gen(function*() {
        const node = yield* authEtcd
        const u = yield* connect(node)
        const group = uniqueGroup("auth-index")
        const locks = `${group}/locks/0/`
        const first = yield* join(u, group)
        const firstStarted = yield* runAssigned(first, "index")
        yield* eventually("work of 0/1 started", startedAs(firstStarted, 0, 1))
        // Someone else queues for index 0's lock, behind the member.
        const plain = yield* plainClient(node)
        const lockKeys = Effect.promise(() => plain.getAll().prefix(locks).keys())
        const [held] = yield* lockKeys
        // A contender as the library writes one: named by a member id, bound to that member's lease.
        const lease = yield* Effect.promise(() => plain.lease(60, { autoKeepAlive: false }).grant())
        const someoneElse = `${locks}${BigInt(lease).toString(16)}_0.0`
        yield* Effect.promise(() => plain.put(someoneElse).value("").lease(lease).exec())

        // Time must pass: the token of the member's client expires.
        yield* Effect.sleep(tokenExpiry)

        // A join makes the member 0/2: it gives index 0's lock up and queues for it again, behind the other key, so
        // it waits for that key's delete through a new watch on its client's stream.
        const second = yield* join(yield* connect(node), group)
        const secondStarted = yield* runAssigned(second, "index")
        yield* waitForInfo(first, 0, 2)
        yield* eventually("work of 1/2 started", startedAs(secondStarted, 1, 2))
        yield* eventually(
          "the member queued for index 0 again, under a new key",
          Effect.map(lockKeys, (keys) => keys.length === 2 && !keys.includes(held!))
        )
        // Time must pass: the member reaches its watch a few milliseconds after its key is in (nothing outside the
        // client shows when). A refused watch has made etcd3's stream stop attaching watches by then.
        yield* Effect.sleep("1 second")
        expect(yield* startedAs(firstStarted, 0, 2)).toBe(false)

        yield* Effect.promise(() => plain.leaseClient.leaseRevoke({ ID: lease }))
        yield* eventually("work of 0/2 started once the lock was free", startedAs(firstStarted, 0, 2))
      })),
    30_000
  )

  it.live(
    "runAssigned with exclusive \"group\": a handover wait that starts after the token expired completes",
    () =>
      Effect.scoped(Effect.gen(function*() {
        const node = yield* authEtcd
        const u = yield* connect(node)
        const group = uniqueGroup("auth-group")
        const first = yield* join(u, group)
        yield* waitForInfo(first, 0, 1)

        // Time must pass: the token of the member's client expires.
        yield* Effect.sleep(tokenExpiry)

        // Work waits until the client's handover watch, new on its stream, has seen the member's own publish.
        const firstStarted = yield* runAssigned(first, "group")
        yield* eventually("work of 0/1 started", startedAs(firstStarted, 0, 1))
        // A second member, on a client of its own: the first must see its publish too before working on 0/2.
        const second = yield* join(yield* connect(node), group)
        const secondStarted = yield* runAssigned(second, "group")
        yield* eventually("work of 0/2 started", startedAs(firstStarted, 0, 2))
        yield* eventually("work of 1/2 started", startedAs(secondStarted, 1, 2))
      })),
    30_000
  )

  it.live(
    "a watch of the application's own refused on the shared client does not stall the library's watches",
    () =>
      Effect.scoped(Effect.gen(function*() {
        const node = yield* authEtcd
        const u = yield* connect(node)
        yield* waitForInfo(yield* join(u, uniqueGroup("auth-warm")), 0, 1)

        // Time must pass: the token expires.
        yield* Effect.sleep(tokenExpiry)

        // The application watches through the same etcd3 client: etcd refuses that watch, not one of the library's.
        const refused = yield* Deferred.make<unknown>()
        const watcher = u.client.watch().prefix("test/application/").watcher()
        watcher.on("error", (error) => Deferred.unsafeDone(refused, Effect.succeed(error)))
        expect(String(yield* Deferred.await(refused).pipe(Effect.timeout("5 seconds")))).toMatch(
          /invalid auth token|permission denied/
        )

        const group = uniqueGroup("auth-foreign")
        const m1 = yield* join(u, group)
        const m2 = yield* join(yield* connect(node), group)
        yield* waitForInfo(m1, 0, 2)
        yield* waitForInfo(m2, 1, 2)
      })),
    30_000
  )
})
