/**
 * The runner behind `EtcdSeq.runShards`: the group's shards split among its live members by a pure plan
 * (shardPlan.ts), each owned shard's work in a scoped fiber of its own. On a view change, only the shards whose owner
 * changes move: a shard that stays keeps running; one that leaves is interrupted and its claim released; one that
 * arrives is claimed and starts once its previous owner's claim is gone (claims.ts). No barrier across the group.
 *
 * As in `runAssigned`, the loop only ever waits for work to stop: claims, releases and waits run in the shards'
 * fibers, so `Info.invalid` (a self-fence, a lost lease) stops every shard at once.
 */
import { Effect, ExecutionStrategy, Fiber, Metric, RcMap, Scope, Stream, SubscriptionRef } from "effect"
import { type EtcdSeqError, InvalidOptions, ShardCountMismatch } from "../EtcdSeqError.js"
import { Info } from "../Info.js"
import type { Shard } from "../Shard.js"
import * as Cell from "./cell.js"
import * as Claims from "./claims.js"
import * as Keys from "./keys.js"
import * as Metrics from "./metrics.js"
import * as Monotonic from "./monotonic.js"
import { backoff } from "./retry.js"
import * as Runner from "./runner.js"
import { planOf } from "./shardOwners.js"
import { counted, type Holder, type Latest, type Library } from "./source.js"

/** Runs `work` per owned shard; `source` is the membership's, `undefined` for one this library did not make. */
export const run = <E, R>(
  source: Library | undefined,
  shards: number,
  work: (shard: Shard) => Effect.Effect<void, E, R>
): Effect.Effect<never, E | EtcdSeqError, Exclude<R, Scope.Scope>> =>
  source === undefined
    ? Effect.fail(new InvalidOptions({ field: "EtcdSeq", reason: "runShards needs a membership made by EtcdSeq.make" }))
    : Runner.single(source, runLoop(source, shards, work))

