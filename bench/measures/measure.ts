/**
 * One measured change: run an action, wait (bounded) until every member of a set of slots holds the expected count,
 * and take what etcd, the implementation and this process spent in between.
 */
import { Duration, Effect, Exit, Fiber, Option } from "effect"
import type { Info } from "../../src/index.js"
import type { ClientCounters, Driver } from "../drivers/driver.js"
import type { Outcome } from "../drivers/tracker.js"
import { type BenchError, diff, type EtcdCounters, scrapeOrUnreadable } from "./etcdMetrics.js"
import { cpuMs, nowMs } from "./runtime.js"

/** What a window of time cost: etcd's counters, the implementation's own, and this process's CPU. */
export interface Cost {
  readonly etcd: EtcdCounters
  readonly client: ClientCounters
  readonly cpuMs: number
  readonly wallMs: number
}

export interface Measured {
  readonly complete: boolean
  /** From the action's start to the last member's new Info (ms). */
  readonly ms: number
  readonly reached: number
  readonly expected: number
  /** Every member holds a distinct index in 0..count-1 and the expected count. */
  readonly consistent: boolean
  readonly stragglers: ReadonlyArray<string>
  readonly cost: Cost
}

export interface Snapshot {
  readonly etcd: EtcdCounters
  readonly client: ClientCounters
  readonly cpuMs: number
  readonly at: number
}

export const before = (driver: Driver, endpoint: string): Effect.Effect<Snapshot> =>
  Effect.gen(function*() {
    const etcd = yield* scrapeOrUnreadable(endpoint)
    const client = yield* driver.counters
    return { etcd, client, cpuMs: yield* cpuMs, at: yield* nowMs }
  })

export const after = (driver: Driver, endpoint: string): Effect.Effect<Snapshot> =>
  Effect.gen(function*() {
    const at = yield* nowMs
    const cpu = yield* cpuMs
    const client = yield* driver.counters
    return { etcd: yield* scrapeOrUnreadable(endpoint), client, cpuMs: cpu, at }
  })

export const costOf = (b: Snapshot, a: Snapshot): Cost => ({
  etcd: diff(a.etcd, b.etcd),
  client: {
    groupReads: a.client.groupReads - b.client.groupReads,
    watchResponses: a.client.watchResponses - b.client.watchResponses
  },
  cpuMs: a.cpuMs - b.cpuMs,
  wallMs: a.at - b.at
})

/** Every member in `slots` holds `count` and a distinct index in 0..count-1. */
export const consistent = (infos: ReadonlyMap<number, Info>, slots: ReadonlyArray<number>, count: number): boolean => {
  const seen = new Set<number>()
  for (const slot of slots) {
    const info = infos.get(slot)
    if (info === undefined || info.count !== count || info.index < 0 || info.index >= count) return false
    seen.add(info.index)
  }
  return seen.size === slots.length && slots.length === count
}

/**
 * Runs `action` and waits until every member in `slots` holds `count`, bounded; then waits (bounded) for the action
 * itself, whose requests belong to the change. What etcd and this process spent in between is the change's cost.
 */
export const measure = <A>(
  config: { readonly endpoint: string },
  driver: Driver,
  action: Effect.Effect<A, BenchError>,
  slots: ReadonlyArray<number>,
  count: number,
  bound: Duration.Duration,
  hopeless: (result: A) => boolean = () => false
): Effect.Effect<
  { readonly measured: Measured; readonly result: Option.Option<A>; readonly outcome: Outcome },
  BenchError
> =>
  Effect.gen(function*() {
    const b = yield* before(driver, config.endpoint)
    const goal = yield* driver.tracker.expect(slots, (_, info) => info.count === count)
    const fiber = yield* Effect.fork(action)
    // Members whose join failed never report: once the action is done and says so, the goal cannot be reached.
    const outcome = yield* Effect.raceFirst(
      goal.await(bound),
      Fiber.join(fiber).pipe(
        Effect.flatMap((a) => (hopeless(a) ? goal.await(Duration.zero) : Effect.never)),
        Effect.catchAll(() => goal.await(Duration.zero))
      )
    )
    // The action's own result: awaited (bounded) when every member got there, else taken if it is done already.
    const result: Option.Option<A> = outcome.complete
      ? yield* Fiber.join(fiber).pipe(Effect.timeout(bound), Effect.option)
      : Option.flatMap(yield* Fiber.poll(fiber), (e) => (Exit.isSuccess(e) ? Option.some(e.value) : Option.none()))
    if (Option.isNone(result)) {
      yield* Fiber.interrupt(fiber).pipe(Effect.timeout(Duration.seconds(10)), Effect.ignore)
    }
    const a = yield* after(driver, config.endpoint)
    const infos = yield* driver.tracker.infos
    return {
      outcome,
      result,
      measured: {
        complete: outcome.complete && Option.isSome(result),
        ms: outcome.end - outcome.start,
        reached: outcome.reached,
        expected: outcome.expected,
        consistent: consistent(infos, slots, count),
        stragglers: outcome.stragglers,
        cost: costOf(b, a)
      }
    }
  })
