/**
 * The runners' argument forms: the work first (`runShards(work, options)`, `runAssigned(work, options)`), data-last
 * (`runShards(options)(work)`), and runShards' options-first order of 0.1.0, still accepted. Each form runs the same.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Layer, Ref } from "effect"
import { Etcd, EtcdSeq, MemoryEtcd, type Shard } from "../src/index.js"
import { settle } from "./support/testClock.js"

const membership = (key: string) => EtcdSeq.layer({ key, ttl: "3 seconds" }).pipe(Layer.provide(Etcd.layerMemory))

/** Runs `runner` in a membership of its own until every one of 4 shards ran; the ids it ran, sorted. */
const shardsRunBy = (
  key: string,
  runner: (work: (shard: Shard) => Effect.Effect<void>) => Effect.Effect<never, unknown, EtcdSeq>
) =>
  Effect.gen(function*() {
    const ran = yield* Ref.make<ReadonlyArray<number>>([])
    const fiber = yield* runner((shard) =>
      Ref.update(ran, (ids) => [...ids, shard.id]).pipe(Effect.zipRight(Effect.never))
    )
      .pipe(Effect.provide(membership(key)), Effect.fork)
    yield* settle
    yield* Fiber.interrupt(fiber)
    return [...(yield* Ref.get(ran))].sort((a, b) => a - b)
  })

describe("the runners' argument forms", () => {
  it.scoped("runShards: work first, data-last, and the deprecated options first run every shard alike", () =>
    Effect.gen(function*() {
      expect(yield* shardsRunBy("g/forms-1", (work) => EtcdSeq.runShards(work, { shards: 4 }))).toEqual([0, 1, 2, 3])
      expect(yield* shardsRunBy("g/forms-2", (work) => EtcdSeq.runShards({ shards: 4 })(work))).toEqual([0, 1, 2, 3])

      expect(yield* shardsRunBy("g/forms-3", (work) => EtcdSeq.runShards({ shards: 4 }, work))).toEqual([0, 1, 2, 3])
    }).pipe(Effect.provide(MemoryEtcd.layer)))

  it.scoped("runShards refuses a bad number of shards in every form, before any I/O", () =>
    Effect.gen(function*() {
      const work = () => Effect.never
      for (const run of [EtcdSeq.runShards(work, { shards: 0 }), EtcdSeq.runShards({ shards: 0 })(work)]) {
        const error = yield* Effect.flip(run.pipe(Effect.provide(membership("g/forms-bad"))))
        expect(error).toMatchObject({ _tag: "InvalidOptions", field: "shards" })
      }
    }).pipe(Effect.provide(MemoryEtcd.layer)))

  it.scoped("runAssigned: work first and data-last give the work the same assignment", () =>
    Effect.gen(function*() {
      const seen = yield* Ref.make<ReadonlyArray<string>>([])
      const work = (a: { readonly info: { toString(): string } }) =>
        Ref.update(seen, (all) => [...all, a.info.toString().split("@")[0]!]).pipe(Effect.zipRight(Effect.never))
      for (
        const run of [
          EtcdSeq.runAssigned(work, { exclusive: "index" }),
          EtcdSeq.runAssigned({ exclusive: "index" })(work)
        ]
      ) {
        const fiber = yield* run.pipe(Effect.provide(membership("g/forms-assigned")), Effect.fork)
        yield* settle
        yield* Fiber.interrupt(fiber)
      }
      expect(yield* Ref.get(seen)).toEqual(["0/1", "0/1"])
    }).pipe(Effect.provide(MemoryEtcd.layer)))
})
