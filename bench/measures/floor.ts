/**
 * The floor: how long etcd itself takes from a put to the watch event, measured with the bare etcd3 client. No
 * membership scheme can tell members of a change faster than etcd tells one watcher.
 */
import { Deferred, Duration, Effect, Fiber } from "effect"
import type { IKeyValue } from "etcd3"
import { BenchError } from "./etcdMetrics.js"
import { bounded, rawClient } from "./probe.js"
import { nowMs, unsafeNowMs } from "./runtime.js"
import { summarize, type Summary } from "./stats.js"

export interface FloorOptions {
  readonly endpoints: ReadonlyArray<string>
  /** Key the floor writes; watched alone. */
  readonly key: string
  readonly samples: number
  /** Puts before the measured ones, not counted (connection set-up, JIT). */
  readonly warmup: number
}

const eventWithin = Duration.seconds(5)

/** Sequential puts to one key; each sample is the time from issuing the put to its watch event's arrival. */
export const measureFloor = (options: FloorOptions): Effect.Effect<Summary, BenchError> =>
  Effect.scoped(Effect.gen(function*() {
    const client = yield* rawClient(options.endpoints)
    const waiting = new Map<string, Deferred.Deferred<number>>()
    const watcher = yield* Effect.acquireRelease(
      bounded("creating the floor watcher", () => client.watch().key(options.key).create()),
      (w) => bounded("cancelling the floor watcher", () => w.cancel()).pipe(Effect.ignore)
    )
    watcher.on("put", (kv: IKeyValue) => {
      const arrived = unsafeNowMs()
      const value = kv.value.toString()
      const waiter = waiting.get(value)
      if (waiter === undefined) return
      waiting.delete(value)
      Deferred.unsafeDone(waiter, Effect.succeed(arrived))
    })
    watcher.on("error", () => {})

    const samples: Array<number> = []
    for (let i = 0; i < options.warmup + options.samples; i++) {
      const value = `floor-${i}`
      const arrived = yield* Deferred.make<number>()
      waiting.set(value, arrived)
      const sent = yield* nowMs
      // The event can arrive before the put's own response; both are awaited, the event is what is timed.
      const put = yield* Effect.fork(bounded("floor put", () => client.put(options.key).value(value).exec()))
      const at = yield* Deferred.await(arrived).pipe(
        Effect.timeoutFail({
          duration: eventWithin,
          onTimeout: () =>
            new BenchError({ message: `no watch event for a put within ${Duration.format(eventWithin)}` })
        })
      )
      yield* Fiber.join(put)
      if (i >= options.warmup) samples.push(at - sent)
    }
    yield* bounded("floor clean-up", () => client.delete().key(options.key).exec()).pipe(Effect.ignore)
    return summarize(samples)
  }))
