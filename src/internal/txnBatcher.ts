/**
 * Writes asked for at one moment, sent to etcd as a few transactions instead of one each. A write waits one event-loop
 * turn for others to join it; then batches are taken from the queue (by the kind's own `take`, within etcd's limits)
 * and sent (by its own `send`), at most `maxInFlight` at a time. Each batcher holds one kind of write: its queue, its
 * rules for a batch, what its waiters do when interrupted, and what becomes of what is queued when its scope closes.
 *
 * Used by a client's member key creates and deletes (memberWrites.ts) and by the shard claims of a runner
 * (claims.ts).
 */
import { Deferred, type Duration, Effect, Exit, FiberId, FiberSet, type Scope } from "effect"
import * as Bounded from "./bounded.js"
import { yieldToEventLoop } from "./eventLoop.js"

/** etcd refuses a transaction of more than `--max-txn-ops` (128 by default) compares or operations per branch. */
export const maxOps = 128

/** A write's outcome in its batch when it was not written this time: it goes again, at the front of the queue. */
export const again: unique symbol = Symbol("TxnBatcher.again")

/**
 * What an interrupted waiter does with its write:
 * - `awaitSent`: a write not sent yet is dropped; one in flight is waited for (no write lands after its waiter's
 *   cleanup ran).
 * - `interruptible`: the wait is interruptible even in an uninterruptible region (a finalizer), so that a bound around
 *   it ends the time queued as well; a write not sent yet is dropped, one in flight goes on without its waiter.
 * - `detached`: the waiter goes; its write stays queued and is sent anyway.
 */
type Waiting = "awaitSent" | "interruptible" | "detached"

/**
 * What becomes of the writes when the batcher's scope closes:
 * - `"interrupt"`: writes not sent yet end interrupted, as their waiters; sends in flight are interrupted.
 * - `{ flush }`: sends are uninterruptible once taken. The close waits for those in flight, then sends what is queued
 *   (in batches, one at a time), all within `flush`; what is left after it ends interrupted.
 */
type OnClose = "interrupt" | { readonly flush: Duration.DurationInput }

/** One kind of write: how a batch is taken and sent, and how the writes are waited for. */
export interface Kind<W extends object, A, E> {
  /**
   * The next batch: some of the queued writes (never none), as many as one transaction may hold. The batcher takes
   * them out of the queue, which keeps the others in order. Writes are told apart by identity.
   */
  readonly take: (queue: ReadonlyArray<W>) => ReadonlyArray<W>
  /**
   * Sends one batch: each write's outcome, by position (`again` to queue it again), or the failure of all of them. Its
   * interruption ends the batch's writes interrupted.
   */
  readonly send: (batch: ReadonlyArray<W>) => Effect.Effect<ReadonlyArray<A | typeof again>, E>
  /** Batches in flight at most: a slow moment is met by a few requests waiting, not by hundreds. */
  readonly maxInFlight: number
  readonly waiting: Waiting
  readonly onClose: OnClose
}

export interface TxnBatcher<W, A, E> {
  /** Queues `write` and waits for its outcome (see `Waiting`). After the scope closed, interrupted. */
  readonly write: (write: W) => Effect.Effect<A, E>
  /**
   * Queues `write` now, in the calling fiber (before the scope's close looks, say); the effect returned waits for its
   * outcome.
   */
  readonly offer: (write: W) => Effect.Effect<Effect.Effect<A, E>>
}

/** A write in the queue or in flight. */
interface Entry<W, A, E> {
  readonly write: W
  readonly done: Deferred.Deferred<A, E>
  sent: boolean
}

