/**
 * A client's member key creates and deletes, written together: the members a client adds or removes at one moment (a
 * process joining five hundred at once, its members registering again after its lease was lost, or leaving as it shuts
 * down) go to etcd as a few transactions, not one each. Every process watching the group then reads a few watch
 * responses instead of one per member: a storm of N joins (or leaves) from P processes costs each watcher about P
 * responses, not N, and that per-response work is what a storm spends most of its CPU on. Members written together
 * share a create revision; the view orders them by name.
 *
 * A write waits one event-loop turn for others to join it (txnBatcher.ts). At most {@link maxInFlight} transactions
 * of each kind are in flight. A create batch holds one lease's keys (a lease etcd no longer knows fails only its own
 * members), at most {@link maxKeys} of them and about {@link maxBytes}. Each key is created only if absent, else read
 * in the same transaction: a create tried again after its answer was lost finds the key its earlier try wrote, and
 * makes no second event. A delete batch holds at most `TxnBatcher.maxOps` keys, of any lease.
 */
import { Effect, type Scope } from "effect"
import * as Api from "./etcd/api.js"
import * as TxnBatcher from "./txnBatcher.js"

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

/** Keys per create batch: half of etcd's limit of operations per transaction (`TxnBatcher.maxOps`). */
const maxKeys = TxnBatcher.maxOps / 2
/** etcd refuses a request over `--max-request-bytes` (1.5 MiB by default); a larger value goes alone. */
const maxBytes = 512 * 1024
/** Transactions in flight per client and kind: a slow moment is met by a few requests waiting, not by hundreds. */
const maxInFlight = 4

interface Create {
  readonly key: string
  readonly value: string
  readonly lease: string
}

interface Delete {
  readonly keys: ReadonlyArray<string>
}

// --- Creates: the first queued create's lease, as many of its keys as fit ---
const takeCreates = (queue: ReadonlyArray<Create>): ReadonlyArray<Create> => {
  const lease = queue[0]!.lease
  const batch: Array<Create> = []
  let bytes = 0
  for (const create of queue) {
    const size = create.key.length + create.value.length
    if (create.lease === lease && batch.length < maxKeys && (batch.length === 0 || bytes + size <= maxBytes)) {
      batch.push(create)
      bytes += size
    }
  }
  return batch
}

// Every key created if absent, else read; keys absent on a failed compare go again.
const sendCreates = (api: Api.EtcdApi) => (batch: ReadonlyArray<Create>) =>
  api.txn({
    compare: batch.map(({ key }) => ({ key, target: "create", result: "equal", value: 0 })),
    success: batch.map(({ key, lease, value }) => ({ _tag: "Put", key, value, lease })),
    failure: batch.map(({ key }) => ({ _tag: "Range", range: { target: { key } } }))
  }).pipe(
    Effect.map((result) =>
      batch.map((_, i): Created | typeof TxnBatcher.again => {
        // Written now, or found written by an earlier try; the key's place either way.
        const place = result.succeeded
          ? { createRevision: result.revision, modRevision: result.revision }
          : Api.rangeKv(result.results[i])
        // Absent: another key of the batch failed the compare (an earlier try of its own landed). Written next time.
        return place === undefined
          ? TxnBatcher.again
          : { createRevision: place.createRevision, modRevision: place.modRevision }
      })
    )
  )

// --- Deletes: as many members' keys as fit in one transaction ---
const takeDeletes = (queue: ReadonlyArray<Delete>): ReadonlyArray<Delete> => {
  let ops = 0
  let n = 0
  while (n < queue.length && (n === 0 || ops + queue[n]!.keys.length <= TxnBatcher.maxOps)) {
    ops += queue[n++]!.keys.length
  }
  return queue.slice(0, n)
}

const sendDeletes = (api: Api.EtcdApi) => (batch: ReadonlyArray<Delete>) =>
  api.txn({
    compare: [],
    success: batch.flatMap(({ keys }) => keys.map((key) => ({ _tag: "Delete" as const, key })))
  }).pipe(Effect.as(batch.map(() => undefined)))

export const make = (api: Api.EtcdApi): Effect.Effect<MemberWrites, never, Scope.Scope> =>
  Effect.gen(function*() {
    // Closed, writes not sent yet end interrupted, as their waiters.
    const creates = yield* TxnBatcher.make({
      take: takeCreates,
      send: sendCreates(api),
      maxInFlight,
      // A create is waited for in the join, which is interruptible anyway.
      waiting: "awaitSent",
      onClose: "interrupt"
    })
    const deletes = yield* TxnBatcher.make({
      take: takeDeletes,
      send: sendDeletes(api),
      maxInFlight,
      // A leave runs its delete in a finalizer (uninterruptible), bounded by a timeout that must be able to end the wait.
      waiting: "interruptible",
      onClose: "interrupt"
    })
    return {
      create: (key, value, lease) => creates.write({ key, value, lease }),
      remove: (keys) => deletes.write({ keys })
    }
  })
