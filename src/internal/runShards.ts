/**
 * The runner behind `EtcdSeq.runShards`: the group's shards split among its live members by a pure plan
 * (shardPlan.ts), each owned shard's work in a scoped fiber of its own. On a view change, only the shards whose owner
 * changes move: a shard that stays keeps running; one that arrives is claimed and starts once its previous owner's
 * claim is gone (claims.ts); one that leaves keeps running until its new owner's claim waits behind this member's,
 * and is only then interrupted and its claim released, so that it is unowned for its stop and one watch event, not
 * for the whole protocol. No barrier across the group.
 *
 * Which shards move when is shardMoves.ts's pure step, over the owners and moves the claims show: at most `maxMoves`
 * moves in flight touching a member, and a plan that follows the member set only once that stayed unchanged for the
 * `settle` window. A gone member's shards move at once, whatever the policy.
 *
 * As in `runAssigned`, the loop only ever waits for work to stop: claims, releases and waits run in the shards'
 * fibers, so `Info.invalid` (a self-fence, a lost lease) stops every shard at once, handed over or not.
 *
 * Sections: the move policy's options; what is shared per view and claims (computed once for every member of a
 * process: a view change must not cost members x shards); `run`; the loop (wake-ups, one shard's run, stops and
 * handovers, what to run now).
 */
import {
  Duration,
  Effect,
  ExecutionStrategy,
  Fiber,
  Metric,
  Option,
  RcMap,
  Scope,
  Stream,
  SubscriptionRef
} from "effect"
import { type EtcdSeqError, InvalidOptions, ShardCountMismatch, ShardPolicyMismatch } from "../EtcdSeqError.js"
import { Info } from "../Info.js"
import type { Shard } from "../Shard.js"
import * as Cell from "./cell.js"
import * as Claims from "./claims.js"
import type * as Contenders from "./contenders.js"
import * as Keys from "./keys.js"
import * as Metrics from "./metrics.js"
import * as Monotonic from "./monotonic.js"
import { backoff } from "./retry.js"
import * as Runner from "./runner.js"
import * as Moves from "./shardMoves.js"
import * as ShardOwners from "./shardOwners.js"
import type { ControlledPlan } from "./shardPlan.js"
import { counted, type Holder, type Latest, type Library } from "./source.js"
import * as View from "./view.js"

/** Runs `work` per owned shard; `source` is the membership's, `undefined` for one this library did not make. */
export const run = <E, R>(
  source: Library | undefined,
  shards: number,
  policy: Moves.MovePolicy,
  work: (shard: Shard) => Effect.Effect<void, E, R>
): Effect.Effect<never, E | EtcdSeqError, Exclude<R, Scope.Scope>> =>
  source === undefined
    ? Effect.fail(new InvalidOptions({ field: "EtcdSeq", reason: "runShards needs a membership made by EtcdSeq.make" }))
    : Runner.single(source, runLoop(source, shards, policy, work))

/** The move policy of `runShards`' options, or why not (before any I/O). */
export const movePolicy = (
  options: { readonly maxMoves?: unknown; readonly settle?: unknown }
): Moves.MovePolicy | InvalidOptions => {
  const maxMoves = options.maxMoves ?? Infinity
  const problem = Moves.invalidMaxMoves(maxMoves)
  if (problem !== undefined) return new InvalidOptions({ field: "maxMoves", reason: problem })
  const settleInput = options.settle ?? Duration.zero
  const settle = Duration.decodeUnknown(settleInput)
  if (Option.isNone(settle) || !Duration.isFinite(settle.value)) {
    return new InvalidOptions({ field: "settle", reason: `${String(settleInput)} is not a finite duration` })
  }
  // Whole milliseconds: the member record holds an integer, the same on every member.
  return { maxMoves: maxMoves as number, settleMillis: Math.ceil(Duration.toMillis(settle.value)) }
}

