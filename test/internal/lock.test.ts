/**
 * The index lock against a real etcd: contenders in create-revision order, each waiting for its predecessor's key
 * alone, and an acquisition that only counts while the contender's own key still exists.
 */
import { expect, layer } from "@effect/vitest"
import { Clock, Effect, Exit, Fiber, Scope } from "effect"
import type { Etcd3Client } from "../../src/Etcd.js"
import * as Lock from "../../src/internal/lock.js"
import { EtcdEndpoints } from "../support/etcd.js"
import { client, sharedOf, uniqueGroup } from "../support/members.js"

/** A counter or gauge from etcd's Prometheus endpoint. */
const etcdMetric = (endpoint: string, name: string) =>
  Effect.promise(async () => {
    const text = await (await fetch(`${endpoint}/metrics`)).text()
    const line = text.split("\n").find((l) => l.startsWith(`${name} `))
    return Number(line?.split(" ")[1] ?? Number.NaN)
  })

const grant = (etcd: Etcd3Client) =>
  Effect.acquireRelease(
    Effect.promise(() => etcd.client.lease(30, { autoKeepAlive: false }).grant()),
    (id) => Effect.promise(() => etcd.client.leaseClient.leaseRevoke({ ID: id }).catch(() => undefined))
  )

const hex = (leaseId: string) => BigInt(leaseId).toString(16)

/** Takes the lock in a scope of its own; `release` closes it. */
const contend = (etcd: Etcd3Client, prefix: string, leaseId: string, n: number) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const shared = sharedOf(etcd)
    const fiber = yield* Lock.acquire(
      shared.api,
      prefix,
      { owner: `${hex(leaseId)}_${n}`, run: 0, leaseId },
      shared.leases.retryInBackground,
      shared.owned,
      Effect.never
    ).pipe(Scope.extend(scope), Effect.either, Effect.fork)
    yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
    return { fiber, key: `${prefix}${hex(leaseId)}_${n}.0`, release: Scope.close(scope, Exit.void) }
  })

const keys = (etcd: Etcd3Client, prefix: string) => Effect.promise(() => etcd.client.getAll().prefix(prefix).keys())

const until = (check: Effect.Effect<boolean>, within = 5_000) =>
  Effect.gen(function*() {
    const deadline = (yield* Clock.currentTimeMillis) + within
    while (!(yield* check)) {
      if ((yield* Clock.currentTimeMillis) > deadline) return yield* Effect.dieMessage("condition not met in time")
      yield* Effect.sleep("10 millis")
    }
  })

layer(EtcdEndpoints.layer, { timeout: "60 seconds", excludeTestServices: true })("index lock", (it) => {
  it.scoped("a contender whose own key went while it waited does not get the lock", () =>
    Effect.gen(function*() {
      const etcd = yield* client
      const prefix = `${uniqueGroup("own-key")}/locks/0/`
      const holder = yield* contend(etcd, prefix, yield* grant(etcd), 0)
      const held = yield* Fiber.join(holder.fiber)
      expect(held._tag).toBe("Right")
      const waiter = yield* contend(etcd, prefix, yield* grant(etcd), 0)
      yield* until(Effect.map(keys(etcd, prefix), (k) => k.length === 2))
      // The waiter's key goes (its lease revoked, say) while it waits; then the holder releases.
      yield* Effect.promise(() => etcd.client.delete().key(waiter.key).exec())
      yield* holder.release
      const outcome = yield* Fiber.join(waiter.fiber)
      expect(outcome._tag).toBe("Left")
      expect(yield* keys(etcd, prefix)).toEqual([])
    }))

  it.scoped("a release wakes only the next contender: each waits for its predecessor's key alone", () =>
    Effect.gen(function*() {
      const etcd = yield* client
      const { endpoints } = yield* EtcdEndpoints
      const prefix = `${uniqueGroup("herd")}/locks/0/`
      const lease = yield* grant(etcd)
      const holder = yield* contend(etcd, prefix, lease, 0)
      expect((yield* Fiber.join(holder.fiber))._tag).toBe("Right")
      const watchersBefore = yield* etcdMetric(endpoints[0]!, "etcd_debugging_mvcc_watcher_total")
      // Queued one after another, so the first of them is the holder's successor.
      const waiters = yield* Effect.forEach([1, 2, 3, 4, 5, 6, 7, 8], (n) =>
        Effect.tap(
          contend(etcd, prefix, lease, n),
          () => until(Effect.map(keys(etcd, prefix), (k) => k.length === n + 1))
        ))
      // Every waiter is queued and watching.
      yield* until(Effect.map(
        etcdMetric(endpoints[0]!, "etcd_debugging_mvcc_watcher_total"),
        (n) => n >= watchersBefore + waiters.length
      ))
      const eventsBefore = yield* etcdMetric(endpoints[0]!, "etcd_debugging_mvcc_events_total")
      yield* holder.release
      expect((yield* Fiber.join(waiters[0]!.fiber))._tag).toBe("Right")
      const eventsSent = (yield* etcdMetric(endpoints[0]!, "etcd_debugging_mvcc_events_total")) - eventsBefore
      // The holder's delete reaches the one waiter behind it, not all eight.
      expect(eventsSent).toBeLessThanOrEqual(2)
      for (const waiter of waiters) yield* waiter.release
    }))
})
