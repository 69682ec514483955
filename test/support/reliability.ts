/**
 * Helpers of the reliability suite: in-process members on clients of their own (as separate processes would be)
 * with timestamped Infos, the convergence check, what etcd still holds, and the figures the suite measures.
 */
import { expect } from "@effect/vitest"
import { Clock, Duration, Effect, Exit, Logger, LogLevel, Option, Ref, Scope, Stream, SubscriptionRef } from "effect"
import { Etcd3 } from "etcd3"
import { type Assignment, Etcd, EtcdSeq, type EtcdSeqService, type Exclusive, Info } from "../../src/index.js"
import { ic } from "./members.js"
import { pidIsGone } from "./processes.js"

interface Timed {
  readonly info: Info
  /** `Clock.currentTimeMillis` when the member emitted it (the live clock: these tests exclude the TestClock). */
  readonly at: number
}

export interface Member {
  readonly name: string
  readonly seq: EtcdSeqService
  /** Every Info the member emitted, with its time. */
  readonly history: Effect.Effect<ReadonlyArray<Timed>>
  /** `history` as `index/count` or `invalid`. */
  readonly infos: Effect.Effect<ReadonlyArray<string>>
  /** Waits on the member's own events until its Info satisfies `predicate`; dies after `within`. */
  readonly until: (predicate: (info: Info) => boolean, within: Duration.DurationInput, what?: string) => Effect.Effect<
    Timed
  >
  /** Closes the member's scope: a graceful leave, then its client closes. */
  readonly leave: Effect.Effect<void>
}

/** Every member leaves, all at once. */
export const leaveAll = (members: ReadonlyArray<Member>) =>
  Effect.forEach(members, (m) => m.leave, { concurrency: "unbounded", discard: true })

/**
 * A member of `group` on a client of its own. It leaves when `leave` runs or, at the latest, when the enclosing
 * scope closes (a failing test leaves nothing behind).
 */
export const joinMember = (options: {
  readonly endpoints: ReadonlyArray<string>
  readonly group: string
  readonly ttl: Duration.DurationInput
  readonly name?: string
  /** Work run with `runAssigned` for the member's life (the assignment checker's, say). */
  readonly work?: {
    readonly run: (assignment: Assignment) => Effect.Effect<void, never, Scope.Scope>
    readonly exclusive: Exclusive
  }
}): Effect.Effect<Member, unknown, Scope.Scope> =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
    const name = options.name ?? options.group
    const seq = yield* Effect.gen(function*() {
      const etcd = yield* Etcd.make({ endpoints: options.endpoints })
      return yield* EtcdSeq.make({ key: options.group, ttl: options.ttl }).pipe(Effect.provideService(Etcd, etcd))
    }).pipe(
      Scope.extend(scope),
      Effect.onError(() => Scope.close(scope, Exit.void)),
      Effect.annotateLogs({ member: name }),
      // RELIABILITY_DEBUG=1 shows the library's debug logs (failed keepalives, watch reconnects) per member.
      Logger.withMinimumLogLevel(process.env["RELIABILITY_DEBUG"] === undefined ? LogLevel.Info : LogLevel.Debug)
    )
    if (options.work !== undefined) {
      // In the member's scope, forked after it joined: its work stops before the member leaves.
      yield* EtcdSeq.runAssigned(options.work.run, { exclusive: options.work.exclusive }).pipe(
        Effect.provideService(EtcdSeq, seq),
        Effect.ignore,
        Effect.forkIn(scope)
      )
    }
    const history = yield* SubscriptionRef.make<ReadonlyArray<Timed>>([])
    yield* seq.changes.pipe(
      Stream.runForEach((info) =>
        Effect.flatMap(
          Clock.currentTimeMillis,
          (at) => SubscriptionRef.update(history, (all) => [...all, { info, at }])
        )
      ),
      Effect.ignore,
      // In the enclosing scope: it ends by itself when the member's scope closes, after recording Info.invalid.
      Effect.forkScoped
    )
    const until = (predicate: (info: Info) => boolean, within: Duration.DurationInput, what = "awaited Info") =>
      history.changes.pipe(
        Stream.map((all) => all.at(-1)),
        Stream.filter((last): last is Timed => last !== undefined && predicate(last.info)),
        Stream.runHead,
        Effect.map(Option.getOrThrow),
        Effect.timeout(within),
        Effect.orDieWith(() =>
          new Error(
            `${name}: no ${what} within ${Duration.format(Duration.decode(within))}; it saw ${
              Effect.runSync(SubscriptionRef.get(history)).map((t) => ic(t.info)).join(", ")
            }`
          )
        )
      )
    return {
      name,
      seq,
      history: SubscriptionRef.get(history),
      infos: Effect.map(SubscriptionRef.get(history), (all) => all.map((t) => ic(t.info))),
      until,
      leave: Scope.close(scope, Exit.void)
    }
  })