/** Memoizes `f` by the identity of its object argument. */
const memo1 = <A extends object, B>(f: (a: A) => B) => {
  const known = new WeakMap<A, B>()
  return (a: A): B => {
    let value = known.get(a)
    if (value === undefined) known.set(a, value = f(a))
    return value
  }
}

/** The live members by id (their names, as plans name them), once per view. */
const namesOf = memo1((view: View.View): ReadonlyMap<string, string> =>
  // A parked place runs nothing: a shard is never handed over to it (its next incarnation claims anew).
  new Map(view.members.flatMap((m) => m.parked === true ? [] : [[m.id, m.name] as const]))
)

// --- Shared per view and claims: a thousand members on one process each read the same view and the same claims, so
// what is the same for all of them is computed once, not once per member (which made a view change cost members x
// shards in all) ---

/** Memoizes `f` by the identity of its two object arguments. */
const memo2 = <A extends object, B extends object, C>(f: (a: A, b: B) => C) => {
  const byA = memo1((_: A) => new WeakMap<B, C>())
  return (a: A, b: B): C => {
    const inner = byA(a)
    let value = inner.get(b)
    if (value === undefined) inner.set(b, value = f(a, b))
    return value
  }
}

/** The live members' names, once per view. */
const liveOf = memo1((view: View.View): ReadonlySet<string> => new Set(namesOf(view).values()))

/** The members by id, once per view. */
const byIdOf = memo1((view: View.View): ReadonlyMap<string, View.Entry> => new Map(view.members.map((m) => [m.id, m])))

/** The names of the members that run `shards` shards, as one key: the settle window's member set. */
const memberSetOf = (() => {
  const byCount = memo1((_: View.View) => new Map<number, string>())
  return (view: View.View, shards: number): string => {
    const known = byCount(view)
    let key = known.get(shards)
    if (key === undefined) {
      known.set(shards, key = view.members.flatMap((m) => m.shards === shards ? [m.name] : []).join(","))
    }
    return key
  }
})()

/** The owners and moves the claims show, once per claims state, view and number of shards. */
const inEffectOf = (() => {
  const byClaims = memo2((_: Contenders.Contenders["byNumber"], __: View.View) =>
    new Map<number, ReturnType<typeof Moves.fromClaims>>()
  )
  return (byNumber: Contenders.Contenders["byNumber"], view: View.View, shards: number) => {
    const known = byClaims(byNumber, view)
    let value = known.get(shards)
    if (value === undefined) {
      const names = namesOf(view)
      known.set(shards, value = Moves.fromClaims(shards, byNumber, (id) => names.get(id)))
    }
    return value
  }
})()

/** Shards by owner, once per plan. */
const byOwnerOf = memo1((owners: ReadonlyArray<string | undefined>): ReadonlyMap<string, ReadonlyArray<number>> => {
  const out = new Map<string, Array<number>>()
  owners.forEach((o, s) => {
    if (o === undefined) return
    const list = out.get(o)
    if (list === undefined) out.set(o, [s])
    else list.push(s)
  })
  return out
})

/** The target and the step toward it when a member adds no moves of its own: the same for every member. */
const sharedStep = (() => {
  const targets = memo2((_: ControlledPlan, __: ControlledPlan) => new WeakMap<ReadonlySet<string>, ControlledPlan>())
  const steps = memo2((_: ReturnType<typeof Moves.fromClaims>, __: ControlledPlan) =>
    new Map<number, ReturnType<typeof Moves.step>>()
  )
  return {
    target: (acting: ControlledPlan, newest: ControlledPlan, live: ReadonlySet<string>) => {
      const known = targets(acting, newest)
      let target = known.get(live)
      if (target === undefined) known.set(live, target = Moves.targetOf(acting, newest, live))
      return target
    },
    step: (
      inEffect: ReturnType<typeof Moves.fromClaims>,
      target: ControlledPlan,
      live: ReadonlySet<string>,
      maxMoves: number
    ) => {
      const known = steps(inEffect, target)
      let step = known.get(maxMoves)
      if (step === undefined) {
        step = Moves.step({
          current: inEffect.current,
          target,
          inFlight: inEffect.inFlight,
          live,
          policy: { maxMoves }
        })
        known.set(maxMoves, step)
      }
      return step
    }
  }
})()

