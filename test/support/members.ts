/**
 * Helpers for tests that run members against a real etcd: clients, recorders of Infos, event-driven waits, and
 * the check that nothing is left behind.
 */
import { expect } from "@effect/vitest"
import { Duration, Effect, type Fiber, Option, type Scope, Stream, SubscriptionRef } from "effect"
import type { Etcd3Client, EtcdClient, EtcdOptions } from "../../src/Etcd.js"
import { Etcd, type EtcdSeqError, type EtcdSeqService, Info } from "../../src/index.js"
import * as Client from "../../src/internal/client.js"
import type { Shared } from "../../src/internal/client.js"
import { EtcdEndpoints } from "./etcd.js"
import { type Proxy, startProxy } from "./proxy.js"

/** What a client made by this library shares with its members: the seam, the lease pool (for internal tests). */
export const sharedOf = (etcd: EtcdClient): Shared => {
  const shared = Client.of(etcd)
  if (shared === undefined) throw new Error("not a client made by this library")
  return shared
}

/**
 * A service whose every use throws: provided as a client or a membership, it proves that a check comes before any
 * I/O.
 */
export const throwsOnUse = <A>(): A =>
  new Proxy({}, {
    get: () => {
      throw new Error("I/O attempted")
    }
  }) as A

/** A fresh group key per test, so tests sharing an etcd never see each other. */
export const uniqueGroup = (name: string): string =>
  `test/${name}-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`

/** A client to the suite's etcd, closed with the scope. */
export const client: Effect.Effect<Etcd3Client, EtcdSeqError, EtcdEndpoints | Scope.Scope> = Effect.flatMap(
  EtcdEndpoints,
  ({ endpoints }) => Etcd.make({ endpoints })
)

/** A client to the suite's etcd through a proxy of its own, which the test can disturb; both closed with the scope. */
export const clientBehindProxy = (
  options: Omit<EtcdOptions, "endpoints"> = {}
): Effect.Effect<{ readonly proxy: Proxy; readonly etcd: Etcd3Client }, EtcdSeqError, EtcdEndpoints | Scope.Scope> =>
  Effect.gen(function*() {
    const { endpoints } = yield* EtcdEndpoints
    const proxy = yield* startProxy(endpoints[0]!)
    const etcd = yield* Etcd.make({ ...options, endpoints: [proxy.endpoint] })
    return { proxy, etcd }
  })

/** Records every Info a member's `changes` emits, and how the stream ended. */
export interface Recorder {
  readonly infos: Effect.Effect<ReadonlyArray<string>>
  /** Waits (bounded) until at least `n` Infos were recorded. */
  readonly atLeast: (n: number, within?: Duration.DurationInput) => Effect.Effect<ReadonlyArray<string>>
  /** Completes with the stream's exit once it ends. */
  readonly done: Fiber.Fiber<void, EtcdSeqError>
}

export const record = (seq: EtcdSeqService): Effect.Effect<Recorder, never, Scope.Scope> =>
  Effect.gen(function*() {
    const seen = yield* SubscriptionRef.make<ReadonlyArray<string>>([])
    const done = yield* seq.changes.pipe(
      Stream.runForEach((info) => SubscriptionRef.update(seen, (all) => [...all, String(info)])),
      Effect.forkScoped
    )
    const atLeast = (n: number, within: Duration.DurationInput = "5 seconds") =>
      seen.changes.pipe(
        Stream.filter((all) => all.length >= n),
        Stream.runHead,
        Effect.map(Option.getOrElse((): ReadonlyArray<string> => [])),
        Effect.timeoutFail({ duration: within, onTimeout: () => new Error(`fewer than ${n} Infos recorded`) }),
        Effect.orDie
      )
    return { infos: SubscriptionRef.get(seen), atLeast, done }
  })

/** Index and count only: what `Equal` compares, and what tests assert in sequences. */
export const ic = (info: Info): string => Info.isValid(info) ? `${info.index}/${info.count}` : "invalid"

/**
 * Waits, on the member's own events, until its Info satisfies `predicate`; fails the test after `within`.
 */
export const waitFor = (
  seq: EtcdSeqService,
  predicate: (info: Info) => boolean,
  within: Duration.DurationInput = "5 seconds"
): Effect.Effect<Info> =>
  seq.changes.pipe(
    Stream.filter(predicate),
    Stream.runHead,
    Effect.flatMap(Option.match({
      onNone: () => Effect.dieMessage("the member's stream ended before the awaited Info"),
      onSome: Effect.succeed
    })),
    Effect.timeoutFail({
      duration: within,
      onTimeout: () => new Error(`no awaited Info within ${Duration.format(Duration.decode(within))}`)
    }),
    Effect.orDie
  )

/** Waits until the member's Info is exactly `index/count`. */
export const waitForInfo = (seq: EtcdSeqService, index: number, count: number, within?: Duration.DurationInput) =>
  waitFor(seq, (info) => info.index === index && info.count === count, within)

/** Collected infos as strings of index/count. */
export const strip = (infos: ReadonlyArray<string>): ReadonlyArray<string> =>
  infos.map((s) => s === "invalid" ? s : s.split("@")[0]!)

/** The hex lease id a member id (`<lease hex>_<n>`) is bound to. */
export const leaseOf = (memberId: string): string => memberId.split("_")[0]!

/**
 * Asserts that etcd holds no key under the group and none of the given members' leases: what a user relies on
 * after every member's scope has closed.
 */
export const expectNothingLeft = (group: string, memberIds: ReadonlyArray<string>) =>
  Effect.scoped(Effect.gen(function*() {
    const { client: etcd } = yield* client
    const keys = yield* Effect.promise(() => etcd.getAll().prefix(`${group}/`).keys())
    expect(keys).toEqual([])
    const leases = yield* Effect.promise(() => etcd.leaseClient.leaseLeases())
    const live = new Set(leases.leases.map((l) => BigInt(l.ID).toString(16)))
    expect(memberIds.map(leaseOf).filter((id) => live.has(id))).toEqual([])
  }))
