/**
 * A client's member key creates and deletes, written together: the members a client adds or removes at one moment (a
 * process joining five hundred at once, its members registering again after its lease was lost, or leaving as it shuts
 * down) go to etcd as a few transactions, not one each. Every process watching the group then reads a few watch
 * responses instead of one per member: a storm of N joins (or leaves) from P processes costs each watcher about P
 * responses, not N, and that per-response work is what a storm spends most of its CPU on. Members written together
 * share a create revision; the view orders them by name.
 *
 * A write waits one event-loop turn for others to join it. At most {@link maxInFlight} transactions of each kind are
 * in flight. A create batch holds one lease's keys (a lease etcd no longer knows fails only its own members), at most
 * {@link maxKeys} of them and about {@link maxBytes}. Each key is created only if absent, else read in the same
 * transaction: a create tried again after its answer was lost finds the key its earlier try wrote, and makes no second
 * event. A delete batch holds at most {@link maxOps} keys, of any lease.
 */
import { type Cause, Deferred, Effect, Exit, FiberId, FiberSet, type Scope } from "effect"
import * as Api from "./etcd/api.js"

/** A member key's place, as written (or found written by an earlier try). */
interface Created {
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
  /**
   * Deletes `keys` (one member's, deleted in one transaction). Fails with the transaction's error. Interruptible even
   * in a finalizer, so that a timeout around it bounds the time queued as well: interrupted, a delete not sent yet is
   * dropped; one in flight goes on without its waiter (a delete landing late undoes nothing, as the member's keys are
   * never reused).
   */
  readonly remove: (keys: ReadonlyArray<string>) => Effect.Effect<void, Api.RequestError>
}

/** etcd refuses a transaction of more than `--max-txn-ops` (128 by default) compares or operations per branch. */
const maxOps = 128
const maxKeys = maxOps / 2
/** etcd refuses a request over `--max-request-bytes` (1.5 MiB by default); a larger value goes alone. */
const maxBytes = 512 * 1024
/** Transactions in flight per client: a slow moment is met by a few requests waiting, not by hundreds. */
const maxInFlight = 4

/** A write of any kind, as its queue and pump see it. */
interface Queued {
  sent: boolean
}

interface Pending<A> extends Queued {
  readonly done: Deferred.Deferred<A, Api.RequestError>
}

interface PendingCreate extends Pending<Created> {
  readonly key: string
  readonly value: string
  readonly lease: string
}

interface PendingDelete extends Pending<void> {
  readonly keys: ReadonlyArray<string>
}

/** One kind of write: its queue, and how a batch is taken from it and sent. */
interface Kind<P extends Queued> {
  readonly queue: Array<P>
  readonly take: (queue: Array<P>) => ReadonlyArray<P>
  readonly send: (batch: ReadonlyArray<P>) => Effect.Effect<unknown, Api.RequestError>
  /** Whether an interrupted waiter of a batch in flight waits for it. */
  readonly awaitSent: boolean
  inFlight: number
  scheduled: boolean
}

