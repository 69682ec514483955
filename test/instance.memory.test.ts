/**
 * Static membership over the in-memory etcd, under the TestClock: a restarted member with an instance keeps its
 * place and the others see nothing; of two live members with one instance the newer wins, the older fails with
 * `InstanceTaken` and never comes back; exclusive work never overlaps across the takeover.
 */
import { describe, expect, it } from "@effect/vitest"
import { Cause, ConfigProvider, Context, Effect, Exit, Fiber, Layer, Option, Scope, Stream } from "effect"
import { Etcd, type EtcdClient, EtcdSeq, type EtcdSeqService, MemoryEtcd } from "../src/index.js"
import { indexOverlaps, makeChecker, shareOverlaps } from "./support/checker.js"
import { throwsOnUse } from "./support/members.js"
import { makeShardChecker, shardOverlaps } from "./support/shardChecker.js"
import { advance, settle } from "./support/testClock.js"

const ttl = "3 seconds"

type Mode =
  | { readonly _tag: "index" | "group"; readonly checker: ReturnType<typeof makeChecker> }
  | { readonly _tag: "shards"; readonly shards: number; readonly checker: ReturnType<typeof makeShardChecker> }

/** A member on a process of its own (a client of the in-memory etcd): its Infos recorded, its work run by `mode`. */
const member = (
  key: string,
  name: string,
  options: {
    readonly instance?: string
    readonly keepPlaceOnLeave?: boolean
    readonly mode?: Mode
    readonly stopMillis?: number
  } = {}
) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const context = yield* Layer.buildWithScope(Etcd.layerMemory, scope)
    const seq = yield* EtcdSeq.make({
      key,
      ttl,
      instance: options.instance,
      keepPlaceOnLeave: options.keepPlaceOnLeave
    })
      .pipe(
        Effect.provide(context),
        Scope.extend(scope)
      )
    const seen: Array<string> = []
    const changes = yield* seq.changes.pipe(
      Stream.runForEach((info) => Effect.sync(() => void seen.push(String(info)))),
      Effect.exit,
      Effect.forkIn(scope)
    )
    const mode = options.mode
    const runner = mode === undefined
      ? undefined
      : yield* (mode._tag === "shards"
        ? EtcdSeq.runShards({ shards: mode.shards }, mode.checker.work(name, options.stopMillis))
        : EtcdSeq.runAssigned(mode.checker.work(name, options.stopMillis), { exclusive: mode._tag })).pipe(
          Effect.provideService(EtcdSeq, seq),
          Effect.exit,
          Effect.forkIn(scope)
        )
    return {
      seq,
      etcd: Context.get(context, Etcd) as EtcdClient,
      seen,
      changes,
      runner,
      leave: Scope.close(scope, Exit.void)
    }
  })

/** `index/count` of each. */
const currents = (members: ReadonlyArray<{ readonly seq: EtcdSeqService }>) =>
  Effect.forEach(members, (m) => Effect.map(m.seq.current, (info) => String(info).split("@")[0]))

/**
 * The revision each names the view by. A takeover (or a leave parking the place) renames the view for everyone: the
 * others' index and count do not change (they are told nothing), but the new incarnation's fence is above its
 * predecessor's, and all agree on it.
 */
const revisions = (members: ReadonlyArray<{ readonly seq: EtcdSeqService }>) =>
  Effect.forEach(members, (m) => Effect.map(m.seq.current, (info) => info.revision))

const failureOf = (fiber: Fiber.Fiber<Exit.Exit<unknown, unknown>> | undefined) =>
  Effect.gen(function*() {
    const exit = Option.getOrUndefined(yield* Fiber.poll(fiber!))
    const inner = exit !== undefined && Exit.isSuccess(exit) ? exit.value : undefined
    return inner !== undefined && Exit.isFailure(inner)
      ? Option.getOrUndefined(Cause.failureOption(inner.cause))
      : undefined
  })

/** The runs in `runs` of these members: to show that their work neither stopped nor started again. */
const runsOf = (runs: ReadonlyArray<{ readonly member: string; readonly end: number }>, names: ReadonlyArray<string>) =>
  runs.filter((r) => names.includes(r.member)).map((r) => `${r.member}${Number.isFinite(r.end) ? " ended" : ""}`)

