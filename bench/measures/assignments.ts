/**
 * Assignment handover: the time from a membership change to every member running its new work under
 * `runAssigned`, per exclusivity mode, beside the plain `changes` convergence measured on the same change.
 *
 * For each mode and size N: N members (one client, one process) run `runAssigned`; one more member joins, then
 * leaves; each time we record, from the moment the change was written, when every member's `changes` showed the new
 * count and when every member's work for the new count had started.
 */
import { Duration, Effect, Exit, Option, Scope, Stream } from "effect"
import { Etcd, EtcdSeq, type EtcdSeqService, type Exclusive } from "../../src/index.js"
import { nowMs, unsafeNowMs } from "./runtime.js"
import { round, summarize } from "./stats.js"

export interface AssignmentRow {
  readonly mode: Exclusive
  readonly size: number
  readonly changes: { readonly median: number; readonly max: number }
  readonly work: { readonly median: number; readonly max: number }
  readonly samples: number
}

interface Tracked {
  readonly seq: EtcdSeqService
  readonly leave: Effect.Effect<void>
  /** Monotonic time at which this member last saw count n / last started work for count n. */
  readonly sawCount: Map<number, number>
  readonly workedCount: Map<number, number>
}

const within = Duration.seconds(30)

const until = (done: () => boolean, what: string) =>
  Effect.gen(function*() {
    const deadline = (yield* nowMs) + Duration.toMillis(within)
    while (!done()) {
      if ((yield* nowMs) > deadline) return yield* Effect.dieMessage(`${what} did not happen within 30 s`)
      yield* Effect.sleep("2 millis")
    }
  })

const member = (etcd: Etcd["Type"], group: string, mode: Exclusive) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const seq = yield* EtcdSeq.make({ key: group, ttl: "10 seconds" }).pipe(
      Effect.provideService(Etcd, etcd),
      Scope.extend(scope)
    )
    const tracked: Tracked = {
      seq,
      leave: Scope.close(scope, Exit.void),
      sawCount: new Map(),
      workedCount: new Map()
    }
    yield* seq.changes.pipe(
      Stream.runForEach((info) => Effect.sync(() => tracked.sawCount.set(info.count, unsafeNowMs()))),
      Effect.forkIn(scope)
    )
    yield* EtcdSeq.runAssigned(
      (a) =>
        Effect.sync(() => tracked.workedCount.set(a.info.count, unsafeNowMs())).pipe(Effect.zipRight(Effect.never)),
      { exclusive: mode }
    ).pipe(Effect.provideService(EtcdSeq, seq), Effect.forkIn(scope))
    return tracked
  })

/** Converged on `count` after `t0`: the latest moment any member reached it. */
const convergence = (members: ReadonlyArray<Tracked>, key: "sawCount" | "workedCount", count: number, t0: number) => {
  const times = members.map((m) => m[key].get(count))
  return times.every((t) => t !== undefined && t >= t0)
    ? Option.some(Math.max(...(times as Array<number>)) - t0)
    : Option.none()
}

export const measureAssignments = (options: {
  readonly endpoint: string
  readonly sizes: ReadonlyArray<number>
  readonly rounds: number
}): Effect.Effect<ReadonlyArray<AssignmentRow>, unknown, Scope.Scope> =>
  Effect.gen(function*() {
    const rows: Array<AssignmentRow> = []
    for (const size of options.sizes) {
      for (const mode of ["none", "index", "group"] as const) {
        const etcd = yield* Etcd.make({ endpoints: [options.endpoint] })
        const group = `bench/assign-${mode}-${size}-${Date.now().toString(36)}`
        const members: Array<Tracked> = []
        for (let i = 0; i < size; i++) members.push(yield* member(etcd, group, mode))
        yield* until(() => members.every((m) => m.workedCount.has(size)), `${mode}: all ${size} at work`)
        const changes: Array<number> = []
        const work: Array<number> = []
        for (let r = 0; r < options.rounds; r++) {
          // A join: every member (and the newcomer) must work for count size + 1.
          let t0 = yield* nowMs
          const extra = yield* member(etcd, group, mode)
          const all = [...members, extra]
          yield* until(() => Option.isSome(convergence(all, "workedCount", size + 1, t0)), `${mode}: join`)
          changes.push(Option.getOrThrow(convergence(all, "sawCount", size + 1, t0)))
          work.push(Option.getOrThrow(convergence(all, "workedCount", size + 1, t0)))
          // A graceful leave: the others back to count size.
          t0 = yield* nowMs
          yield* extra.leave
          yield* until(() => Option.isSome(convergence(members, "workedCount", size, t0)), `${mode}: leave`)
          changes.push(Option.getOrThrow(convergence(members, "sawCount", size, t0)))
          work.push(Option.getOrThrow(convergence(members, "workedCount", size, t0)))
        }
        yield* Effect.forEach(members, (m) => m.leave, { concurrency: "unbounded", discard: true })
        const c = summarize(changes)
        const w = summarize(work)
        rows.push({
          mode,
          size,
          changes: { median: round(c.median), max: round(c.max) },
          work: { median: round(w.median), max: round(w.max) },
          samples: work.length
        })
      }
    }
    return rows
  })

export const assignmentsMarkdown = (rows: ReadonlyArray<AssignmentRow>): string =>
  [
    "| mode | members | `changes` converged, median / max (ms) | every member at new work, median / max (ms) |",
    "| --- | ---: | ---: | ---: |",
    ...rows.map((r) =>
      `| ${r.mode} | ${r.size} | ${r.changes.median} / ${r.changes.max} | ${r.work.median} / ${r.work.max} |`
    )
  ].join("\n")