export const make = <W extends object, A, E>(
  kind: Kind<W, A, E>
): Effect.Effect<TxnBatcher<W, A, E>, never, Scope.Scope> =>
  Effect.gen(function*() {
    const run = yield* FiberSet.makeRuntime<never, void, never>()
    const flush = kind.onClose === "interrupt" ? undefined : kind.onClose.flush
    const queue: Array<Entry<W, A, E>> = []
    let inFlight = 0
    let idle: Deferred.Deferred<void> | undefined
    let scheduled = false
    // Closing: no batch is taken by the pump any more (a flushing close takes them itself). Closed: no write is taken.
    let closing = false
    let closed = false

    const endInterrupted = (entries: ReadonlyArray<Entry<W, A, E>>) => {
      for (const entry of entries) Deferred.unsafeDone(entry.done, Exit.interrupt(FiberId.none))
    }

    const take = (): ReadonlyArray<Entry<W, A, E>> => {
      const chosen = new Set<object>(kind.take(queue.map((entry) => entry.write)))
      const batch: Array<Entry<W, A, E>> = []
      const rest: Array<Entry<W, A, E>> = []
      for (const entry of queue) (chosen.has(entry.write) ? batch : rest).push(entry)
      // A batch is never empty, or the pump would go round for ever.
      if (batch.length === 0) batch.push(rest.shift()!)
      queue.splice(0, queue.length, ...rest)
      for (const entry of batch) entry.sent = true
      return batch
    }

    const send = (batch: ReadonlyArray<Entry<W, A, E>>): Effect.Effect<void> =>
      Effect.suspend(() => kind.send(batch.map((entry) => entry.write))).pipe(
        Effect.onExit((exit) =>
          Effect.sync(() => {
            if (Exit.isFailure(exit)) {
              for (const entry of batch) Deferred.unsafeDone(entry.done, Exit.failCause(exit.cause))
              return
            }
            const requeued: Array<Entry<W, A, E>> = []
            batch.forEach((entry, i) => {
              const outcome = exit.value[i]
              if (outcome === again) {
                entry.sent = false
                requeued.push(entry)
              } else Deferred.unsafeDone(entry.done, Exit.succeed(outcome as A))
            })
            if (closed) endInterrupted(requeued)
            else queue.unshift(...requeued)
          })
        ),
        Effect.ignore,
        (sending) => flush === undefined ? sending : Effect.uninterruptible(sending)
      )

    // --- The pump: after one event-loop turn, as many batches as may be in flight ---
    const pump = (): void => {
      if (scheduled || closing || queue.length === 0 || inFlight >= kind.maxInFlight) return
      scheduled = true
      run(Effect.zipRight(yieldToEventLoop, Effect.sync(startBatches)))
    }
    const startBatches = () => {
      scheduled = false
      while (!closing && queue.length > 0 && inFlight < kind.maxInFlight) {
        inFlight++
        const batch = take()
        run(send(batch)).addObserver((exit) => {
          // Interrupted before it began (the scope closing), a send settles nothing itself: its writes end as it did.
          if (Exit.isFailure(exit)) {
            for (const entry of batch) Deferred.unsafeDone(entry.done, Exit.failCause(exit.cause))
          }
          if (--inFlight === 0 && idle !== undefined) {
            Deferred.unsafeDone(idle, Exit.void)
            idle = undefined
          }
          pump()
        })
      }
    }

    // --- The close: runs before the FiberSet's own finalizer (added first), which interrupts or awaits the sends ---
    const awaitIdle = Effect.suspend(() => {
      if (inFlight === 0) return Effect.void
      const until = idle ??= Deferred.unsafeMake<void>(FiberId.none)
      return Deferred.await(until)
    })
    // Batches taken one at a time, each sent whole once taken; writes asked for meanwhile join.
    const drain: Effect.Effect<void> = Effect.zipRight(
      Effect.uninterruptible(Effect.suspend(() => queue.length === 0 ? Effect.void : send(take()))),
      Effect.suspend(() => queue.length === 0 ? Effect.void : drain)
    )
    yield* Effect.addFinalizer(() =>
      Effect.suspend(() => {
        closing = true
        // Sent after what is in flight, so that a key's later write (a claim's delete) never lands before its earlier.
        return flush === undefined
          ? Effect.void
          : Effect.zipRight(awaitIdle, drain).pipe(Bounded.timeout(flush), Effect.ignore)
      }).pipe(Effect.ensuring(Effect.sync(() => {
        closed = true
        endInterrupted(queue.splice(0))
      })))
    )

    // --- Writes and their waiters ---
    const drop = (entry: Entry<W, A, E>) =>
      Effect.sync(() => {
        const at = queue.indexOf(entry)
        if (at >= 0) queue.splice(at, 1)
      })
    const waitFor = (entry: Entry<W, A, E>): Effect.Effect<A, E> => {
      switch (kind.waiting) {
        case "awaitSent":
          return Deferred.await(entry.done).pipe(
            Effect.onInterrupt(() => entry.sent ? Effect.ignore(Deferred.await(entry.done)) : drop(entry))
          )
        case "interruptible":
          return Effect.interruptible(Deferred.await(entry.done)).pipe(
            Effect.onInterrupt(() => entry.sent ? Effect.void : drop(entry))
          )
        case "detached":
          return Deferred.await(entry.done)
      }
    }
    const enqueue = (write: W): Effect.Effect<A, E> => {
      if (closed) return Effect.interrupt
      const entry: Entry<W, A, E> = { write, done: Deferred.unsafeMake(FiberId.none), sent: false }
      queue.push(entry)
      pump()
      return waitFor(entry)
    }

    return {
      write: (write) => Effect.suspend(() => enqueue(write)),
      offer: (write) => Effect.sync(() => enqueue(write))
    }
  })
