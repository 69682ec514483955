/**
 * The baseline: the Go original's algorithm, as it ran in every member. Each member has its own lease (kept alive by
 * the client) and its own watcher on the group prefix; on every watch response it re-reads the whole group prefix
 * and derives its index by sorting the keys as strings (its key names its lease, so this is lease-id order) and
 * finding its own. Members hosted in one process share one etcd3 client, as the library's members do.
 */
import { Duration, Effect, Either, ExecutionStrategy, Exit, Queue, Ref, Scope, Stream } from "effect"
import type { Etcd3, Lease } from "etcd3"
import { Info } from "../../src/index.js"
import { BenchError } from "../measures/etcdMetrics.js"
import { bounded, rawClient } from "../measures/probe.js"
import { type ClientCounters, type Driver, joinEach, type MemberHandle } from "./driver.js"
import * as Tracker from "./tracker.js"

export interface BaselineOptions {
  readonly endpoints: ReadonlyArray<string>
  readonly group: string
  readonly ttlSeconds: number
  /** Bound on each etcd request and watcher creation of a member. */
  readonly requestWithin: Duration.DurationInput
  /** Bound on closing every member at the end. */
  readonly closeWithin: Duration.DurationInput
}

/** Same layout and value size as the library's keys, so reads and events carry the same bytes. */
export const membersPrefix = (group: string): string => `${group}/members/`
const memberValue = JSON.stringify({ v: 1, metadata: "" })

interface Counts {
  groupReads: number
  watchResponses: number
  failedReads: number
}

/** A registered member: its key, and the revoke of its lease (once; later calls do nothing). */
export interface Registration {
  readonly key: string
  readonly revoke: Effect.Effect<void>
}

/** etcd3 marks a lease revoked as soon as its revoke starts, so a second call (the scope's release) sends nothing. */
const revokeOnce = (lease: Lease, requestWithin: Duration.DurationInput): Effect.Effect<void> =>
  Effect.suspend(() => lease.revoked() ? Effect.void : bounded("baseline revoke", () => lease.revoke(), requestWithin))
    .pipe(Effect.ignore)

/** Registers like the Go original: grant a lease kept alive by the client, write the member key under it. */
export const register = (
  client: Etcd3,
  prefix: string,
  ttlSeconds: number,
  requestWithin: Duration.DurationInput
): Effect.Effect<Registration, BenchError, Scope.Scope> =>
  Effect.gen(function*() {
    const lease = yield* Effect.acquireRelease(
      Effect.sync(() => {
        const lease = client.lease(ttlSeconds)
        lease.on("lost", () => {})
        return lease
      }),
      (lease) => revokeOnce(lease, requestWithin)
    )
    const revoke = revokeOnce(lease, requestWithin)
    const id = yield* bounded("baseline lease grant", () => lease.grant(), requestWithin)
    const key = prefix + BigInt(id).toString(16)
    yield* bounded("baseline put", () => lease.put(key).value(memberValue).exec(), requestWithin)
    return { key, revoke }
  })

/**
 * Follows the group like the Go original: one watcher per member; every watch response, in order, triggers a full
 * read of the prefix, and the member's Info is its key's rank among the sorted keys.
 */
const follow = (
  client: Etcd3,
  prefix: string,
  key: string,
  report: (info: Info) => Effect.Effect<void>,
  counts: Counts,
  requestWithin: Duration.DurationInput
): Effect.Effect<void, BenchError, Scope.Scope> =>
  Effect.gen(function*() {
    const responses = yield* Queue.unbounded<void>()
    const watcher = yield* Effect.acquireRelease(
      bounded("baseline watcher", () => client.watch().prefix(prefix).create(), requestWithin),
      (w) => bounded("baseline watcher cancel", () => w.cancel(), requestWithin).pipe(Effect.ignore)
    )
    watcher.on("data", () => {
      counts.watchResponses++
      Queue.unsafeOffer(responses, undefined)
    })
    watcher.on("error", () => {})
    const reread = bounded("baseline re-read", () => client.getAll().prefix(prefix).exec(), requestWithin).pipe(
      Effect.flatMap((response) => {
        counts.groupReads++
        const keys = response.kvs.map((kv) => kv.key.toString()).sort()
        const index = keys.indexOf(key)
        return report(index < 0 ? Info.invalid : Info.make(index, keys.length, Number(response.header.revision)))
      }),
      Effect.catchAll(() => Effect.sync(() => counts.failedReads++))
    )
    yield* reread.pipe(
      Effect.zipRight(Stream.fromQueue(responses).pipe(Stream.runForEach(() => reread))),
      Effect.forkScoped
    )
  })

