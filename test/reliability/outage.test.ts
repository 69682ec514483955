/**
 * etcd gone as a whole: a short outage costs no member its Info; a long one makes every member fence itself
 * (`Info.invalid`) before its lease could expire, and the group converges again when etcd is back; an etcd killed
 * with -9 and started again from its data dir is converged on, and its stale member keys go with their TTL.
 */
import { describe, expect, it } from "@effect/vitest"
import { Clock, Duration, Effect } from "effect"
import { Info } from "../../src/index.js"
import { startCluster, startEtcd } from "../support/etcd.js"
import { uniqueGroup } from "../support/members.js"
import { type InfoEvent, spawnMember } from "../support/processes.js"
import {
  converged,
  expectNothingLeftWithin,
  expectPidsGone,
  figure,
  isConverged,
  joinMember,
  leaveAll,
  leftovers,
  since
} from "../support/reliability.js"

describe("a whole etcd cluster out", () => {
  it.live(
    "an outage shorter than the renewal window (all nodes paused 2.5 s, TTL 6 s) costs no member its Info",
    () =>
      Effect.gen(function*() {
        // A member renews every TTL/6 and fences itself 0.8 TTL after the send of its last answered renewal: an
        // outage up to 0.8 - 1/6 of the TTL (3.8 s of 6 s) is always ridden out, whatever its phase.
        const ttl = Duration.seconds(6)
        const pids: Array<number | undefined> = []
        yield* Effect.scoped(Effect.gen(function*() {
          const cluster = yield* startCluster(3)
          pids.push(...cluster.nodes.map((n) => n.pid))
          const group = uniqueGroup("short-outage")
          const options = { endpoints: cluster.endpoints, group, ttl }
          const a = yield* joinMember({ ...options, name: "a" })
          const b = yield* joinMember({ ...options, name: "b" })
          const c = yield* joinMember({ ...options, name: "c" })
          yield* converged([a, b, c], "5 seconds")

          yield* Effect.forEach(cluster.nodes, (n) => n.pause, { discard: true })
          // Time must pass: this is the outage.
          yield* Effect.sleep("2500 millis")
          yield* Effect.forEach(cluster.nodes, (n) => n.resume, { discard: true })
          // Renewals sent during the outage are answered now; hold on for more than a TTL to see none was lost.
          const resumedAt = yield* Clock.currentTimeMillis
          const d = yield* joinMember({ ...options, name: "d" })
          yield* converged([a, b, c, d], "10 seconds")
          yield* figure("short outage: resume to a join seen by every member", yield* since(resumedAt))
          yield* Effect.sleep(Duration.toMillis(ttl) - (yield* since(resumedAt)))
          expect(yield* a.infos).toEqual(["0/1", "0/2", "0/3", "0/4"])
          expect(yield* b.infos).toEqual(["1/2", "1/3", "1/4"])
          expect(yield* c.infos).toEqual(["2/3", "2/4"])
          expect(yield* d.infos).toEqual(["3/4"])

          yield* leaveAll([a, b, c, d])
          yield* expectNothingLeftWithin(cluster.endpoints, [group], "2 seconds")
        }))
        yield* expectPidsGone(pids)
      }),
    60_000
  )

  it.live(
    "an outage longer than the TTL (all nodes killed): every member process fences itself before its lease " +
      "could expire, re-registers when etcd is back, the group converges, and each process ends by itself",
    () =>
      Effect.gen(function*() {
        const ttl = Duration.seconds(3)
        const ttlMillis = Duration.toMillis(ttl)
        const pids: Array<number | undefined> = []
        yield* Effect.scoped(Effect.gen(function*() {
          const cluster = yield* startCluster(3)
          pids.push(...cluster.nodes.map((n) => n.pid))
          const group = uniqueGroup("long-outage")
          const options = { endpoints: cluster.endpoints, group, ttl }
          const members = yield* Effect.all([spawnMember(options), spawnMember(options), spawnMember(options)], {
            concurrency: "unbounded"
          })
          pids.push(...members.map((m) => m.pid))
          yield* Effect.forEach(members, (m) => m.waitFor((i) => i.count === 3, "10 seconds", "count 3"))

          const downAt = yield* Clock.currentTimeMillis
          yield* Effect.forEach(cluster.nodes, (n) => n.kill, { concurrency: "unbounded", discard: true })
          const invalid = yield* Effect.forEach(
            members,
            (m) => m.waitFor((i) => i.index < 0, ttlMillis + 2_000, "Info.invalid"),
            { concurrency: "unbounded" }
          )
          const toInvalid = Math.max(...invalid.map((i) => i.at - downAt))
          yield* figure("long outage: etcd gone to Info.invalid at every member (TTL 3 s)", toInvalid)
          // Each fences itself 0.8 TTL after the send of its last answered renewal, which was before the outage:
          // before etcd could expire its lease (a TTL after etcd received that renewal).
          expect(toInvalid).toBeLessThan(ttlMillis)

          // Time must pass: the outage outlasts the TTL.
          yield* Effect.sleep(ttlMillis * 2 - (yield* since(downAt)))
          const backAt = yield* Clock.currentTimeMillis
          yield* cluster.startAll
          pids.push(...cluster.nodes.map((n) => n.pid))
          yield* figure("long outage: etcd restart (kill to all nodes healthy)", yield* since(downAt))
          // Leases of before the outage are restored with etcd and expire a TTL later (their members had revoked
          // them in vain): until then the group also counts them. Then exactly the three re-registered remain.
          const last = yield* Effect.forEach(
            members,
            (m) =>
              m.waitFor(
                (i) => i.count === 3 && i.at > backAt,
                "30 seconds",
                "count 3 after etcd is back"
              ),
            { concurrency: "unbounded" }
          ).pipe(Effect.zipRight(
            Effect.forEach(members, (m) =>
              Effect.map(m.events, (all) => all.filter((e): e is InfoEvent => e.event === "info").at(-1)!))
          ))
          expect(isConverged(last.map((i) =>
            Info.make(i.index, i.count, i.revision)
          ))).toBe(true)
          yield* figure("long outage: etcd back to the group re-converged", Math.max(...last.map((i) => i.at)) - backAt)
          const left = yield* leftovers(cluster.endpoints, [group])
          expect(left.keys).toHaveLength(3)
          expect(left.leases).toHaveLength(3)

          yield* Effect.forEach(members, (m) => m.leave, { discard: true })
          const exits = yield* Effect.forEach(members, (m) => m.exit("10 seconds"), { concurrency: "unbounded" })
          // No watcher, timer or socket left from the reconnections keeps a process alive after it left.
          const described = yield* Effect.forEach(members, (m, i) =>
            Effect.map(m.events, (events) =>
              exits[i]!._tag === "Some"
                ? exits[i]!.value.code
                : `still running; last lines ${JSON.stringify(events.slice(-2))}; stderr:\n${m.stderr()}`))
          expect(described).toEqual([0, 0, 0])
          // Keys go with the graceful leaves; a lease granted twice by a retried request, or revoked in vain during
          // the outage, has no key and goes with its TTL.
          yield* expectNothingLeftWithin(cluster.endpoints, [group], Duration.millis(ttlMillis + 2_000))
        }))
        yield* expectPidsGone(pids)
      }),
    90_000
  )

  it.live(
    "etcd killed with -9 and started again from its data dir: the group converges, stale keys go with their TTL",
    () =>
      Effect.gen(function*() {
        const ttl = Duration.seconds(3)
        const ttlMillis = Duration.toMillis(ttl)
        const pids: Array<number | undefined> = []
        yield* Effect.scoped(Effect.gen(function*() {
          const etcd = yield* startEtcd({ name: "restarted" })
          pids.push(etcd.pid)
          const group = uniqueGroup("restart")
          const options = { endpoints: [etcd.clientUrl], group, ttl }
          const a = yield* joinMember({ ...options, name: "a" })
          const b = yield* joinMember({ ...options, name: "b" })
          const c = yield* joinMember({ ...options, name: "c" })
          yield* converged([a, b, c], "5 seconds")

          yield* etcd.kill
          const restartAt = yield* Clock.currentTimeMillis
          yield* etcd.restart
          pids.push(etcd.pid)
          yield* figure("etcd kill -9 and restart: healthy again after", yield* since(restartAt))
          // Whether a member rode the restart out or fenced itself and registered anew, the group converges on
          // exactly the three live members; any lease of before the restart that is no longer a member's goes
          // with its TTL.
          const deadline = restartAt + ttlMillis * 3 + 10_000
          while (true) {
            const [infos, left] = yield* Effect.all([
              converged([a, b, c], Duration.millis(Math.max(1, deadline - (yield* Clock.currentTimeMillis)))),
              leftovers([etcd.clientUrl], [group])
            ])
            if (isConverged(infos) && left.keys.length === 3 && left.leases.length === 3) break
            expect(yield* Clock.currentTimeMillis).toBeLessThan(deadline)
            // etcd has no event for a lease expiring; polling is the only way to see it.
            yield* Effect.sleep("200 millis")
          }
          yield* figure("etcd kill -9 and restart: restart to converged, no stale key", yield* since(restartAt))
          const ids = (yield* a.seq.members).map((m) => m.id)
          const keys = (yield* leftovers([etcd.clientUrl], [group])).keys
          expect([...keys].sort()).toEqual(ids.map((id) => `${group}/members/${id}`).sort())

          yield* leaveAll([a, b, c])
          yield* expectNothingLeftWithin([etcd.clientUrl], [group], Duration.millis(ttlMillis + 2_000))
        }))
        yield* expectPidsGone(pids)
      }),
    60_000
  )
})
