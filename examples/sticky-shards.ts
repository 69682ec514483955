/**
 * Sticky shards: 12 shards split among the workers by `EtcdSeq.runShards`. Each shard runs in a fiber of its own; a
 * join or a leave moves only the shards that must move, and every other shard keeps running untouched. A moved shard
 * starts at its new owner only after its old owner's work stopped.
 *
 * `npm run example:sticky-shards` runs three workers in one process for a few seconds (each with its own etcd client,
 * as separate processes would): they join one by one, then one leaves. Watch how few "start"/"stop" lines each change
 * prints, against `npm run example:sharded-worker`, where every worker restarts on every change.
 * In production each process runs `worker` alone: `worker.pipe(Effect.provide(EtcdSeqLive))`.
 */
import { NodeRuntime } from "@effect/platform-node"
import { Console, Effect, Fiber } from "effect"
import { EtcdSeq, EtcdSeqLive, type Shard } from "effect-etcdseq"
import { LocalEtcd } from "./localEtcd.js"

/** The work for one shard: runs until the shard moves away or the worker stops. */
const consume = (name: string) => (shard: Shard) =>
  Effect.gen(function*() {
    yield* Console.log(`${name} starts shard ${shard.id} (fence ${shard.fence})`)
    // The finalizer is the "stop": it completes before the shard's next owner starts it.
    yield* Effect.addFinalizer(() => Console.log(`${name} stops shard ${shard.id}`))
    return yield* Effect.never
  })

const worker = (name: string) => EtcdSeq.runShards(consume(name), { shards: 12 }).pipe(Effect.provide(EtcdSeqLive))

const program = Effect.gen(function*() {
  const a = yield* Effect.forkScoped(worker("worker-a"))
  yield* Effect.sleep("1 second")
  yield* Console.log("-- worker-b joins")
  yield* Effect.forkScoped(worker("worker-b"))
  yield* Effect.sleep("1 second")
  yield* Console.log("-- worker-c joins")
  yield* Effect.forkScoped(worker("worker-c"))
  yield* Effect.sleep("1 second")
  yield* Console.log("-- worker-a stops; only its shards move")
  yield* Fiber.interrupt(a)
  yield* Effect.sleep("1 second")
}).pipe(Effect.scoped)

NodeRuntime.runMain(
  program.pipe(Effect.provide(LocalEtcd({ ETCDSEQ_KEY: `examples/shards-${Date.now().toString(36)}` })))
)
