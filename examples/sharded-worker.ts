/**
 * A sharded worker: each worker processes only its shares of a key space, restarted per assignment by
 * `EtcdSeq.runAssigned` with `exclusive: "group"`, so no two workers ever process the same share at once, also while
 * the count changes.
 *
 * `npm run example:sharded-worker` runs three workers in one process for a few seconds (each with its own etcd client,
 * as separate processes would): they join one by one, one leaves, and every shard stays owned by exactly one worker.
 * In production each process runs `worker` alone: `worker.pipe(Effect.provide(EtcdSeqLive))`.
 */
import { NodeRuntime } from "@effect/platform-node"
import { Console, Effect, Fiber } from "effect"
import { type Assignment, EtcdSeq, EtcdSeqLive } from "effect-etcdseq"
import { LocalEtcd } from "./localEtcd.js"

const SHARDS = 12

/** The work for one assignment: runs until interrupted, which happens when the assignment changes. */
const processShares = (name: string) => (assignment: Assignment) =>
  Effect.gen(function*() {
    const { count, index } = assignment.info
    const shares = assignment.shares(SHARDS)
    yield* Console.log(`${name} is ${index}/${count} (fence ${assignment.fence}): owns shards ${shares.join(", ")}`)
    // The finalizer is the "stop service": it runs, and completes, before any other worker takes these shards.
    yield* Effect.addFinalizer(() => Console.log(`${name} stops shards ${shares.join(", ")}`))
    return yield* Effect.never
  })

/** One worker process: a membership, and its shares processed exclusively across the group. */
const worker = (name: string) =>
  EtcdSeq.runAssigned(processShares(name), { exclusive: "group" }).pipe(Effect.provide(EtcdSeqLive))

const program = Effect.gen(function*() {
  const a = yield* Effect.forkScoped(worker("worker-a"))
  yield* Effect.sleep("1 second")
  yield* Effect.forkScoped(worker("worker-b"))
  yield* Effect.sleep("1 second")
  yield* Effect.forkScoped(worker("worker-c"))
  yield* Effect.sleep("1 second")
  yield* Console.log("-- worker-a stops; the others take over its shards")
  yield* Fiber.interrupt(a)
  yield* Effect.sleep("1 second")
  // Closing the scope interrupts the other workers: their work stops, and they leave.
}).pipe(Effect.scoped)

NodeRuntime.runMain(
  program.pipe(Effect.provide(LocalEtcd({ ETCDSEQ_KEY: `examples/workers-${Date.now().toString(36)}` })))
)
