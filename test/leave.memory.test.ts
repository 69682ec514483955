/**
 * A graceful leave waits for the member's work to stop, at most the TTL, before it deletes the member's keys: however
 * the membership's scope closes. Scopes closed by `Effect.scoped` or a layer run their finalizers uninterruptibly,
 * where a bare `Effect.timeout` never fires (the leave then waited for good on a work whose stop never ends).
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Layer, Scope } from "effect"
import { Etcd, EtcdSeq, MemoryEtcd } from "../src/index.js"
import { advance, settle } from "./support/testClock.js"

/** Work whose stop never ends: its finalizer waits forever. */
const stuck = EtcdSeq.runAssigned(() =>
  Effect.acquireRelease(Effect.void, () => Effect.never).pipe(Effect.zipRight(Effect.never))
)

describe("a leave whose work never stops", () => {
  it.scoped.each(
    [
      ["Scope.close in a fiber", "fiber"],
      ["Effect.scoped", "scoped"],
      ["a layer's scope", "layer"]
    ] as const
  )("closed by %s: bounded by the TTL (3 s), then the member's keys are gone", ([, how]) =>
    Effect.gen(function*() {
      const memory = yield* MemoryEtcd
      const group = `g/leave-${how}`
      const client = yield* Layer.build(Etcd.layerMemory)
      const membership = EtcdSeq.make({ key: group, ttl: "3 seconds" }).pipe(Effect.provide(client))
      // The runner in a fiber of its own (not in the membership's scope), as an application may run it.
      const run = (seq: EtcdSeq["Type"]) =>
        stuck.pipe(Effect.provideService(EtcdSeq, seq), Effect.exit, Effect.forkDaemon, Effect.zipRight(settle))
      const leave = how === "fiber"
        ? Effect.gen(function*() {
          const scope = yield* Scope.make()
          yield* run(yield* membership.pipe(Scope.extend(scope)))
          yield* Scope.close(scope, Exit.void)
        })
        : how === "scoped"
        ? Effect.scoped(Effect.flatMap(membership, run))
        : Effect.flatMap(EtcdSeq, run).pipe(
          Effect.provide(
            EtcdSeq.layer({ key: group, ttl: "3 seconds" }).pipe(Layer.provide(Layer.succeedContext(client)))
          )
        )
      // A daemon: the test's own end must not wait for it if it never ends.
      const leaving = yield* Effect.forkDaemon(leave)
      yield* advance(2_500)
      expect(leaving.unsafePoll()).toBeNull()
      yield* advance(1_000)
      expect(leaving.unsafePoll()).not.toBeNull()
      expect(yield* memory.read(`${group}/`)).toEqual([])
    }).pipe(Effect.provide(MemoryEtcd.layer)))
})
