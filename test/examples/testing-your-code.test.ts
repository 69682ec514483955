/**
 * The README's "Testing your code" example, run as a test: three workers over the in-memory etcd, one crashes, the
 * TestClock moves past its TTL, and the survivors take over its shards.
 */
import { expect, it } from "@effect/vitest"
import { Context, Effect, Layer, Stream, SubscriptionRef, TestClock } from "effect"
import { Etcd, EtcdSeq, MemoryEtcd } from "effect-etcdseq"

type Owned = SubscriptionRef.SubscriptionRef<Readonly<Record<string, ReadonlyArray<number>>>>

/** The code under test: a worker that works on the shards of its assignment until they change. */
const worker = (name: string, owned: Owned) =>
  EtcdSeq.runAssigned((assignment) =>
    Effect.acquireRelease(
      SubscriptionRef.update(owned, (all) => ({ ...all, [name]: assignment.shares(12) })),
      () => SubscriptionRef.update(owned, ({ [name]: _, ...others }) => others)
    ).pipe(Effect.zipRight(Effect.never))
  )

/** One process: an etcd client of its own (so a lease of its own), a membership and the worker. */
const startProcess = (name: string, owned: Owned) =>
  Effect.gen(function*() {
    const process = yield* Layer.build(Etcd.layerMemory)
    const seq = yield* EtcdSeq.make({ key: "indexer", ttl: "10 seconds" }).pipe(Effect.provide(process))
    yield* worker(name, owned).pipe(Effect.provideService(EtcdSeq, seq), Effect.forkScoped)
    return Context.get(process, Etcd)
  })

/** Waits until the workers own exactly `expected`. */
const owns = (owned: Owned, expected: Record<string, ReadonlyArray<number>>) =>
  owned.changes.pipe(
    Stream.takeUntil((all) => JSON.stringify(all, Object.keys(all).sort()) === JSON.stringify(expected)),
    Stream.runDrain
  )

it.scoped("a crashed worker's shards move to the others once its lease runs out", () =>
  Effect.gen(function*() {
    const memory = yield* MemoryEtcd
    const owned: Owned = yield* SubscriptionRef.make({})
    yield* startProcess("a", owned)
    yield* startProcess("b", owned)
    const c = yield* startProcess("c", owned)
    yield* owns(owned, { a: [0, 3, 6, 9], b: [1, 4, 7, 10], c: [2, 5, 8, 11] })

    // c loses etcd as a crashed process does: nothing revokes its lease, so the others see it gone only once its
    // TTL has run out. c itself stopped its work before that (its self-fence, 2 s before).
    yield* memory.crash(c)
    yield* TestClock.adjust("9 seconds")
    expect(yield* SubscriptionRef.get(owned)).toEqual({ a: [0, 3, 6, 9], b: [1, 4, 7, 10] })
    yield* TestClock.adjust("1 second")
    yield* owns(owned, { a: [0, 2, 4, 6, 8, 10], b: [1, 3, 5, 7, 9, 11] })
  }).pipe(Effect.provide(MemoryEtcd.layer)))
