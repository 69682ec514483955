/**
 * Static membership against a real etcd, with member processes SIGKILLed like crashed pods: a member with an instance
 * restarted within the TTL keeps its index and join revision while the others see nothing; restarted after the TTL
 * it is a leave and a join; of two live processes with one instance the newer wins and the older stops, and exclusive
 * work (`runAssigned` "index", `runShards`) never runs twice at once across the takeover.
 */
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Exit, Scope } from "effect"
import { Etcd, EtcdSeq, type EtcdSeqService, type Member } from "../../src/index.js"
import { startEtcd } from "../support/etcd.js"
import { record, uniqueGroup } from "../support/members.js"
import { type MemberEvent, type MemberProcess, spawnMember } from "../support/processes.js"
import { expectNothingLeftWithin, expectPidsGone, figure } from "../support/reliability.js"
import { runsOfProcess, shardOverlaps, type ShardRun } from "../support/shardChecker.js"

const ttl = Duration.seconds(6)

/** Runs of `runAssigned` a process printed, as the shard checker's runs with the index for a shard. */
const indexRuns = (member: string, events: ReadonlyArray<MemberEvent>, endedAt = Infinity): Array<ShardRun> =>
  runsOfProcess(
    member,
    events.flatMap((e) => e.event === "run" ? [{ ...e, event: "shard", shard: e.index }] : []),
    endedAt
  )

/** Waits on the process's own lines until `check` holds of them. */
const untilLines = (
  member: MemberProcess,
  check: (events: ReadonlyArray<MemberEvent>) => boolean,
  what: string,
  within: Duration.DurationInput = "20 seconds"
) =>
  Effect.gen(function*() {
    const deadline = Date.now() + Duration.toMillis(Duration.decode(within))
    while (!check(yield* member.events)) {
      if (Date.now() > deadline) {
        return yield* Effect.dieMessage(
          `member ${member.pid}: no ${what}; its lines: ${JSON.stringify(yield* member.events)}\n${member.stderr()}`
        )
      }
      yield* Effect.sleep("20 millis")
    }
  })

const running = (events: ReadonlyArray<MemberEvent>, kind: "run" | "shard") => {
  const open = new Map<string, MemberEvent>()
  for (const e of events) {
    if (e.event !== kind) continue
    const key = e.event === "run" ? `${e.index}/${e.fence}` : e.event === "shard" ? `${e.shard}/${e.fence}` : ""
    if (e.phase === "start") open.set(key, e)
    else open.delete(key)
  }
  return [...open.values()]
}

/** An observer in this process (a member of its own, on a client of its own): its Infos and the member list. */
const observer = (endpoint: string, group: string) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const seq: EtcdSeqService = yield* EtcdSeq.make({ key: group, ttl }).pipe(
      Effect.provideServiceEffect(Etcd, Etcd.make({ endpoints: [endpoint] })),
      Scope.extend(scope)
    )
    const recorder = yield* record(seq).pipe(Scope.extend(scope))
    return { seq, recorder, leave: Scope.close(scope, Exit.void) }
  })

const shape = (members: ReadonlyArray<Member>) => members.map((m) => [m.index, m.instance, m.joinRevision])