const policyOf = (d: View.Declaration) => ({
  maxMoves: d.maxMoves ?? Infinity,
  settle: Duration.millis(d.settleMillis ?? 0)
})

const runLoop = <E, R>(
  source: Library,
  shards: number,
  policy: Moves.MovePolicy,
  work: (shard: Shard) => Effect.Effect<void, E, R>
): Effect.Effect<never, E | EtcdSeqError, Exclude<R, Scope.Scope>> =>
  Runner.supervised<E | EtcdSeqError, EtcdSeqError, R | Scope.Scope>((supervise) =>
    Effect.gen(function*() {
      const { shared, view } = source
      const claims = yield* RcMap.get(shared.claims, source.group)
      // The operator's controls and the drains: the plan obeys them (one watch per client and group).
      const controls = yield* RcMap.get(shared.controls, source.group)
      const writer = yield* Claims.writer(shared.api, shared.leases.retryInBackground, shared.owned)
      const declared = View.declaration(shards, policy)

      // --- Wake-ups: the membership's latest status, every view, every change of the controls, the claims of the
      // shards in motion, the clock ---
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
      // The shards whose claim holds (their work runs), and each running shard's claim key: a handover reads who
      // waits behind it.
      const holding = new Set<number>()
      const claimKeys = new Map<number, string>()
      const runShard = (shard: number, owner: Holder, info: Info) =>
        Effect.gen(function*() {
          const key = Keys.claimKey(source.group, shard, owner.id, yield* shared.leases.unique)
          claimKeys.set(shard, key)
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
          // A move into this member is complete: the loop may start the next.
          yield* Effect.sync(() => {
            holding.add(shard)
            bump()
          })
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
          Effect.ensuring(Effect.sync(() => {
            holding.delete(shard)
            claimKeys.delete(shard)
          })),
          counted(source.activeWork),
          supervise,
          Effect.annotateLogs({ shard })
        )

      // --- The loop: start what arrived, hand over what leaves once its new owner waits, never waiting on etcd ---
      const loop = Effect.gen(function*() {
        const running = new Map<number, Fiber.RuntimeFiber<void, never>>()
        // The shards being stopped, and among them those handed over (at most `maxMoves` at once).
        const stopping = new Map<number, Fiber.RuntimeFiber<void, never>>()
        const handovers = new Set<number>()
        // The shards claimed from a live member, by that member's name, until their work starts.
        const incoming = new Map<number, string>()
        const loopScope = yield* Effect.scope
        // Stops in the background: the loop goes on starting and handing over other shards meanwhile. A shard is
        // started again only once its stop is over (its runs on one member never overlap).
        const beginStop = (s: number, handover: boolean) =>
          Effect.gen(function*() {
            const fiber = running.get(s)!
            stopping.set(s, fiber)
            if (handover) handovers.add(s)
            yield* Metric.modify(Metrics.shardsOwned, -1)
            yield* Metric.increment(Metrics.shardsReleased)
            yield* Fiber.interrupt(fiber).pipe(
              Effect.ensuring(Effect.sync(() => {
                if (stopping.get(s) !== fiber) return
                stopping.delete(s)
                handovers.delete(s)
                running.delete(s)
                bump()
              })),
              Effect.forkIn(loopScope)
            )
          })
        // Everything at once, and waited for: shards stop together, not one after the other (a thousand shards whose
        // work takes 100 ms to stop must not take 100 s to let go of the last one: the lease may be gone long before).
        const stopAll = Effect.suspend(() => {
          const fibers = [...running.values()]
          const fresh = [...running.keys()].filter((s) => !stopping.has(s)).length
          running.clear()
          stopping.clear()
          handovers.clear()
          incoming.clear()
          return Fiber.interruptAll(fibers).pipe(
            Effect.zipRight(Metric.modify(Metrics.shardsOwned, -fresh)),
            Effect.zipRight(Metric.incrementBy(Metrics.shardsReleased, fresh))
          )
        })
        const shardScope = yield* Scope.fork(loopScope, ExecutionStrategy.parallel)
        yield* Effect.addFinalizer(() => stopAll)
        // The registration the running shards belong to, and the write of its declaration.
        let current: Holder | undefined
        let declaring: Fiber.RuntimeFiber<void, never> | undefined
        let checked = false
        // The settle window, and the timer that wakes the loop when it ends.
        let settling: Moves.Settling<ControlledPlan> | undefined
        let timer: { readonly at: number; readonly fiber: Fiber.RuntimeFiber<void, never> } | undefined
        // Claims that wake the loop: those of every shard it runs (any claim that comes behind this member's, even one
        // its own step did not expect: the move it makes is read alike by every member), and while a move in is held
        // back by the policy, those of every move in flight (one completing makes room).
        let inFlightWatched: ReadonlyMap<number, unknown> | undefined
        const stopWatching = claims.onChanges((touched) => {
          for (const s of touched) {
            if (running.has(s) || inFlightWatched?.has(s) === true) return bump()
          }
        })
        yield* Effect.addFinalizer(() => Effect.sync(stopWatching))
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
          // Safety first: no handover, whatever waits.
          if (!Info.isValid(info) || owner === undefined) {
            yield* stopAll
            continue
          }
          if (owner !== current) {
            // A new registration (after a lost one, or the first): its shards are its own, claimed anew, and its record
            // declares the number of shards and the move policy (written at its creation, or now).
            yield* stopAll
            current = owner
            if (declaring !== undefined) yield* Fiber.interrupt(declaring)
            declaring = yield* source.declareShards(owner, declared).pipe(
              Effect.tapError((e) => Effect.logWarning("declaring the number of shards failed; retrying", e)),
              Effect.retry(backoff),
              Effect.ignore,
              Effect.forkIn(loopScope)
            )
          }
          const now = yield* SubscriptionRef.get(view)
          // Until the view holds its declaration the plan gives the member nothing, and nobody's plan counts it.
          const own = byIdOf(now).get(owner.id)
          if (own === undefined || !View.sameDeclaration(View.declarationOf(own), declared)) continue
          if (!checked) {
            checked = true
            // Once the view holds this member's own declaration, it holds every declaration made before it; a later one
            // sees this one and is refused itself.
            const other = now.members.find((m) =>
              m.shards !== undefined && !View.sameDeclaration(View.declarationOf(m), declared)
            )
            if (other !== undefined) {
              yield* Fiber.interrupt(declaring!)
              yield* source.declareShards(owner, undefined).pipe(Effect.ignore)
              if (other.shards !== shards) {
                return yield* new ShardCountMismatch({ group: source.group, shards: other.shards!, requested: shards })
              }
              const theirs = policyOf(View.declarationOf(other)!)
              const mine = policyOf(declared)
              return yield* new ShardPolicyMismatch({
                group: source.group,
                maxMoves: theirs.maxMoves,
                settle: theirs.settle,
                requestedMaxMoves: mine.maxMoves,
                requestedSettle: mine.settle
              })
            }
          }

          // --- What to run now: the plan acted on, the owners and moves the claims show, the policy's step ---
          const me = owner.name
          const names = namesOf(now)
          const live = liveOf(now)
          const newest = ShardOwners.ownersOf(now, shards, controls.current())
          const memberSet = memberSetOf(now, shards)
          const clock = yield* Monotonic.millis
          const settled = Moves.settle(settling, memberSet, newest, clock, policy.settleMillis)
          settling = settled.state
          if (settled.wakeAt !== timer?.at) {
            if (timer !== undefined) yield* Fiber.interrupt(timer.fiber)
            const at = settled.wakeAt
            timer = at === undefined ? undefined : {
              at,
              fiber: yield* Effect.sleep(Duration.millis(at - clock)).pipe(
                Effect.zipRight(Effect.sync(bump)),
                Effect.forkIn(loopScope)
              )
            }
          }
          const byNumber = claims.current().byNumber
          const inEffect = inEffectOf(byNumber, now, shards)
          // Before a member set was acted on (a member starting, with a settle window), the owners in effect stay: but
          // not this member's claims it runs no more (released, the delete not seen yet).
          const target = settling.acting !== undefined
            ? sharedStep.target(settling.acting, newest, live)
            : Moves.targetOf(
              inEffect.current.map((o, s) => o === me && !running.has(s) ? undefined : o),
              newest,
              live
            )
          // This member's moves in until its work started count as in flight, whatever the claims show yet (its claim
          // not seen, or the previous owner's release seen first): its step does not start others meanwhile.
          for (const [s] of incoming) if (holding.has(s) || !running.has(s)) incoming.delete(s)
          const ownMoves = [...incoming].filter(([s]) => !inEffect.inFlight.has(s))
          let step: ReturnType<typeof Moves.step>
          if (ownMoves.length === 0) {
            // The step every member holding this view and these claims computes: once for all of them.
            step = sharedStep.step(inEffect, target, live, policy.maxMoves)
          } else {
            const currentOwners = [...inEffect.current]
            const inFlight = new Map(inEffect.inFlight)
            for (const [s, from] of ownMoves) {
              inFlight.set(s, { from, to: me })
              currentOwners[s] = me
            }
            step = Moves.step({ current: currentOwners, target, inFlight, live, policy: { maxMoves: policy.maxMoves } })
          }

          // --- Start, stop, hand over ---
          const arrived: Array<number> = []
          const gone: Array<number> = []
          const waiting: Array<number> = []
          // Only the shards this member runs or is to run: the others are someone else's business.
          const candidates = new Set<number>(running.keys())
          for (const s of byOwnerOf(step.owners).get(me) ?? []) candidates.add(s)
          for (const s of [...candidates].sort((a, b) => a - b)) {
            const to = step.owners[s]
            if (to === me) {
              if (!running.has(s)) arrived.push(s)
              continue
            }
            if (!running.has(s) || stopping.has(s)) continue
            if (!holding.has(s) || to === undefined || !live.has(to)) {
              // Not running yet, to be run by nobody, or by no live member: nothing to hand over.
              gone.push(s)
              yield* beginStop(s, false)
              continue
            }
            const list = byNumber.get(s) ?? []
            const ready = list[0]?.key === claimKeys.get(s) && list.length > 1 && names.get(list[1]!.owner) === to
            if (ready && handovers.size < policy.maxMoves) {
              gone.push(s)
              yield* beginStop(s, true)
            } else if (!ready) {
              waiting.push(s)
            }
          }
          for (const s of arrived) {
            const from = inEffect.current[s]
            if (from !== undefined && from !== me && live.has(from)) incoming.set(s, from)
            running.set(s, yield* Effect.forkIn(runShard(s, owner, info), shardScope))
          }
          yield* Metric.modify(Metrics.shardsOwned, arrived.length)
          const incomingBlocked = (byOwnerOf(target).get(me) ?? []).some((s) => step.owners[s] !== me)
          inFlightWatched = incomingBlocked ? step.inFlight : undefined
          // A change of the claims this turn did not see (it came while the turn ran): look again.
          if (claims.current().byNumber !== byNumber) bump()
          if (gone.length > 0 || arrived.length > 0) {
            yield* Effect.logInfo(
              `runShards ${info.toString()}: took ${arrived.length} [${arrived.join(",")}], gave up ${gone.length} [${
                gone.join(",")
              }], hands over ${waiting.length}, runs ${running.size}`
            )
          }
        }
      }).pipe(Effect.scoped)

      return yield* loop
    })
  ).pipe(Effect.withSpan("EtcdSeq.runShards", { attributes: { group: source.group, shards } }))
