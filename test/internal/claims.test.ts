/**
 * The claims writer: writes asked for in one turn go in one transaction, as etcd accepts them.
 */
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Fiber, Layer } from "effect"
import { Etcd, MemoryEtcd } from "../../src/index.js"
import * as Claims from "../../src/internal/claims.js"
import { sharedOf } from "../support/members.js"

const setup = Effect.gen(function*() {
  const shared = sharedOf(Context.get(yield* Layer.build(Etcd.layerMemory), Etcd))
  const api = shared.api
  const lease = yield* api.grant(10)
  const failed: Array<unknown> = []
  const writer = yield* Claims.writer(
    api,
    (effect) => Effect.ignore(Effect.tapError(effect, (e) => Effect.sync(() => failed.push(e)))),
    shared.owned
  )
  return { api, lease, writer, failed }
})

describe("claims writer", () => {
  it.scoped("a claim released in the turn it was asked for: one key written twice, which etcd would refuse", () =>
    Effect.gen(function*() {
      const { api, lease, writer } = yield* setup
      // Asked for in one turn: a claim, another claim, and the release of the first (its shard stopped at once).
      const first = yield* Effect.fork(writer.claim("g/claims/1/m.1", lease))
      const second = yield* Effect.fork(writer.claim("g/claims/2/m.2", lease))
      // The forks run (and ask) before the writer's next event-loop turn.
      yield* Effect.yieldNow()
      yield* writer.release("g/claims/1/m.1")
      // Neither claim fails: without the merge both would, the whole transaction refused.
      expect(yield* Fiber.join(first)).toBeUndefined()
      expect(yield* Fiber.join(second)).toBeUndefined()
      const kvs = (yield* api.range({ target: { prefix: "g/claims/" } })).kvs
      expect(kvs.map((kv) => kv.key)).toEqual(["g/claims/2/m.2"])
    }).pipe(Effect.provide(MemoryEtcd.layer)))

  it.scoped("more than 128 claims at once go in several transactions", () =>
    Effect.gen(function*() {
      const { api, lease, writer } = yield* setup
      yield* Effect.forEach(
        Array.from({ length: 300 }, (_, s) => `g/claims/${s}/m.${s}`),
        (key) => writer.claim(key, lease),
        { concurrency: "unbounded", discard: true }
      )
      expect((yield* api.range({ target: { prefix: "g/claims/" } })).kvs).toHaveLength(300)
    }).pipe(Effect.provide(MemoryEtcd.layer)))
})