describe("static membership on a real etcd", () => {
  it.live(
    "a SIGKILLed member restarted within the TTL keeps its index and join revision; the others see nothing",
    () =>
      Effect.gen(function*() {
        const pids: Array<number | undefined> = []
        yield* Effect.scoped(Effect.gen(function*() {
          const etcd = yield* startEtcd({ name: "instance-restart" })
          pids.push(etcd.pid)
          const group = uniqueGroup("instance-restart")
          const options = { endpoints: [etcd.clientUrl], group, ttl, exclusive: "index" as const }
          const a = yield* observer(etcd.clientUrl, group)
          const b = yield* spawnMember({ ...options, instance: "web-1" })
          const c = yield* spawnMember(options)
          pids.push(b.pid, c.pid)
          yield* a.recorder.atLeast(3)
          yield* untilLines(b, (es) => running(es, "run").some((e) => e.event === "run" && e.count === 3), "run 1/3")
          yield* untilLines(c, (es) => running(es, "run").some((e) => e.event === "run" && e.count === 3), "run 2/3")
          const membersBefore = yield* a.seq.members
          expect(shape(membersBefore)).toEqual([[0, undefined, expect.any(Number)], [
            1,
            "web-1",
            expect.any(Number)
          ], [2, undefined, expect.any(Number)]])
          const aBefore = yield* a.seq.current
          const cLinesBefore = (yield* c.events).length

          // --- The pod dies and comes back (a new process, the same instance) before its lease expires ---
          // The new process is started beforehand: on a loaded machine Node's start alone can outlast the TTL.
          const b2 = yield* spawnMember({ ...options, instance: "web-1", joinOnRequest: true })
          pids.push(b2.pid)
          const crashed = yield* b.crash
          yield* b2.join
          expect(yield* b2.infos).toEqual(["1/3"])
          const membersAfter = yield* a.seq.members
          expect(shape(membersAfter)).toEqual(shape(membersBefore))
          expect(membersAfter[1]!.id).not.toBe(membersBefore[1]!.id)
          // Its work waits for the dead incarnation's index lock, which goes with the old lease.
          yield* untilLines(b2, (es) => running(es, "run").length === 1, "its run of index 1", "15 seconds")
          const started = (yield* b2.events).find((e) => e.event === "run")!
          expect(started).toMatchObject({ index: 1, count: 3 })
          const joined = (yield* b2.events).find((e) => e.event === "info")!
          yield* figure(
            "instance restart: SIGKILL to the new (started) process's Info, same index",
            joined.at - crashed.at
          )
          yield* figure(
            "instance restart: SIGKILL to its index-locked work (TTL 6 s)",
            (started as { mono: number }).mono - crashed.mono
          )

          // The others saw nothing: no new Info, and c's work ran on. The view was renamed by the takeover, so the new
          // incarnation's fence is above the old one's.
          expect(yield* a.recorder.infos).toHaveLength(3)
          const aAfter = yield* a.seq.current
          expect(String(aAfter).split("@")[0]).toBe(String(aBefore).split("@")[0])
          expect(aAfter.revision).toBeGreaterThan(aBefore.revision)
          expect((yield* c.events).length).toBe(cLinesBefore)
          const runs = [
            ...indexRuns("b", yield* b.events, crashed.mono),
            ...indexRuns("b2", yield* b2.events),
            ...indexRuns("c", yield* c.events)
          ]
          expect(shardOverlaps(runs)).toEqual([])

          yield* Effect.all([b2.leave, c.leave])
          for (const m of [b2, c]) expect(yield* m.exit("10 seconds")).toMatchObject({ _tag: "Some" })
          yield* a.leave
          yield* expectNothingLeftWithin([etcd.clientUrl], [group], ttl)
        }))
        yield* expectPidsGone(pids)
      }),
    90_000
  )

  it.live(
    "with keepPlaceOnLeave a graceful restart keeps the index, and the locked work starts without waiting for the TTL",
    () =>
      Effect.gen(function*() {
        const pids: Array<number | undefined> = []
        yield* Effect.scoped(Effect.gen(function*() {
          const etcd = yield* startEtcd({ name: "instance-graceful" })
          pids.push(etcd.pid)
          const group = uniqueGroup("instance-graceful")
          const options = { endpoints: [etcd.clientUrl], group, ttl, exclusive: "index" as const }
          const a = yield* observer(etcd.clientUrl, group)
          const b = yield* spawnMember({ ...options, instance: "web-1", keepPlaceOnLeave: true })
          const c = yield* spawnMember(options)
          pids.push(b.pid, c.pid)
          yield* a.recorder.atLeast(3)
          yield* untilLines(c, (es) => running(es, "run").some((e) => e.event === "run" && e.count === 3), "run 2/3")
          const membersBefore = yield* a.seq.members
          const cLinesBefore = (yield* c.events).length

          // SIGTERM and a new pod: the process leaves and ends, the next one takes the place back. The new process is
          // started (and connected) beforehand: the place is kept for the TTL, and on a loaded machine Node's start
          // alone took longer than that (the new process then joined as a new member, 2/3).
          const b2 = yield* spawnMember({ ...options, instance: "web-1", keepPlaceOnLeave: true, joinOnRequest: true })
          pids.push(b2.pid)
          yield* b.leave
          const ended = yield* b.exit("10 seconds")
          expect(ended).toMatchObject({ _tag: "Some", value: { code: 0 } })
          yield* b2.join
          expect(yield* b2.infos).toEqual(["1/3"])
          yield* untilLines(b2, (es) => running(es, "run").length === 1, "its run of index 1", "5 seconds")
          const started = (yield* b2.events).find((e) => e.event === "run") as { readonly mono: number }
          const stopped = (yield* b.events).filter((e) => e.event === "run").at(-1) as { readonly mono: number }
          yield* figure(
            "graceful instance restart: the old process's stop to the new one's index-locked work",
            started.mono - stopped.mono
          )
          expect(started.mono - stopped.mono).toBeLessThan(Duration.toMillis(ttl))
          expect(shape(yield* a.seq.members)).toEqual(shape(membersBefore))
          expect(yield* a.recorder.infos).toHaveLength(3)
          expect((yield* c.events).length).toBe(cLinesBefore)
          expect(shardOverlaps([
            ...indexRuns("b", yield* b.events),
            ...indexRuns("b2", yield* b2.events),
            ...indexRuns("c", yield* c.events)
          ])).toEqual([])

          yield* Effect.all([b2.leave, c.leave])
          for (const m of [b2, c]) expect(yield* m.exit("10 seconds")).toMatchObject({ _tag: "Some" })
          yield* a.leave
          // b2 parked its place as it left: it goes with the parking lease's TTL.
          yield* expectNothingLeftWithin([etcd.clientUrl], [group], Duration.sum(ttl, Duration.seconds(2)))
        }))
        yield* expectPidsGone(pids)
      }),
    90_000
  )

  it.live(
    "restarted after the TTL, a member with an instance is a leave, then a join",
    () =>
      Effect.gen(function*() {
        const pids: Array<number | undefined> = []
        yield* Effect.scoped(Effect.gen(function*() {
          const etcd = yield* startEtcd({ name: "instance-late" })
          pids.push(etcd.pid)
          const group = uniqueGroup("instance-late")
          const short = Duration.seconds(2)
          const options = { endpoints: [etcd.clientUrl], group, ttl: short }
          const a = yield* observer(etcd.clientUrl, group)
          const b = yield* spawnMember({ ...options, instance: "web-1" })
          const c = yield* spawnMember(options)
          pids.push(b.pid, c.pid)
          yield* c.waitFor((i) => i.count === 3, "10 seconds", "count 3")
          yield* b.crash
          yield* c.waitFor((i) => i.count === 2, "10 seconds", "the crash seen")
          const b2 = yield* spawnMember({ ...options, instance: "web-1" })
          pids.push(b2.pid)
          yield* c.waitFor((i) => i.count === 3, "10 seconds", "the rejoin")
          expect(yield* b2.infos).toEqual(["2/3"])
          expect(yield* c.infos).toEqual(["2/3", "1/2", "1/3"])
          // The observer's client paces views in a burst (up to 1 s behind): it may see the rejoin after c does.
          yield* a.recorder.atLeast(5)
          expect((yield* a.recorder.infos).map((s) => s.split("@")[0])).toEqual(["0/1", "0/2", "0/3", "0/2", "0/3"])
          expect((yield* a.seq.members).map((m) => m.instance)).toEqual([undefined, undefined, "web-1"])
          yield* Effect.all([b2.leave, c.leave])
          for (const m of [b2, c]) expect(yield* m.exit("10 seconds")).toMatchObject({ _tag: "Some" })
          yield* a.leave
          yield* expectNothingLeftWithin([etcd.clientUrl], [group], "4 seconds")
        }))
        yield* expectPidsGone(pids)
      }),
    90_000
  )

  it.live.each(["index", "shards"] as const)(
    "two live processes with one instance (%s): the older fails with InstanceTaken and stops first; no overlap",
    (mode) =>
      Effect.gen(function*() {
        const pids: Array<number | undefined> = []
        yield* Effect.scoped(Effect.gen(function*() {
          const etcd = yield* startEtcd({ name: `instance-twice-${mode}` })
          pids.push(etcd.pid)
          const group = uniqueGroup("instance-twice")
          const kind = mode === "index" ? "run" as const : "shard" as const
          const options = {
            endpoints: [etcd.clientUrl],
            group,
            ttl,
            // Work takes a while to stop: the window in which an unprotected takeover would overlap.
            stopMillis: 300,
            ...(mode === "index" ? { exclusive: "index" as const } : { shards: 8 })
          }
          const a = yield* observer(etcd.clientUrl, group)
          const b = yield* spawnMember({ ...options, instance: "web-1" })
          const c = yield* spawnMember(options)
          pids.push(b.pid, c.pid)
          yield* a.recorder.atLeast(3)
          yield* untilLines(b, (es) =>
            running(es, kind).length > 0 && (mode === "shards" || es.at(-1)?.event === "run"), "its work")
          yield* untilLines(c, (es) =>
            running(es, kind).length > 0, "its work")
          // Quiet: the plan of three settled (shards stop 300 ms after they move).
          yield* Effect.sleep("1 second")
          const held = running(yield* b.events, kind).length
          const cLinesBefore = (yield* c.events).length
          const aBefore = yield* a.seq.current

          const b2 = yield* spawnMember({ ...options, instance: "web-1" })
          pids.push(b2.pid)
          expect(yield* b2.infos).toEqual(["1/3"])
          yield* untilLines(
            b,
            (es) =>
              es.some((e) => e.event === "error" && e.tag === "InstanceTaken") && running(es, kind).length === 0,
            "InstanceTaken and its work stopped"
          )
          yield* untilLines(b2, (es) => running(es, kind).length === held, "the work taken over")
          // The older stays out: no flapping, its process lives on without a membership until it leaves.
          yield* Effect.sleep("2 seconds")
          expect(yield* b2.infos).toEqual(["1/3"])
          expect((yield* b.events).filter((e) => e.event === "info").at(-1)).toMatchObject({ index: -1 })
          yield* b.leave
          expect(yield* b.exit("10 seconds")).toMatchObject({ _tag: "Some" })
          expect((yield* a.seq.members).map((m) => m.instance)).toEqual([undefined, "web-1", undefined])
          expect(yield* b2.infos).toEqual(["1/3"])

          const runs = [
            ...(mode === "index" ? indexRuns("b", yield* b.events) : runsOfProcess("b", yield* b.events)),
            ...(mode === "index" ? indexRuns("b2", yield* b2.events) : runsOfProcess("b2", yield* b2.events)),
            ...(mode === "index" ? indexRuns("c", yield* c.events) : runsOfProcess("c", yield* c.events))
          ]
          expect(runs.filter((r) => r.member === "b2").length).toBe(held)
          expect(shardOverlaps(runs)).toEqual([])
          const lastStop = Math.max(...runs.filter((r) => r.member === "b").map((r) => r.end))
          const lastStart = Math.max(...runs.filter((r) => r.member === "b2").map((r) => r.start))
          yield* figure(
            `instance taken over (${mode}): the older's last stop to the newer's last start`,
            lastStart - lastStop
          )
          // The others saw nothing new; the view was renamed by the takeover.
          expect(yield* a.recorder.infos).toHaveLength(3)
          const aAfter = yield* a.seq.current
          expect(String(aAfter).split("@")[0]).toBe(String(aBefore).split("@")[0])
          expect(aAfter.revision).toBeGreaterThan(aBefore.revision)
          expect((yield* c.events).length).toBe(cLinesBefore)

          yield* Effect.all([b2.leave, c.leave])
          for (const m of [b2, c]) expect(yield* m.exit("10 seconds")).toMatchObject({ _tag: "Some" })
          yield* a.leave
          yield* expectNothingLeftWithin([etcd.clientUrl], [group], "4 seconds")
        }))
        yield* expectPidsGone(pids)
      }),
    90_000
  )
})
