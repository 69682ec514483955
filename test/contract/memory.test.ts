/**
 * The seam's contract against the in-memory etcd, under the TestClock.
 */
import { describe, it } from "@effect/vitest"
import { Context, Effect, Layer, TestClock } from "effect"
import { Etcd, MemoryEtcd } from "../../src/index.js"
import { sharedOf } from "../support/members.js"
import { contract } from "./seam.js"

let n = 0

describe("seam contract: in memory", () => {
  // A fresh server per test: each test has a TestClock of its own, which the server's leases run on.
  contract<MemoryEtcd>((name, body) => it.scoped(name, () => Effect.provide(body(), MemoryEtcd.layer)), {
    client: Effect.map(Layer.build(Etcd.layerMemory), (context) => sharedOf(Context.get(context, Etcd)).api),
    advance: (duration) => TestClock.adjust(duration),
    until: (check, what) =>
      Effect.gen(function*() {
        // Whatever the clock woke runs once the fibers it woke get their turn.
        for (let turn = 0; turn < 100; turn++) {
          if (yield* check) return
          yield* Effect.yieldNow()
        }
        return yield* Effect.dieMessage(`not after the clock moved: ${what}`)
      }),
    compact: (revision) => Effect.flatMap(MemoryEtcd, (memory) => memory.compact(revision)),
    prefix: (name) => `test/${name}-${n++}/`
  })
})