/** The group is converged: every member holds a valid Info of the same view, count `n`, indexes exactly 0..n-1. */
export const isConverged = (infos: ReadonlyArray<Info>): boolean =>
  infos.every(Info.isValid) &&
  infos.every((i) => i.count === infos.length && i.revision === infos[0]!.revision) &&
  [...infos.map((i) => i.index)].sort((a, b) => a - b).every((index, at) => index === at)

/**
 * Waits until `members` are converged (see {@link isConverged}), re-checking on every Info any of them emits; dies
 * after `within` with the Infos they hold.
 */
export const converged = (members: ReadonlyArray<Member>, within: Duration.DurationInput) =>
  Effect.gen(function*() {
    const last = yield* Ref.make<ReadonlyArray<Info>>([])
    const snapshot = Effect.forEach(members, (m) => m.seq.current).pipe(Effect.tap((infos) => Ref.set(last, infos)))
    return yield* Stream.mergeAll(members.map((m) => m.seq.changes), { concurrency: "unbounded" }).pipe(
      Stream.mapEffect(() => snapshot),
      Stream.filter(isConverged),
      Stream.runHead,
      Effect.map(Option.getOrThrow),
      Effect.timeout(within),
      Effect.catchAll(() =>
        Effect.flatMap(Ref.get(last), (infos) =>
          Effect.dieMessage(
            `${members.length} members not converged within ${Duration.format(Duration.decode(within))}: ${
              infos.map(String).join(", ")
            }`
          ))
      )
    )
  })

/** A plain etcd3 client for the test's own look-ups (compaction, keys, leases), closed with the scope. */
export const admin = (endpoints: ReadonlyArray<string>) =>
  Effect.acquireRelease(
    Effect.sync(() => new Etcd3({ hosts: [...endpoints] })),
    (client) => Effect.sync(() => client.close())
  )

/** What etcd holds: keys under the group and live leases (hex ids). */
export const leftovers = (endpoints: ReadonlyArray<string>, groups: ReadonlyArray<string>) =>
  Effect.scoped(Effect.gen(function*() {
    const client = yield* admin(endpoints)
    const keys = yield* Effect.forEach(
      groups,
      (group) => Effect.promise(() => client.getAll().prefix(`${group}/`).keys())
    )
    const leases = yield* Effect.promise(() => client.leaseClient.leaseLeases())
    return { keys: keys.flat(), leases: leases.leases.map((l) => BigInt(l.ID).toString(16)) }
  }))

/**
 * Waits (bounded: a crashed member's lease needs its TTL) until etcd holds no key of the groups and no lease at all
 * (each test has an etcd of its own), then asserts it.
 */
export const expectNothingLeftWithin = (
  endpoints: ReadonlyArray<string>,
  groups: ReadonlyArray<string>,
  within: Duration.DurationInput
) =>
  Effect.gen(function*() {
    const deadline = (yield* Clock.currentTimeMillis) + Duration.toMillis(Duration.decode(within))
    while (true) {
      const left = yield* leftovers(endpoints, groups).pipe(Effect.timeout("3 seconds"), Effect.option)
      if (Option.isSome(left) && left.value.keys.length === 0 && left.value.leases.length === 0) return
      if ((yield* Clock.currentTimeMillis) > deadline) {
        expect(Option.getOrUndefined(left), `etcd still holds this after ${Duration.format(Duration.decode(within))}`)
          .toEqual({ keys: [], leases: [] })
        return
      }
      // etcd has no event for a lease expiring; polling it is the only way to see it.
      yield* Effect.sleep("200 millis")
    }
  })

/** Asserts every pid is gone (after the scope that started them closed). */
export const expectPidsGone = (pids: ReadonlyArray<number | undefined>) =>
  Effect.sync(() => {
    const alive = pids.filter((pid): pid is number => pid !== undefined && !pidIsGone(pid))
    expect(alive).toEqual([])
  })

/** Records one measured figure: printed for the report, and returned. */
export const figure = (name: string, millis: number) =>
  Effect.sync(() => {
    console.log(`FIGURE ${name}: ${Math.round(millis)} ms`)
    return millis
  })

/** Milliseconds since `from` on the live clock. */
export const since = (from: number) => Effect.map(Clock.currentTimeMillis, (now) => now - from)