const runLoop = <E, R>(
  source: Library,
  shards: number,
  work: (shard: Shard) => Effect.Effect<void, E, R>
): Effect.Effect<never, E | EtcdSeqError, Exclude<R, Scope.Scope>> =>
  Runner.supervised<E | EtcdSeqError, EtcdSeqError, R | Scope.Scope>((supervise) =>
    Effect.gen(function*() {
      const { shared, view } = source
      const claims = yield* RcMap.get(shared.claims, source.group)
      // The operator's controls and the drains: the plan obeys them (one watch per client and group).
      const controls = yield* RcMap.get(shared.controls, source.group)
      const writer = yield* Claims.writer(shared.api, shared.leases.retryInBackground, shared.owned)

      // --- Wake-ups: the membership's latest status, every view, and every change of the controls ---
      // A declaration of shards changes the plan without renaming the view, so no new status tells of it, and neither
      // does a pin, a pause, a freeze or a drain: the loop wakes on each, and acts on the latest of each.
      const wake = yield* Cell.make(0)
      const bump = () => wake.unsafeModify((n) => [undefined, n + 1] as const)
      let status: Latest | undefined
      const next = yield* source.reader
      yield* Effect.forever(Effect.flatMap(next, (latest) =>
        Effect.sync(() => {
          status = latest
          bump()
        }))).pipe(Effect.forkScoped)
      yield* source.listen(bump)
      yield* controls.latest.changes.pipe(Stream.runForEach(() => Effect.sync(bump)), Effect.forkScoped)
      const woken = yield* wake.reader

      // --- One shard: claim, wait for the previous owner, work ---
      const runShard = (shard: number, owner: Holder, info: Info) =>
        Effect.gen(function*() {
          const key = Keys.claimKey(source.group, shard, owner.id, yield* shared.leases.unique)
          // Released after the work's own finalizers (registered first, so run last), in the background.
          yield* Effect.addFinalizer(() => writer.release(key))
          const claimedAt = yield* Monotonic.millis
          const fence = yield* writer.claim(key, owner.leaseId).pipe(
            Effect.tapError((e) => Effect.logWarning(`claim of shard ${shard} not written; retrying`, e)),
            // Retried, not failed: a lost lease or an unreachable etcd resolves with the next Info.
            Effect.retry(backoff),
            Effect.zipRight(Claims.awaitHeld(shared.api, claims, shard, key, owner.id)),
            // No stack trace: a thousand shards may be acquired at once, and capturing one is most of a span's cost.
            Effect.withSpan("EtcdSeq.acquireShard", {
              attributes: { group: source.group, shard },
              captureStackTrace: false
            })
          )
          yield* Metric.update(Metrics.shardHandoverWait, (yield* Monotonic.millis) - claimedAt)
          yield* Metric.increment(Metrics.shardsAcquired)
          yield* work({ id: shard, shards, fence, claimKey: key, info }).pipe(
            Effect.withSpan("EtcdSeq.shard", {
              attributes: { group: source.group, shard, fence },
              captureStackTrace: false
            })
          )
        }).pipe(
          Effect.scoped,
          // A claim whose key went before it held the shard: claim it again, under a new key.
          Effect.retry({ while: (e) => e instanceof Claims.ClaimLost, schedule: backoff }),
          Effect.catchIf((e): e is Claims.ClaimLost => e instanceof Claims.ClaimLost, () => Effect.void),
          counted(source.activeWork),
          supervise,
          Effect.annotateLogs({ shard })
        )

      // --- The loop: stop what moved away, start what arrived, never waiting on etcd ---
      const loop = Effect.gen(function*() {
        const running = new Map<number, Fiber.RuntimeFiber<void, never>>()
        const loopScope = yield* Effect.scope
        const stop = (which: ReadonlyArray<number>) =>
          Effect.gen(function*() {
            const fibers = which.map((s) => running.get(s)!)
            for (const s of which) running.delete(s)
            yield* Fiber.interruptAll(fibers)
            yield* Metric.modify(Metrics.shardsOwned, -which.length)
            yield* Metric.incrementBy(Metrics.shardsReleased, which.length)
          })
        const stopAll = Effect.suspend(() => stop([...running.keys()]))
        // Shards stop together, not one after the other: a thousand shards whose work takes 100 ms to stop must not
        // take 100 s to let go of the last one (the lease may be gone long before).
        const shardScope = yield* Scope.fork(loopScope, ExecutionStrategy.parallel)
        yield* Effect.addFinalizer(() => stopAll)
        // The registration the running shards belong to, and the write of its declaration.
        let current: Holder | undefined
        let declaring: Fiber.RuntimeFiber<void, never> | undefined
        let checked = false
        while (true) {
          yield* woken
          const latest = status
          if (latest === undefined) continue
          if (latest._tag === "Closed") {
            yield* stopAll
            return yield* Effect.interrupt
          }
          if (latest._tag === "Failed") {
            yield* stopAll
            return yield* Effect.fail(latest.error)
          }
          const { holder: owner, info } = latest
          if (!Info.isValid(info) || owner === undefined) {
            yield* stopAll
            continue
          }
          if (owner !== current) {
            // A new registration (after a lost one, or the first): its shards are its own, claimed anew, and its record
            // declares the number of shards (written at its creation, or now).
            yield* stopAll
            current = owner
            if (declaring !== undefined) yield* Fiber.interrupt(declaring)
            declaring = yield* source.declareShards(owner, shards).pipe(
              Effect.tapError((e) => Effect.logWarning("declaring the number of shards failed; retrying", e)),
              Effect.retry(backoff),
              Effect.ignore,
              Effect.forkIn(loopScope)
            )
          }
          const now = yield* SubscriptionRef.get(view)
          // Until the view holds its declaration the plan gives the member nothing, and nobody's plan counts it.
          if (now.members.find((m) => m.id === owner.id)?.shards !== shards) continue
          if (!checked) {
            checked = true
            // Once the view holds this member's own declaration, it holds every declaration made before it; a later one
            // sees this one and is refused itself.
            const other = now.members.find((m) => m.shards !== undefined && m.shards !== shards)
            if (other !== undefined) {
              yield* Fiber.interrupt(declaring!)
              yield* source.declareShards(owner, undefined).pipe(Effect.ignore)
              return yield* new ShardCountMismatch({ group: source.group, shards: other.shards!, requested: shards })
            }
          }
          const mine = new Set(planOf(now, shards, controls.current()).get(owner.name))
          const gone = [...running.keys()].filter((s) => !mine.has(s)).sort((a, b) => a - b)
          const arrived = [...mine].filter((s) => !running.has(s)).sort((a, b) => a - b)
          if (gone.length > 0) yield* stop(gone)
          for (const s of arrived) running.set(s, yield* Effect.forkIn(runShard(s, owner, info), shardScope))
          yield* Metric.modify(Metrics.shardsOwned, arrived.length)
          if (gone.length > 0 || arrived.length > 0) {
            yield* Effect.logInfo(
              `runShards ${info.toString()}: took ${arrived.length} [${arrived.join(",")}], gave up ${gone.length} [${
                gone.join(",")
              }], runs ${running.size}`
            )
          }
        }
      }).pipe(Effect.scoped)

      return yield* loop
    })
  ).pipe(Effect.withSpan("EtcdSeq.runShards", { attributes: { group: source.group, shards } }))
