/**
 * A minimal service that shards work by `(index, count)`: each worker takes the keys whose hash modulo `count` is
 * its `index`, and restarts that work whenever its Info changes.
 *
 * `npm run example:sharding` runs three workers in one process for a few seconds (each with its own etcd client, as
 * separate processes would): they join one by one, one leaves, and every key stays owned by exactly one worker.
 * In production each process runs `worker` alone with `Effect.provide(EtcdSeqLive)`.
 */
import { NodeRuntime } from "@effect/platform-node"
import { Console, Effect, Fiber, Stream } from "effect"
import { EtcdSeq, EtcdSeqLive, Info } from "effect-etcdseq"
import { LocalEtcd } from "./localEtcd.js"

const keys = Array.from({ length: 12 }, (_, i) => `order-${i}`)

/** A stable hash, so every worker agrees on who owns a key. */
const hash = (key: string): number => [...key].reduce((h, c) => (Math.imul(h, 31) + c.charCodeAt(0)) >>> 0, 7)

/** The work for one Info: runs until interrupted, which happens when the Info changes. */
const processShare = (name: string, info: Info) =>
  Effect.gen(function*() {
    const mine = keys.filter((key) => hash(key) % info.count === info.index)
    yield* Console.log(`${name} is ${info.index}/${info.count}: owns ${mine.join(", ")}`)
    yield* Effect.addFinalizer(() => Console.log(`${name} stops work of ${info.index}/${info.count}`))
    yield* Effect.never
  }).pipe(Effect.scoped)

/** One worker: follows its Info, switching to the new share on every change and stopping when invalid. */
const worker = (name: string) =>
  EtcdSeq.changes.pipe(
    Stream.flatMap(
      (info) => Info.isValid(info) ? Stream.fromEffect(processShare(name, info)) : Stream.empty,
      { switch: true }
    ),
    Stream.runDrain,
    Effect.provide(EtcdSeqLive)
  )

const program = Effect.gen(function*() {
  const a = yield* Effect.forkScoped(worker("worker-a"))
  yield* Effect.sleep("1 second")
  yield* Effect.forkScoped(worker("worker-b"))
  yield* Effect.sleep("1 second")
  yield* Effect.forkScoped(worker("worker-c"))
  yield* Effect.sleep("1 second")
  yield* Console.log("-- worker-a stops; the others take over its keys")
  yield* Fiber.interrupt(a)
  yield* Effect.sleep("1 second")
  // Closing the scope interrupts the other workers: their work stops, and they leave.
}).pipe(Effect.scoped)

NodeRuntime.runMain(
  program.pipe(Effect.provide(LocalEtcd({ ETCDSEQ_KEY: `examples/sharding-${Date.now().toString(36)}` })))
)
