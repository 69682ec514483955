/**
 * Writes etcd applies late: a request whose answer never came (it timed out on a slow or paused etcd node) and which
 * etcd applies afterwards, after its writer gave up on it and after the delete meant to undo it. Such a key lives on
 * under the writer's lease, which the client's other members keep alive: a claim would block its shard, a lock key
 * its index, a member key would hold an index for nobody. The writer's client sweeps it as soon as it sees it.
 *
 * Over the in-memory etcd under the TestClock, with a client whose one chosen transaction gets no answer (it fails
 * with EtcdUnavailable at the request timeout) and lands only when the test says so.
 */
import { describe, expect, it } from "@effect/vitest"
import { Context, Duration, Effect, Exit, Layer, Scope } from "effect"
import { Etcd, type EtcdClient, EtcdSeq, EtcdUnavailable, MemoryEtcd } from "../src/index.js"
import * as Client from "../src/internal/client.js"
import type * as Api from "../src/internal/etcd/api.js"
import * as Memory from "../src/internal/etcd/memory.js"
import { makeShardChecker, running, shardOverlaps } from "./support/shardChecker.js"
import { advance, settle } from "./support/testClock.js"

const requestTimeout = Duration.seconds(5)

/** A client of the in-memory etcd whose next transaction `matching` a put of a key (once armed) lands late. */
const delayingClient = (matching: (key: string) => boolean) =>
  Effect.gen(function*() {
    const server = Memory.serverOf(yield* MemoryEtcd)
    const api = server.api(server.connect(), requestTimeout)
    const state = { armed: false, held: undefined as Api.Txn | undefined }
    const wrapped: Api.EtcdApi = {
      ...api,
      txn: (txn) => {
        if (state.armed && txn.success.some((op) => op._tag === "Put" && matching(op.key))) {
          state.armed = false
          state.held = txn
          return Effect.sleep(requestTimeout).pipe(
            Effect.zipRight(Effect.fail(new EtcdUnavailable({ endpoints: api.endpoints, timeout: requestTimeout })))
          )
        }
        return api.txn(txn)
      }
    }
    const client = Client.attach<EtcdClient>(
      { endpoints: api.endpoints, connectTimeout: requestTimeout, requestTimeout },
      yield* Client.make(wrapped)
    )
    return {
      client,
      arm: Effect.sync(() => void (state.armed = true)),
      /** etcd applies the transaction now; true when it wrote something. */
      land: Effect.suspend(() =>
        state.held === undefined ? Effect.succeed(false) : Effect.map(api.txn(state.held), (r) => r.succeeded)
      )
    }
  })

const newClient = (scope: Scope.Scope) =>
  Effect.map(Layer.buildWithScope(Etcd.layerMemory, scope), (c) => Context.get(c, Etcd) as EtcdClient)

const keysUnder = (prefix: string) =>
  Effect.flatMap(MemoryEtcd, (memory) => Effect.map(memory.read(prefix), (kvs) => kvs.map((kv) => kv.key)))

