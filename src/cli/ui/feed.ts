/**
 * What `etcdseq ui` serves, held once per server: ONE observe of the group feeds a `SubscriptionRef` that every
 * connected tab reads, so a second tab costs no second watch. Beside it, a probe (one read of one key a second)
 * says whether etcd answers: an observe that already runs does not fail in an outage (its watch resumes by itself,
 * prefixCache.ts), it only goes quiet, and the page must say so.
 *
 * Only what `GroupView` holds reaches the page (with when each member was first seen, and the timeline): never the
 * connection's endpoints, credentials or TLS material, which this module never sees.
 */
import { Clock, Duration, Effect, Schedule, type Scope, Stream, SubscriptionRef } from "effect"
import type { EtcdSeqError } from "../../EtcdSeqError.js"
import type { GroupView } from "../../GroupView.js"
import * as Bounded from "../../internal/bounded.js"
import { type Change, changes } from "./timeline.js"

/** A line of the timeline, numbered so that a tab sends each line once. */
interface Entry extends Change {
  readonly seq: number
  /** When the server saw it (ms since the epoch). */
  readonly at: number
}

/** Whether etcd answers, as the page's banner shows it. */
interface Status {
  readonly etcd: "connected" | "unavailable"
  /** Since when (ms since the epoch). */
  readonly since: number
  /** Why not, when unavailable. */
  readonly reason?: string | undefined
}

/** The state every tab reads. */
export interface Snapshot {
  /** The latest view, as the JSON text of a `view` event (`{ at, view, seen }`), made once for every tab. */
  readonly viewText: string | undefined
  readonly status: Status
  /** The last `timelineLength` lines, oldest first. */
  readonly timeline: ReadonlyArray<Entry>
}

export interface FeedOptions {
  /** The group's views: `EtcdSeq.observe(group)`. Run once, and again after it fails. */
  readonly views: Stream.Stream<GroupView, EtcdSeqError>
  /** One cheap request to etcd: fails with `EtcdUnavailable` while etcd does not answer. */
  readonly probe: Effect.Effect<void, EtcdSeqError>
  readonly probeEvery?: Duration.DurationInput | undefined
  readonly probeTimeout?: Duration.DurationInput | undefined
}

const timelineLength = 200

/** Retries of the observe after a failure: from 250 ms, at most 5 s apart, forever. */
const retry = Schedule.exponential("250 millis").pipe(Schedule.union(Schedule.spaced("5 seconds")), Schedule.jittered)

interface Problems {
  probe?: string | undefined
  observe?: string | undefined
}

/** The feed of one group, for the life of the scope. */
export const make = (
  options: FeedOptions
): Effect.Effect<SubscriptionRef.SubscriptionRef<Snapshot>, never, Scope.Scope> =>
  Effect.gen(function*() {
    const start = yield* Clock.currentTimeMillis
    const ref = yield* SubscriptionRef.make<Snapshot>({
      viewText: undefined,
      status: { etcd: "connected", since: start },
      timeline: []
    })
    // Held by the one fiber of each kind that writes them, under the ref's own lock (SubscriptionRef.update).
    let latest: GroupView | undefined
    const seen = new Map<string, number>()
    const problems: Problems = {}
    let seq = 0

    const append = (timeline: ReadonlyArray<Entry>, lines: ReadonlyArray<Change>, at: number) =>
      lines.length === 0
        ? timeline
        : [...timeline, ...lines.map((line): Entry => ({ ...line, seq: ++seq, at }))].slice(-timelineLength)

    const onView = (view: GroupView) =>
      Effect.flatMap(Clock.currentTimeMillis, (at) =>
        SubscriptionRef.update(ref, (s) => {
          const lines = changes(latest, view)
          latest = view
          const ids = new Set(view.members.map((m) => m.id))
          for (const id of seen.keys()) if (!ids.has(id)) seen.delete(id)
          for (const id of ids) if (!seen.has(id)) seen.set(id, at)
          return {
            ...s,
            viewText: JSON.stringify({ at, view, seen: Object.fromEntries(seen) }),
            timeline: append(s.timeline, lines, at)
          }
        }))

    /** Records a problem of one kind (or its end) and, when that turns etcd's status, says so in the timeline. */
    const setProblem = (kind: keyof Problems, reason: string | undefined) =>
      // Unchanged (the probe's answer every second, the observe's every view): no state for every tab to compare.
      problems[kind] === reason ?
        Effect.void :
        Effect.flatMap(Clock.currentTimeMillis, (at) =>
          SubscriptionRef.update(ref, (s) => {
            problems[kind] = reason
            const first = problems.probe ?? problems.observe
            const etcd: Status["etcd"] = first === undefined ? "connected" : "unavailable"
            if (etcd === s.status.etcd) {
              return first === s.status.reason ? s : { ...s, status: { ...s.status, reason: first } }
            }
            const line: Change = etcd === "connected"
              ? { kind: "etcd", text: "etcd answers again" }
              : { kind: "etcd", text: `etcd unavailable: ${first}` }
            return { ...s, status: { etcd, since: at, reason: first }, timeline: append(s.timeline, [line], at) }
          }))

    // --- The one observe ---
    yield* options.views.pipe(
      Stream.runForEach((view) => Effect.zipRight(setProblem("observe", undefined), onView(view))),
      Effect.tapError((error) => setProblem("observe", error.message)),
      Effect.retry(retry),
      // The stream does not end while etcd is there; should it, it starts again.
      Effect.zipRight(Effect.sleep("1 second")),
      Effect.forever,
      Effect.forkScoped
    )

    // --- The probe ---
    const probeTimeout = Duration.decode(options.probeTimeout ?? "3 seconds")
    yield* options.probe.pipe(
      Bounded.timeoutFail({
        duration: probeTimeout,
        onTimeout: () => ({ _tag: "Timeout", message: `no answer within ${Duration.format(probeTimeout)}` }) as const
      }),
      Effect.matchEffect({
        // etcd answered, even with a refusal: it is there.
        onFailure: (e) => setProblem("probe", e._tag === "EtcdRequestFailed" ? undefined : e.message),
        onSuccess: () => setProblem("probe", undefined)
      }),
      Effect.repeat(Schedule.spaced(options.probeEvery ?? "1 second")),
      Effect.forkScoped
    )
    return ref
  })
