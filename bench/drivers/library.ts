/**
 * The library under test: members of one group hosted in this process, sharing `clients` Etcd clients (member `slot`
 * uses client `slot % clients`), each in its own scope, so closing that scope is a graceful leave.
 */
import { Duration, Effect, ExecutionStrategy, Exit, Metric, Ref, Scope, Stream } from "effect"
import { Etcd, type EtcdClient, EtcdSeq, type EtcdSeqError } from "../../src/index.js"
import { membersPrefix } from "../../src/internal/keys.js"
import { groupReads, watchResponses } from "../../src/internal/metrics.js"
import { BenchError } from "../measures/etcdMetrics.js"
import { type ClientCounters, type Driver, joinEach, type MemberHandle } from "./driver.js"
import * as Tracker from "./tracker.js"

export interface LibraryOptions {
  readonly endpoints: ReadonlyArray<string>
  readonly group: string
  /** Lease TTL of every member. */
  readonly ttl: Duration.DurationInput
  /** Etcd clients the members are spread over. */
  readonly clients: number
  /** Bound on closing every member at the end. */
  readonly closeWithin: Duration.DurationInput
  /** Joins at once when a steady group is built without a storm. */
  readonly prefillConcurrency: number
}

const describe = (error: EtcdSeqError): string => {
  const client = "error" in error && error.error instanceof Error ? `: ${error.error.name}: ${error.error.message}` : ""
  return `${error._tag}${client}`
}

const counterValue = (counter: typeof groupReads) => Effect.map(Metric.value(counter), (state) => state.count)

export const make = (options: LibraryOptions): Effect.Effect<Driver, BenchError, Scope.Scope> =>
  Effect.gen(function*() {
    const clients: ReadonlyArray<EtcdClient> = yield* Effect.forEach(
      Array.from({ length: options.clients }),
      () => Etcd.make({ endpoints: options.endpoints }),
      { concurrency: "unbounded" }
    ).pipe(Effect.mapError((cause) => new BenchError({ message: "cannot create the library's etcd clients", cause })))
    const tracker = yield* Tracker.make
    const outer = yield* Effect.scope
    // Members' scopes are children of this one, closed in parallel; it is replaced once closed.
    const groupScope = yield* Ref.make(yield* Scope.fork(outer, ExecutionStrategy.parallel))

    const join = (slot: number): Effect.Effect<MemberHandle, BenchError> =>
      Effect.gen(function*() {
        const scope = yield* Scope.fork(yield* Ref.get(groupScope), ExecutionStrategy.sequential)
        const seq = yield* EtcdSeq.make({ key: options.group, ttl: options.ttl }).pipe(
          Effect.provideService(Etcd, clients[slot % clients.length]!),
          Scope.extend(scope),
          Effect.tapError(() => Scope.close(scope, Exit.void)),
          Effect.mapError((cause) =>
            new BenchError({ message: `library member ${slot} could not join: ${describe(cause)}`, cause })
          )
        )
        yield* seq.changes.pipe(
          Stream.runForEach((info) => tracker.observe(slot, info)),
          Effect.ignore,
          Effect.forkIn(scope)
        )
        return {
          slot,
          leave: tracker.forget(slot).pipe(
            Effect.zipRight(Scope.close(scope, Exit.void)),
            Effect.timeout(options.closeWithin),
            Effect.ignore
          )
        }
      })

    const counters: Effect.Effect<ClientCounters> = Effect.all({
      groupReads: counterValue(groupReads),
      watchResponses: counterValue(watchResponses)
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

    return {
      name: options.clients === 1 ? "library" : `library ×${options.clients} clients`,
      group: options.group,
      membersPrefix: membersPrefix(options.group),
      tracker,
      join,
      joinAll: (slots) => joinEach(slots, join, "unbounded"),
      // Not a storm: a few at a time, each registration waiting for its own join in the shared view.
      prefill: (slots) => joinEach(slots, join, options.prefillConcurrency),
      counters,
      closeAll
    }
  })