export const make = (options: BaselineOptions): Effect.Effect<Driver, never, Scope.Scope> =>
  Effect.gen(function*() {
    const client = yield* rawClient(options.endpoints)
    const prefix = membersPrefix(options.group)
    const tracker = yield* Tracker.make
    const counts: Counts = { groupReads: 0, watchResponses: 0, failedReads: 0 }
    const outer = yield* Effect.scope
    const groupScope = yield* Ref.make(yield* Scope.fork(outer, ExecutionStrategy.parallel))

    const memberScope = Effect.flatMap(Ref.get(groupScope), (s) => Scope.fork(s, ExecutionStrategy.sequential))
    const registerIn = (slot: number, scope: Scope.CloseableScope) =>
      register(client, prefix, options.ttlSeconds, options.requestWithin).pipe(
        Scope.extend(scope),
        Effect.tapError(() => Scope.close(scope, Exit.void)),
        Effect.mapError((cause) => new BenchError({ message: `baseline member ${slot} could not join`, cause }))
      )
    const followIn = (slot: number, scope: Scope.CloseableScope, { key }: Registration) =>
      follow(client, prefix, key, (info) => tracker.observe(slot, info), counts, options.requestWithin).pipe(
        Scope.extend(scope),
        Effect.tapError(() => Scope.close(scope, Exit.void))
      )
    // A leave revokes first, then stops watching: the others hear of it as early as the algorithm allows.
    const handle = (slot: number, scope: Scope.CloseableScope, registration: Registration): MemberHandle => ({
      slot,
      leave: tracker.forget(slot).pipe(
        Effect.zipRight(registration.revoke),
        Effect.zipRight(Scope.close(scope, Exit.void)),
        Effect.timeout(options.closeWithin),
        Effect.ignore
      )
    })

    const join = (slot: number) =>
      Effect.gen(function*() {
        const scope = yield* memberScope
        const registration = yield* registerIn(slot, scope)
        yield* followIn(slot, scope, registration)
        return handle(slot, scope, registration)
      })

    const prefill = (slots: ReadonlyArray<number>) =>
      Effect.gen(function*() {
        const registered = yield* Effect.forEach(slots, (slot) =>
          Effect.gen(function*() {
            const scope = yield* memberScope
            return { slot, scope, registration: yield* registerIn(slot, scope) }
          }).pipe(Effect.either), { concurrency: "unbounded" })
        const followed = yield* Effect.forEach(
          registered,
          (r): Effect.Effect<Either.Either<MemberHandle, BenchError>> =>
            Either.isLeft(r) ? Effect.succeed(Either.left(r.left)) : Effect.either(
              Effect.as(
                followIn(r.right.slot, r.right.scope, r.right.registration),
                handle(r.right.slot, r.right.scope, r.right.registration)
              )
            ),
          { concurrency: "unbounded" }
        )
        return {
          handles: followed.flatMap((o) => (o._tag === "Right" ? [o.right] : [])),
          failures: followed.flatMap((o) => (o._tag === "Left" ? [o.left.message] : []))
        }
      })

    const closeAll = Effect.gen(function*() {
      const old = yield* Ref.get(groupScope)
      yield* Ref.set(groupScope, yield* Scope.fork(outer, ExecutionStrategy.parallel))
      return yield* Scope.close(old, Exit.void).pipe(
        Effect.timeout(options.closeWithin),
        Effect.as(true),
        Effect.orElseSucceed(() => false)
      )
    })

    const counters: Effect.Effect<ClientCounters> = Effect.sync(() => ({
      groupReads: counts.groupReads,
      watchResponses: counts.watchResponses
    }))

    return {
      name: "baseline",
      group: options.group,
      membersPrefix: prefix,
      tracker,
      join,
      joinAll: (slots) => joinEach(slots, join, "unbounded"),
      prefill,
      counters,
      closeAll
    }
  })
