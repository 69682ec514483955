/**
 * A plain etcd3 client and a raw watcher on a group's prefix: the reference for when etcd delivered an event, on
 * its own connection, with no library in between.
 */
import { Deferred, Duration, Effect, Option, type Scope } from "effect"
import { Etcd3, type IKeyValue } from "etcd3"
import { BenchError } from "./etcdMetrics.js"
import { unsafeNowMs } from "./runtime.js"

/** A bare `Etcd3` client, closed with the scope. */
export const rawClient = (endpoints: ReadonlyArray<string>): Effect.Effect<Etcd3, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => new Etcd3({ hosts: [...endpoints] })),
    (client) => Effect.sync(() => client.close())
  )

/** Waits for a promise, bounded, as a `BenchError` when it fails or takes too long. */
export const bounded = <A>(
  what: string,
  run: () => Promise<A>,
  bound: Duration.DurationInput = Duration.seconds(10)
): Effect.Effect<A, BenchError> =>
  Effect.tryPromise({ try: run, catch: (cause) => new BenchError({ message: `${what} failed`, cause }) }).pipe(
    Effect.timeoutFail({
      duration: bound,
      onTimeout: () => new BenchError({ message: `${what}: no answer within ${Duration.format(bound)}` })
    })
  )

interface ProbeEvent {
  readonly type: "put" | "delete"
  readonly key: string
  /** When the event reached the probe (ms on the benchmark clock). */
  readonly at: number
}

export interface Probe {
  /** The first event of this type at or after `since` (and for `key`, when given); waits for it, bounded. */
  readonly next: (
    type: "put" | "delete",
    since: number,
    bound: Duration.DurationInput,
    key?: string
  ) => Effect.Effect<Option.Option<ProbeEvent>>
}

/** Records the time every event under `prefix` arrives, on its own client, for the life of the scope. */
export const makeProbe = (
  endpoints: ReadonlyArray<string>,
  prefix: string
): Effect.Effect<Probe, BenchError, Scope.Scope> =>
  Effect.gen(function*() {
    const client = yield* rawClient(endpoints)
    const events: Array<ProbeEvent> = []
    const waiters = new Set<Deferred.Deferred<void>>()
    const record = (type: "put" | "delete") => (kv: IKeyValue) => {
      // Stamped in the callback: the arrival time, before any scheduling of ours.
      events.push({ type, key: kv.key.toString(), at: unsafeNowMs() })
      for (const waiter of waiters) Deferred.unsafeDone(waiter, Effect.void)
      waiters.clear()
    }
    const watcher = yield* Effect.acquireRelease(
      bounded("creating the probe watcher", () => client.watch().prefix(prefix).create()),
      (w) => bounded("cancelling the probe watcher", () => w.cancel()).pipe(Effect.ignore)
    )
    watcher.on("put", record("put"))
    watcher.on("delete", record("delete"))
    watcher.on("error", () => {})

    const find = (type: "put" | "delete", since: number, key?: string) =>
      Option.fromNullable(events.find((e) => e.type === type && e.at >= since && (key === undefined || e.key === key)))

    const next: Probe["next"] = (type, since, bound, key) =>
      Effect.gen(function*() {
        // Each turn waits for one more event; the timeout below bounds the whole wait.
        while (true) {
          const found = find(type, since, key)
          if (Option.isSome(found)) return found
          const wake = yield* Deferred.make<void>()
          waiters.add(wake)
          yield* Deferred.await(wake)
        }
      }).pipe(Effect.timeoutTo({ duration: bound, onSuccess: (x) => x, onTimeout: () => find(type, since, key) }))
    return { next }
  })