const modes = (): ReadonlyArray<[string, () => Mode]> => [
  ["index", () => ({ _tag: "index", checker: makeChecker() })],
  ["group", () => ({ _tag: "group", checker: makeChecker() })],
  ["shards", () => ({ _tag: "shards", shards: 12, checker: makeShardChecker() })]
]

const overlaps = (mode: Mode): ReadonlyArray<string> =>
  mode._tag === "shards"
    ? shardOverlaps(mode.checker.runs)
    : mode._tag === "index"
    ? indexOverlaps(mode.checker.runs)
    : shareOverlaps(mode.checker.runs)

/** What `name` runs now: its Info (runAssigned) or its shards (runShards). */
const holding = (mode: Mode, name: string): string => {
  if (mode._tag === "shards") {
    return mode.checker.runs.filter((r) => r.member === name && !Number.isFinite(r.end)).map((r) => r.shard).sort((
      a,
      b
    ) => a - b).join(",")
  }
  return mode.checker.runs.filter((r) => r.member === name && !Number.isFinite(r.end)).map((r) =>
    `${r.index}/${r.count}`
  )
    .join(",")
}

describe("static membership over MemoryEtcd", () => {
  it.scoped.each(modes())(
    "%s: a crashed member restarted within the TTL takes its place back; its work waits for the old lease",
    ([, makeMode]) =>
      Effect.gen(function*() {
        const memory = yield* MemoryEtcd
        const mode = makeMode()
        const a = yield* member("g/restart", "a", { mode })
        const b = yield* member("g/restart", "b", { instance: "web-1", mode })
        const c = yield* member("g/restart", "c", { mode })
        yield* settle
        const before = yield* currents([a, b, c])
        expect(before).toEqual(["0/3", "1/3", "2/3"])
        const [named] = yield* revisions([b])
        const membersBefore = yield* a.seq.members
        expect(membersBefore.map((m) => m.instance)).toEqual([undefined, "web-1", undefined])
        const heldByB = holding(mode, "b")
        expect(heldByB).not.toBe("")
        const othersBefore = [...a.seen, "|", ...c.seen]
        const runsBefore = runsOf(mode.checker.runs, ["a", "c"])

        // The process dies: etcd hears nothing from it again. One second later its new incarnation starts.
        yield* memory.crash(b.etcd)
        yield* advance(1_000)
        const b2 = yield* member("g/restart", "b2", { instance: "web-1", mode })
        yield* settle
        expect(yield* currents([b2])).toEqual([before[1]])
        const membersAfter = yield* a.seq.members
        expect(membersAfter.map((m) => [m.instance, m.joinRevision])).toEqual(
          membersBefore.map((m) => [m.instance, m.joinRevision])
        )
        expect(membersAfter[1]!.id).not.toBe(membersBefore[1]!.id)
        const renamed = yield* revisions([a, b2, c])
        expect(renamed[1]).toBeGreaterThan(named!)
        expect(renamed).toEqual([renamed[1], renamed[1], renamed[1]])
        // The others saw nothing: no new Info (the same one under a new name is not news); their work runs on.
        expect(yield* currents([a, c])).toEqual([before[0], before[2]])
        expect([...a.seen, "|", ...c.seen]).toEqual(othersBefore)
        expect(runsOf(mode.checker.runs, ["a", "c"])).toEqual(runsBefore)
        // The new incarnation's work waits while the old one's locks, claims or handover promise live.
        expect(holding(mode, "b2")).toBe("")

        // The old lease runs out (3 s after it was last renewed): its keys go, the member key (moved) stays.
        yield* advance(2_500)
        expect(holding(mode, "b2")).toBe(heldByB)
        expect(yield* currents([b2])).toEqual([before[1]])
        expect(yield* currents([a, c])).toEqual([before[0], before[2]])
        expect([...a.seen, "|", ...c.seen]).toEqual(othersBefore)
        expect(runsOf(mode.checker.runs, ["a", "c"])).toEqual(runsBefore)
        expect(overlaps(mode)).toEqual([])

        yield* Effect.all([a.leave, b.leave, b2.leave, c.leave])
        yield* advance(3_500)
        expect(yield* memory.read("g/restart/")).toEqual([])
        expect(yield* memory.leases).toEqual([])
      }).pipe(Effect.provide(MemoryEtcd.layer))
  )

  it.scoped("restarted after the TTL, a member with an instance leaves, then joins as a new member", () =>
    Effect.gen(function*() {
      const memory = yield* MemoryEtcd
      const a = yield* member("g/late", "a")
      const b = yield* member("g/late", "b", { instance: "web-1" })
      const c = yield* member("g/late", "c")
      yield* settle
      yield* memory.crash(b.etcd)
      yield* advance(3_100)
      expect(yield* currents([a, c])).toEqual(["0/2", "1/2"])
      const b2 = yield* member("g/late", "b2", { instance: "web-1" })
      yield* settle
      expect(yield* currents([a, c, b2])).toEqual(["0/3", "1/3", "2/3"])
      expect(c.seen.map((s) => s.split("@")[0])).toEqual(["2/3", "1/2", "1/3"])
      yield* Effect.all([a.leave, b.leave, b2.leave, c.leave])
    }).pipe(Effect.provide(MemoryEtcd.layer)))

  it.scoped.each(modes())(
    "%s: of two live members with one instance the newer wins; the older fails with InstanceTaken, stops, stays out",
    ([, makeMode]) =>
      Effect.gen(function*() {
        const memory = yield* MemoryEtcd
        const mode = makeMode()
        const a = yield* member("g/twice", "a", { mode })
        // Its work takes a while to stop: the window in which a takeover without protection would overlap.
        const b = yield* member("g/twice", "b", { instance: "web-1", mode, stopMillis: 500 })
        const c = yield* member("g/twice", "c", { mode })
        // b's run of 1/2 takes its time to stop before its run of 1/3 starts.
        yield* advance(600)
        const before = yield* currents([a, b, c])
        const [named] = yield* revisions([b])
        const heldByB = holding(mode, "b")
        const othersBefore = [...a.seen, "|", ...c.seen]
        const runsBefore = runsOf(mode.checker.runs, ["a", "c"])

        const b2 = yield* member("g/twice", "b2", { instance: "web-1", mode })
        yield* settle
        expect(holding(mode, "b2")).toBe("")
        yield* advance(600)
        expect(yield* failureOf(b.changes)).toMatchObject({
          _tag: "InstanceTaken",
          group: "g/twice",
          instance: "web-1"
        })
        expect(yield* failureOf(b.runner)).toMatchObject({ _tag: "InstanceTaken" })
        // Invalid first (stop the work), then the failure.
        expect(b.seen.slice(-2).map((s) => s.split("@")[0])).toEqual([before[1], "invalid"])
        expect(String(yield* b.seq.current)).toBe("invalid")
        expect(holding(mode, "b")).toBe("")
        expect(holding(mode, "b2")).toBe(heldByB)
        expect(yield* currents([b2])).toEqual([before[1]])
        const renamed = yield* revisions([a, b2, c])
        expect(renamed[1]).toBeGreaterThan(named!)
        expect(renamed).toEqual([renamed[1], renamed[1], renamed[1]])
        expect(yield* currents([a, c])).toEqual([before[0], before[2]])
        expect([...a.seen, "|", ...c.seen]).toEqual(othersBefore)
        expect(runsOf(mode.checker.runs, ["a", "c"])).toEqual(runsBefore)
        expect(overlaps(mode)).toEqual([])

        // No flapping: several TTLs later the newer still holds the place, and the older never registered again.
        yield* advance(10_000)
        expect(yield* currents([b2])).toEqual([before[1]])
        expect((yield* memory.read("g/twice/members/")).map((kv) => kv.key.slice("g/twice/members/".length)))
          .toHaveLength(3)
        // The older's leave deletes nothing of the newer's.
        yield* b.leave
        yield* settle
        expect(yield* currents([b2])).toEqual([before[1]])
        expect((yield* a.seq.members).map((m) => m.instance)).toEqual([undefined, "web-1", undefined])
        expect(yield* currents([a, c])).toEqual([before[0], before[2]])
        expect(overlaps(mode)).toEqual([])
        yield* Effect.all([a.leave, b2.leave, c.leave])
        expect(yield* memory.read("g/twice/")).toEqual([])
      }).pipe(Effect.provide(MemoryEtcd.layer))
  )

  it.scoped("an older incarnation cut off while a newer took over does not take the place back when it returns", () =>
    Effect.gen(function*() {
      const memory = yield* MemoryEtcd
      const a = yield* member("g/return", "a")
      const b = yield* member("g/return", "b", { instance: "web-1" })
      yield* settle
      yield* memory.outage({ clients: [b.etcd] })
      const b2 = yield* member("g/return", "b2", { instance: "web-1" })
      // Past b's TTL: its lease expired (taking nothing of b2's), then etcd is back for it.
      yield* advance(4_000)
      yield* memory.recover
      yield* advance(3_000)
      expect(yield* failureOf(b.changes)).toMatchObject({ _tag: "InstanceTaken", instance: "web-1" })
      expect(yield* currents([a, b2])).toEqual(["0/2", "1/2"])
      expect(b2.seen.map((s) => s.split("@")[0])).toEqual(["1/2"])
      expect(a.seen.map((s) => s.split("@")[0])).toEqual(["0/1", "0/2"])
      yield* Effect.all([a.leave, b.leave, b2.leave])
      expect(yield* memory.read("g/return/")).toEqual([])
    }).pipe(Effect.provide(MemoryEtcd.layer)))

  it.scoped.each(modes())(
    "%s: with keepPlaceOnLeave a graceful restart keeps the place, and the next incarnation's work starts at once",
    ([, makeMode]) =>
      Effect.gen(function*() {
        const memory = yield* MemoryEtcd
        const mode = makeMode()
        const a = yield* member("g/park", "a", { mode })
        const b = yield* member("g/park", "b", { instance: "web-1", keepPlaceOnLeave: true, mode })
        const c = yield* member("g/park", "c", { mode })
        yield* settle
        const before = yield* currents([a, b, c])
        const [named] = yield* revisions([b])
        const heldByB = holding(mode, "b")
        const othersBefore = [...a.seen, "|", ...c.seen]
        const runsBefore = runsOf(mode.checker.runs, ["a", "c"])

        // SIGTERM: the member leaves; its work stops, its place stays.
        yield* b.leave
        yield* advance(1_000)
        expect(String(yield* b.seq.current)).toBe("invalid")
        expect(holding(mode, "b")).toBe("")
        expect(yield* currents([a, c])).toEqual([before[0], before[2]])
        expect((yield* a.seq.members).map((m) => m.instance)).toEqual([undefined, "web-1", undefined])

        const b2 = yield* member("g/park", "b2", { instance: "web-1", keepPlaceOnLeave: true, mode })
        yield* settle
        expect(yield* currents([b2])).toEqual([before[1]])
        const renamed = yield* revisions([a, b2, c])
        expect(renamed[1]).toBeGreaterThan(named!)
        expect(renamed).toEqual([renamed[1], renamed[1], renamed[1]])
        // No lease to wait for: the leave released its locks and claims.
        expect(holding(mode, "b2")).toBe(heldByB)
        expect(yield* currents([a, c])).toEqual([before[0], before[2]])
        expect([...a.seen, "|", ...c.seen]).toEqual(othersBefore)
        expect(runsOf(mode.checker.runs, ["a", "c"])).toEqual(runsBefore)
        expect(overlaps(mode)).toEqual([])
        // The parking lease went with the takeover: one lease per live client.
        expect(yield* memory.leases).toHaveLength(3)

        yield* Effect.all([a.leave, b2.leave, c.leave])
        yield* advance(3_500)
        expect(yield* memory.read("g/park/")).toEqual([])
        expect(yield* memory.leases).toEqual([])
      }).pipe(Effect.provide(MemoryEtcd.layer))
  )

  it.scoped("group: a new incarnation after a leave names the view as the others do; fences grow; nothing stalls", () =>
    Effect.gen(function*() {
      const memory = yield* MemoryEtcd
      const mode: Mode = { _tag: "group", checker: makeChecker() }
      const x = yield* member("g/fresh", "x", { mode })
      const p1 = yield* member("g/fresh", "p1", { instance: "pod-1", keepPlaceOnLeave: true, mode })
      const y = yield* member("g/fresh", "y", { mode })
      yield* settle
      // A leave: a process reading the group from now on cannot see when it happened.
      yield* y.leave
      yield* advance(500)
      const [before] = yield* revisions([p1])
      // A rolling restart of pod-1: the old process parks its place, a new one (a client of its own) takes it.
      yield* p1.leave
      yield* advance(500)
      const p2 = yield* member("g/fresh", "p2", { instance: "pod-1", mode })
      yield* advance(500)
      expect(yield* currents([x, p2])).toEqual(["0/2", "1/2"])
      const [named, namedByP2] = yield* revisions([x, p2])
      expect(namedByP2).toBe(named)
      expect(namedByP2).toBeGreaterThan(before!)
      expect(holding(mode, "p2")).toBe("1/2")
      // x is cut off past its fence, within its TTL, and takes its place back: its run waits for every member to
      // hold the view it names, which p2 must name alike.
      yield* memory.outage({ clients: [x.etcd] })
      yield* advance(2_500)
      expect(holding(mode, "x")).toBe("")
      yield* memory.recover
      yield* advance(1_000)
      expect(holding(mode, "x")).toBe("0/2")
      expect(shareOverlaps(mode.checker.runs)).toEqual([])
      yield* Effect.all([x.leave, p2.leave])
    }).pipe(Effect.provide(MemoryEtcd.layer)))

  it.scoped("shards: a new incarnation takes its place's declaration over, so its restart moves nobody's shards", () =>
    Effect.gen(function*() {
      const mode: Mode = { _tag: "shards", shards: 12, checker: makeShardChecker() }
      const a = yield* member("g/inherit", "a", { mode })
      const b = yield* member("g/inherit", "b", { instance: "web-1", keepPlaceOnLeave: true, mode })
      const c = yield* member("g/inherit", "c", { mode })
      yield* settle
      const heldByB = holding(mode, "b")
      const runsBefore = runsOf(mode.checker.runs, ["a", "c"])
      yield* b.leave
      yield* advance(500)
      // The new process joins first and starts runShards a while later, as an application does after its layers.
      const b2 = yield* member("g/inherit", "b2", { instance: "web-1" })
      yield* advance(1_000)
      expect(runsOf(mode.checker.runs, ["a", "c"])).toEqual(runsBefore)
      const run = yield* EtcdSeq.runShards({ shards: 12 }, mode.checker.work("b2")).pipe(
        Effect.provideService(EtcdSeq, b2.seq),
        Effect.exit,
        Effect.fork
      )
      yield* advance(500)
      expect(holding(mode, "b2")).toBe(heldByB)
      expect(runsOf(mode.checker.runs, ["a", "c"])).toEqual(runsBefore)
      expect(overlaps(mode)).toEqual([])
      yield* Fiber.interrupt(run)
      yield* Effect.all([a.leave, b2.leave, c.leave])
    }).pipe(Effect.provide(MemoryEtcd.layer)))

  it.scoped("group: a takeover beside a parked place still waits for the older incarnation's work to stop", () =>
    Effect.gen(function*() {
      const mode: Mode = { _tag: "group", checker: makeChecker() }
      yield* member("g/beside", "a", { mode })
      const p = yield* member("g/beside", "p", { instance: "p", keepPlaceOnLeave: true, mode })
      const b = yield* member("g/beside", "b", { instance: "web-1", mode, stopMillis: 500 })
      yield* advance(1_000)
      yield* p.leave
      yield* advance(100)
      // Parked p publishes nothing, and b's old key counts as one outside the view: the sizes match, the keys do not.
      const b2 = yield* member("g/beside", "b2", { instance: "web-1", mode })
      yield* settle
      expect(yield* failureOf(b.changes)).toMatchObject({ _tag: "InstanceTaken" })
      expect(holding(mode, "b2")).toBe("")
      yield* advance(600)
      expect(holding(mode, "b2")).toBe("2/3")
      expect(shareOverlaps(mode.checker.runs)).toEqual([])
      yield* b2.leave
    }).pipe(Effect.provide(MemoryEtcd.layer)))

  it.scoped("group: an older incarnation whose work takes longer than the TTL to stop is waited for all the same", () =>
    Effect.gen(function*() {
      const mode: Mode = { _tag: "group", checker: makeChecker() }
      yield* member("g/longstop", "a", { mode })
      const b = yield* member("g/longstop", "b", { instance: "web-1", mode, stopMillis: 4_500 })
      yield* advance(500)
      const b2 = yield* member("g/longstop", "b2", { instance: "web-1", mode })
      yield* advance(4_000)
      expect(yield* failureOf(b.changes)).toMatchObject({ _tag: "InstanceTaken" })
      // Past the TTL (3 s) the older's work still runs: its lease lives on, and so does its handover promise.
      expect(holding(mode, "b2")).toBe("")
      yield* advance(1_000)
      expect(holding(mode, "b2")).toBe("1/2")
      expect(shareOverlaps(mode.checker.runs)).toEqual([])
      yield* b2.leave
    }).pipe(Effect.provide(MemoryEtcd.layer)))

  it.scoped("with keepPlaceOnLeave and no next incarnation, the others see the leave once the TTL ran out", () =>
    Effect.gen(function*() {
      const memory = yield* MemoryEtcd
      const mode: Mode = { _tag: "group", checker: makeChecker() }
      const a = yield* member("g/parked", "a", { mode })
      const b = yield* member("g/parked", "b", { instance: "web-1", keepPlaceOnLeave: true, mode })
      yield* settle
      yield* b.leave
      // A join while the place is parked: group-mode work of the new view does not wait for the parked member.
      const c = yield* member("g/parked", "c", { mode })
      yield* settle
      expect(yield* currents([a, c])).toEqual(["0/3", "2/3"])
      expect(holding(mode, "a")).toBe("0/3")
      expect(holding(mode, "c")).toBe("2/3")
      yield* advance(2_900)
      expect(yield* currents([a, c])).toEqual(["0/3", "2/3"])
      yield* advance(200)
      expect(yield* currents([a, c])).toEqual(["0/2", "1/2"])
      expect(shareOverlaps(mode.checker.runs)).toEqual([])
      yield* Effect.all([a.leave, c.leave])
      expect(yield* memory.read("g/parked/")).toEqual([])
      expect(yield* memory.leases).toEqual([])
    }).pipe(Effect.provide(MemoryEtcd.layer)))

  it.effect("keepPlaceOnLeave without an instance: InvalidOptions before any I/O", () =>
    Effect.gen(function*() {
      const error = yield* EtcdSeq.make({ key: "g", keepPlaceOnLeave: true }).pipe(
        Effect.provideService(Etcd, throwsOnUse()),
        Effect.scoped,
        Effect.flip
      )
      expect(error).toMatchObject({ _tag: "InvalidOptions", field: "keepPlaceOnLeave" })
    }))

  it.effect.each(["", "a/b", "web 1", "x".repeat(254), "é"])(
    "instance %j: InvalidOptions before any I/O",
    (instance) =>
      Effect.gen(function*() {
        const error = yield* EtcdSeq.make({ key: "g", instance }).pipe(
          Effect.provideService(Etcd, throwsOnUse()),
          Effect.scoped,
          Effect.flip
        )
        expect(error).toMatchObject({ _tag: "InvalidOptions", field: "instance" })
      })
  )

  it.effect("ETCDSEQ_INSTANCE and ETCDSEQ_KEEP_PLACE_ON_LEAVE are read by EtcdSeq.config", () =>
    Effect.gen(function*() {
      const options = yield* EtcdSeq.config.pipe(
        Effect.withConfigProvider(
          ConfigProvider.fromMap(
            new Map([["ETCDSEQ_KEY", "g"], ["ETCDSEQ_INSTANCE", "web-0.ns_1"], ["ETCDSEQ_KEEP_PLACE_ON_LEAVE", "true"]])
          )
        )
      )
      expect(options).toMatchObject({ key: "g", instance: "web-0.ns_1", keepPlaceOnLeave: true })
    }))
})
