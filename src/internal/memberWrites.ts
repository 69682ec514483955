/**
 * A client's member key creates, written together: the members a client adds at one moment (a process joining five
 * hundred at once, or its members registering again after its lease was lost) go to etcd as a few transactions, not
 * one each. Every process watching the group then reads a few watch responses instead of one per member: a storm of
 * N joins from P processes costs each watcher about P responses, not N, and that per-response work is what a storm
 * spends most of its CPU on. Members written together share a create revision; the view orders them by name.
 *
 * A create waits one event-loop turn for others to join it. At most {@link maxInFlight} transactions are in flight;
 * each holds one lease's keys (a lease etcd no longer knows fails only its own members), at most {@link maxKeys} of
 * them and about {@link maxBytes}. Each key is created only if absent, else read in the same transaction: a create
 * tried again after its answer was lost finds the key its earlier try wrote, and makes no second event.
 */
import { Deferred, Effect, Exit, FiberId, FiberSet, type Scope } from "effect"
import * as Api from "./etcd/api.js"

/** A member key's place, as written (or found written by an earlier try). */
export interface Created {
  readonly createRevision: number
  readonly modRevision: number
}

export interface MemberWrites {
  /**
   * Creates `key` with `value` under `lease`, or finds it created. Fails with the transaction's error (all of its
   * batch fail alike). Interrupted, a create not sent yet is dropped; one in flight is waited for, so that no key
   * lands after its owner's cleanup ran.
   */
  readonly create: (key: string, value: string, lease: string) => Effect.Effect<Created, Api.RequestError>
}

/** etcd refuses a transaction of more than `--max-txn-ops` (128 by default) compares or operations per branch. */
const maxKeys = 64
/** etcd refuses a request over `--max-request-bytes` (1.5 MiB by default); a larger value goes alone. */
const maxBytes = 512 * 1024
/** Transactions in flight per client: a slow moment is met by a few requests waiting, not by hundreds. */
const maxInFlight = 4

interface Pending {
  readonly key: string
  readonly value: string
  readonly lease: string
  readonly done: Deferred.Deferred<Created, Api.RequestError>
  sent: boolean
}

export const make = (api: Api.EtcdApi): Effect.Effect<MemberWrites, never, Scope.Scope> =>
  Effect.gen(function*() {
    const run = yield* FiberSet.makeRuntime<never, void, never>()
    const queue: Array<Pending> = []
    let inFlight = 0
    let scheduled = false
    let closed = false
    // Runs before the FiberSet's own finalizer (added first): creates never sent end interrupted, as their waiters.
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        closed = true
        for (const pending of queue.splice(0)) Deferred.unsafeDone(pending.done, Exit.interrupt(FiberId.none))
      })
    )

    // --- A batch: the first queued create's lease, as many of its keys as fit ---
    const takeBatch = (): ReadonlyArray<Pending> => {
      const lease = queue[0]!.lease
      const batch: Array<Pending> = []
      const rest: Array<Pending> = []
      let bytes = 0
      for (const pending of queue) {
        const size = pending.key.length + pending.value.length
        const fits = pending.lease === lease && batch.length < maxKeys &&
          (batch.length === 0 || bytes + size <= maxBytes)
        if (fits) {
          pending.sent = true
          batch.push(pending)
          bytes += size
        } else rest.push(pending)
      }
      queue.splice(0, queue.length, ...rest)
      return batch
    }

    // --- Its transaction: every key created if absent, else read; keys absent on a failed compare go again ---
    const settle = (batch: ReadonlyArray<Pending>, exit: Exit.Exit<Api.TxnResult, Api.RequestError>) => {
      if (Exit.isFailure(exit)) {
        for (const pending of batch) Deferred.unsafeDone(pending.done, Exit.failCause(exit.cause))
        return
      }
      const result = exit.value
      batch.forEach((pending, i) => {
        // Written now, or found written by an earlier try; the key's place either way.
        const place = result.succeeded
          ? { createRevision: result.revision, modRevision: result.revision }
          : Api.rangeKv(result.results[i])
        if (place !== undefined) {
          Deferred.unsafeDone(
            pending.done,
            Exit.succeed({ createRevision: place.createRevision, modRevision: place.modRevision })
          )
        } else {
          // Absent: another key of the batch failed the compare (an earlier try of its own landed). Written next time.
          pending.sent = false
          queue.unshift(pending)
        }
      })
    }
    const send = (batch: ReadonlyArray<Pending>) =>
      api.txn({
        compare: batch.map(({ key }) => ({ key, target: "create", result: "equal", value: 0 })),
        success: batch.map(({ key, lease, value }) => ({ _tag: "Put", key, value, lease })),
        failure: batch.map(({ key }) => ({ _tag: "Range", range: { target: { key } } }))
      }).pipe(
        Effect.onExit((exit) => Effect.sync(() => settle(batch, exit))),
        Effect.ignore,
        Effect.ensuring(Effect.sync(() => {
          inFlight--
          pump()
        }))
      )

    // --- The pump: after one event-loop turn, as many batches as may be in flight ---
    const pump = (): void => {
      if (scheduled || queue.length === 0 || inFlight >= maxInFlight) return
      scheduled = true
      setImmediate(() => {
        scheduled = false
        while (!closed && queue.length > 0 && inFlight < maxInFlight) {
          inFlight++
          run(send(takeBatch()))
        }
      })
    }

    return {
      create: (key, value, lease) =>
        Effect.suspend(() => {
          if (closed) return Effect.interrupt
          const pending: Pending = { key, value, lease, done: Deferred.unsafeMake(FiberId.none), sent: false }
          queue.push(pending)
          pump()
          return Deferred.await(pending.done).pipe(
            Effect.onInterrupt(() =>
              pending.sent
                ? Effect.ignore(Deferred.await(pending.done))
                : Effect.sync(() => {
                  const at = queue.indexOf(pending)
                  if (at >= 0) queue.splice(at, 1)
                })
            )
          )
        })
    }
  })