describe("writes etcd applies late", () => {
  it.scoped("a shard claim applied after its release is swept, and the shard's next owner runs it", () =>
    Effect.gen(function*() {
      const group = "g/late-claim"
      const checker = makeShardChecker()
      const root = yield* Scope.make()
      const join = (client: EtcdClient, name: string, scope: Scope.Scope) =>
        Effect.gen(function*() {
          const seq = yield* EtcdSeq.make({ key: group, ttl: "3 seconds" }).pipe(
            Effect.provideService(Etcd, client),
            Scope.extend(scope)
          )
          yield* EtcdSeq.runShards({ shards: 6 }, checker.work(name)).pipe(
            Effect.provideService(EtcdSeq, seq),
            Effect.exit,
            Effect.forkIn(scope)
          )
          return seq
        })
      yield* join(yield* newClient(root), "b", root)
      yield* advance(200)
      // a joins on a client whose first claim transaction gets no answer; a's other member keeps its lease alive.
      const x = yield* delayingClient((key) => key.includes("/claims/"))
      yield* x.arm
      yield* join(x.client, "a", root)
      yield* EtcdSeq.make({ key: "g/late-claim-other", ttl: "3 seconds" }).pipe(
        Effect.provideService(Etcd, x.client),
        Scope.extend(root)
      )
      yield* advance(200)
      // c joins: a's shards still waiting on their claim move to c.
      yield* join(yield* newClient(root), "c", root)
      yield* advance(6_000)
      const before = yield* keysUnder(`${group}/claims/`)
      // etcd applies the stuck claims now, long after a released them.
      expect(yield* x.land).toBe(true)
      yield* settle
      yield* advance(1_500)
      expect(yield* keysUnder(`${group}/claims/`)).toEqual(before)
      // More members: every shard finds its owner running it, none waits behind a claim nobody holds.
      for (const name of ["d", "e", "f"]) {
        yield* join(yield* newClient(root), name, root)
        yield* advance(3_000)
      }
      expect(running(checker.runs, 6).filter((owners) => owners.length !== 1)).toEqual([])
      expect(shardOverlaps(checker.runs)).toEqual([])
      yield* Scope.close(root, Exit.void)
    }).pipe(Effect.provide(MemoryEtcd.layer)))

  it.scoped("an index lock key applied after its run gave up is swept, and the index's next holder runs", () =>
    Effect.gen(function*() {
      const group = "g/late-lock"
      const running = new Map<string, string>()
      const join = (client: EtcdClient, name: string, scope: Scope.Scope) =>
        Effect.gen(function*() {
          const seq = yield* EtcdSeq.make({ key: group, ttl: "3 seconds" }).pipe(
            Effect.provideService(Etcd, client),
            Scope.extend(scope)
          )
          yield* EtcdSeq.runAssigned(
            (a) =>
              Effect.acquireRelease(
                Effect.sync(() => running.set(name, `${a.info.index}/${a.info.count}`)),
                () => Effect.sync(() => running.delete(name))
              ).pipe(Effect.zipRight(Effect.never)),
            { exclusive: "index" }
          ).pipe(Effect.provideService(EtcdSeq, seq), Effect.exit, Effect.forkIn(scope))
          return seq
        })
      const bScope = yield* Scope.make()
      const rest = yield* Scope.make()
      yield* join(yield* newClient(bScope), "b", bScope)
      yield* settle
      const x = yield* delayingClient((key) => key.includes("/locks/"))
      yield* x.arm
      yield* join(x.client, "a", rest)
      yield* advance(200)
      // c joins while a's first lock write (index 1) has no answer: a runs 1/3 instead, under a new lock key.
      yield* join(yield* newClient(rest), "c", rest)
      yield* advance(8_000)
      expect(Object.fromEntries(running)).toEqual({ b: "0/3", a: "1/3", c: "2/3" })
      const before = yield* keysUnder(`${group}/locks/`)
      expect(yield* x.land).toBe(true)
      yield* settle
      yield* advance(1_500)
      expect(yield* keysUnder(`${group}/locks/`)).toEqual(before)
      // b leaves: c moves to index 1, which a's stale key would have held for as long as a lives.
      yield* Scope.close(bScope, Exit.void)
      yield* advance(1_000)
      expect(Object.fromEntries(running)).toEqual({ a: "0/2", c: "1/2" })
      yield* Scope.close(rest, Exit.void)
    }).pipe(Effect.provide(MemoryEtcd.layer)))

  it.scoped("a member key created after its member left is swept: no index held for nobody", () =>
    Effect.gen(function*() {
      const group = "g/late-member"
      const x = yield* delayingClient((key) => key.startsWith(`${group}/members/`))
      const other = yield* EtcdSeq.make({ key: group, ttl: "3 seconds" }).pipe(
        Effect.provideService(Etcd, yield* newClient(yield* Effect.scope))
      )
      // Another member of x's client keeps its lease alive throughout.
      yield* EtcdSeq.make({ key: "g/late-member-other", ttl: "3 seconds" }).pipe(
        Effect.provideService(Etcd, x.client)
      )
      // a's first create gets no answer; its retry (the same key) lands, then a leaves.
      yield* x.arm
      const aScope = yield* Scope.make()
      const joining = yield* EtcdSeq.make({ key: group, ttl: "3 seconds" }).pipe(
        Effect.provideService(Etcd, x.client),
        Scope.extend(aScope),
        Effect.fork
      )
      yield* advance(6_000)
      yield* Effect.flatMap(joining.await, (exit) => exit)
      expect((yield* other.members).length).toBe(2)
      yield* Scope.close(aScope, Exit.void)
      yield* settle
      expect(String(yield* other.current)).toMatch(/^0\/1@/)
      // etcd applies a's first create now: the key is absent, so it is created under x's live lease.
      expect(yield* x.land).toBe(true)
      yield* settle
      yield* advance(1_500)
      expect(yield* keysUnder(`${group}/members/`)).toHaveLength(1)
      expect((yield* other.members).length).toBe(1)
      expect(String(yield* other.current)).toMatch(/^0\/1@/)
    }).pipe(Effect.provide(MemoryEtcd.layer)))
})