export const make = (api: Api.EtcdApi): Effect.Effect<MemberWrites, never, Scope.Scope> =>
  Effect.gen(function*() {
    const run = yield* FiberSet.makeRuntime<never, void, never>()
    let closed = false

    // --- Creates: the first queued create's lease, as many of its keys as fit ---
    const takeCreates = (queue: Array<PendingCreate>): ReadonlyArray<PendingCreate> => {
      const lease = queue[0]!.lease
      const batch: Array<PendingCreate> = []
      const rest: Array<PendingCreate> = []
      let bytes = 0
      for (const pending of queue) {
        const size = pending.key.length + pending.value.length
        const fits = pending.lease === lease && batch.length < maxKeys &&
          (batch.length === 0 || bytes + size <= maxBytes)
        if (fits) {
          batch.push(pending)
          bytes += size
        } else rest.push(pending)
      }
      queue.splice(0, queue.length, ...rest)
      return batch
    }
    // Every key created if absent, else read; keys absent on a failed compare go again.
    const settleCreates = (batch: ReadonlyArray<PendingCreate>, result: Api.TxnResult) =>
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
          creates.queue.unshift(pending)
        }
      })
    const creates: Kind<PendingCreate> = {
      queue: [],
      take: takeCreates,
      send: (batch) =>
        api.txn({
          compare: batch.map(({ key }) => ({ key, target: "create", result: "equal", value: 0 })),
          success: batch.map(({ key, lease, value }) => ({ _tag: "Put", key, value, lease })),
          failure: batch.map(({ key }) => ({ _tag: "Range", range: { target: { key } } }))
        }).pipe(
          Effect.onExit((exit) =>
            Effect.sync(() => Exit.isSuccess(exit) ? settleCreates(batch, exit.value) : failAll(batch, exit.cause))
          )
        ),
      awaitSent: true,
      inFlight: 0,
      scheduled: false
    }

    // --- Deletes: as many members' keys as fit in one transaction ---
    const deletes: Kind<PendingDelete> = {
      queue: [],
      take: (queue) => {
        let ops = 0
        let n = 0
        while (n < queue.length && (n === 0 || ops + queue[n]!.keys.length <= maxOps)) ops += queue[n++]!.keys.length
        return queue.splice(0, n)
      },
      send: (batch) =>
        api.txn({
          compare: [],
          success: batch.flatMap(({ keys }) => keys.map((key) => ({ _tag: "Delete" as const, key })))
        }).pipe(Effect.onExit((exit) =>
          Effect.sync(() => {
            if (Exit.isFailure(exit)) return failAll(batch, exit.cause)
            for (const pending of batch) Deferred.unsafeDone(pending.done, Exit.void)
          })
        )),
      awaitSent: false,
      inFlight: 0,
      scheduled: false
    }

    const failAll = <A>(batch: ReadonlyArray<Pending<A>>, cause: Cause.Cause<Api.RequestError>) => {
      for (const pending of batch) Deferred.unsafeDone(pending.done, Exit.failCause(cause))
    }

    // Runs before the FiberSet's own finalizer (added first): writes never sent end interrupted, as their waiters.
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        closed = true
        for (const pending of creates.queue.splice(0)) Deferred.unsafeDone(pending.done, Exit.interrupt(FiberId.none))
        for (const pending of deletes.queue.splice(0)) Deferred.unsafeDone(pending.done, Exit.interrupt(FiberId.none))
      })
    )

    // --- The pump: after one event-loop turn, as many batches as may be in flight ---
    const pump = <P extends Queued>(kind: Kind<P>): void => {
      if (kind.scheduled || kind.queue.length === 0 || kind.inFlight >= maxInFlight) return
      kind.scheduled = true
      setImmediate(() => {
        kind.scheduled = false
        while (!closed && kind.queue.length > 0 && kind.inFlight < maxInFlight) {
          kind.inFlight++
          const batch = kind.take(kind.queue)
          for (const pending of batch) pending.sent = true
          run(
            kind.send(batch).pipe(
              Effect.ignore,
              Effect.ensuring(Effect.sync(() => {
                kind.inFlight--
                pump(kind)
              }))
            )
          )
        }
      })
    }
    const enqueue = <A, P extends Pending<A>>(kind: Kind<P>, pending: P): Effect.Effect<A, Api.RequestError> => {
      if (closed) return Effect.interrupt
      kind.queue.push(pending)
      pump(kind)
      // A delete is waited for interruptibly: a leave runs it in a finalizer (uninterruptible), bounded by a timeout
      // that must be able to end the wait; a create is waited for in the join, which is interruptible anyway.
      const wait = kind.awaitSent ? Deferred.await(pending.done) : Effect.interruptible(Deferred.await(pending.done))
      return wait.pipe(
        Effect.onInterrupt(() =>
          pending.sent
            ? kind.awaitSent ? Effect.ignore(Deferred.await(pending.done)) : Effect.void
            : Effect.sync(() => {
              const at = kind.queue.indexOf(pending)
              if (at >= 0) kind.queue.splice(at, 1)
            })
        )
      )
    }

    return {
      create: (key, value, lease) =>
        Effect.suspend(() =>
          enqueue<Created, PendingCreate>(creates, {
            key,
            value,
            lease,
            done: Deferred.unsafeMake(FiberId.none),
            sent: false
          })
        ),
      remove: (keys) =>
        Effect.suspend(() =>
          enqueue<void, PendingDelete>(deletes, { keys, done: Deferred.unsafeMake(FiberId.none), sent: false })
        )
    }
  })
