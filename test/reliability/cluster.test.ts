/**
 * Members against a 3-node etcd cluster that loses a node: its leader killed, a follower paused past the TTL (a
 * minority partition), a member's only node gone while its watch history is compacted.
 */
import { describe, expect, it } from "@effect/vitest"
import { Clock, Duration, Effect, Metric } from "effect"
import * as Metrics from "../../src/internal/metrics.js"
import { type EtcdCluster, startCluster } from "../support/etcd.js"
import { uniqueGroup } from "../support/members.js"
import {
  admin,
  converged,
  expectNothingLeftWithin,
  expectPidsGone,
  figure,
  joinMember,
  leaveAll,
  since
} from "../support/reliability.js"

const ttl = Duration.seconds(3)
const ttlMillis = Duration.toMillis(ttl)

const runningEndpoints = (cluster: EtcdCluster) =>
  cluster.nodes.filter((n) => n.pid !== undefined).map((n) => n.clientUrl)

describe("a 3-node etcd cluster losing a node", () => {
  it.live(
    "leader loss: members keep their leases and indexes, and a join during the failover reaches everyone",
    () =>
      Effect.gen(function*() {
        // A member fences itself 0.8 TTL after its last renewal was sent, and no renewal is answered while the
        // cluster has no leader: with etcd's default election timeout (1 s, randomized up to 2 s) the election alone
        // takes 1-2.5 s here. The TTL must cover the keepalive interval (TTL/6) plus that: 6 s does, 3 s does not
        // (with 3 s, members fenced themselves in about half of the runs, with keepalives every TTL/3; see the report).
        const ttl = Duration.seconds(6)
        const pids: Array<number | undefined> = []
        yield* Effect.scoped(Effect.gen(function*() {
          const cluster = yield* startCluster(3)
          pids.push(...cluster.nodes.map((n) => n.pid))
          const group = uniqueGroup("leader-loss")
          const options = { endpoints: cluster.endpoints, group, ttl }
          const a = yield* joinMember({ ...options, name: "a" })
          const b = yield* joinMember({ ...options, name: "b" })
          const c = yield* joinMember({ ...options, name: "c" })
          yield* converged([a, b, c], "5 seconds")

          const leader = yield* cluster.leader
          const killedAt = yield* Clock.currentTimeMillis
          yield* leader.kill
          // The change made during the failover: a fourth member joins while the cluster elects a new leader.
          const [d, newLeader] = yield* Effect.all([
            joinMember({ ...options, name: "d" }),
            Effect.tap(cluster.leader, () =>
              Effect.flatMap(since(killedAt), (ms) => figure("leader failover (kill to new leader)", ms)))
          ], { concurrency: "unbounded" })
          expect(newLeader.name).not.toBe(leader.name)
          yield* converged([a, b, c, d], "10 seconds")
          yield* figure("leader loss: kill to a join seen by every member", yield* since(killedAt))

          // Time must pass: the leases have to be renewed through the new leader for more than a TTL.
          const held = Duration.toMillis(ttl) * 1.5 - (yield* since(killedAt))
          if (held > 0) {
            yield* Effect.sleep(held)
          }
          expect(yield* a.infos).toEqual(["0/1", "0/2", "0/3", "0/4"])
          expect(yield* b.infos).toEqual(["1/2", "1/3", "1/4"])
          expect(yield* c.infos).toEqual(["2/3", "2/4"])
          expect(yield* d.infos).toEqual(["3/4"])

          yield* leaveAll([a, b, c, d])
          yield* expectNothingLeftWithin(runningEndpoints(cluster), [group], "2 seconds")
        }))
        yield* expectPidsGone(pids)
      }),
    60_000
  )

  it.live(
    "minority partition: a follower paused for 26 s (TTL 3 s) costs no member its Info; a join meanwhile reaches all",
    () =>
      Effect.gen(function*() {
        const pids: Array<number | undefined> = []
        yield* Effect.scoped(Effect.gen(function*() {
          const cluster = yield* startCluster(3)
          pids.push(...cluster.nodes.map((n) => n.pid))
          const group = uniqueGroup("partition")
          const options = { endpoints: cluster.endpoints, group, ttl }
          const a = yield* joinMember({ ...options, name: "a" })
          const b = yield* joinMember({ ...options, name: "b" })
          const c = yield* joinMember({ ...options, name: "c" })
          yield* converged([a, b, c], "5 seconds")

          const leader = yield* cluster.leader
          const follower = cluster.nodes.find((n) => n !== leader)!
          const pauseMillis = 26_000
          const pausedAt = yield* Clock.currentTimeMillis
          yield* follower.pause
          // A join halfway through the pause, through whichever nodes answer.
          yield* Effect.sleep(ttlMillis / 2)
          const joinAt = yield* Clock.currentTimeMillis
          const d = yield* joinMember({ ...options, name: "d" })
          const seen = yield* converged([a, b, c, d], Duration.millis(pauseMillis)).pipe(
            Effect.zipRight(since(joinAt)),
            Effect.fork
          )
          // Time must pass: the pause has to outlast the TTL several times, and the detection of a silent
          // connection (a gRPC ping every 5 s, unanswered for 6 s), twice: a watch that moves may land on the
          // paused node again (etcd3 picks hosts at random), a chance of 1 in 3.
          yield* Effect.sleep(pauseMillis - (yield* since(pausedAt)))
          const resumedAt = yield* Clock.currentTimeMillis
          const joinSeenAfter = yield* seen.await.pipe(Effect.flatten)
          yield* figure("minority partition: a join during the pause, seen by every member after", joinSeenAfter)
          // Every member saw it while the node was still paused: the watches on it moved to the others.
          expect(joinAt + joinSeenAfter).toBeLessThan(resumedAt)
          yield* follower.resume

          // After the partition heals, a leave reaches everyone too.
          yield* a.leave
          yield* converged([b, c, d], "5 seconds")
          expect(yield* a.infos).toEqual(["0/1", "0/2", "0/3", "0/4", "invalid"])
          expect(yield* b.infos).toEqual(["1/2", "1/3", "1/4", "0/3"])
          expect(yield* c.infos).toEqual(["2/3", "2/4", "1/3"])
          expect(yield* d.infos).toEqual(["3/4", "2/3"])

          yield* leaveAll([b, c, d])
          // A lease grant that timed out on the paused node is still applied when it resumes: a lease nobody holds,
          // with nothing under it, gone after its TTL. So the bound is the TTL and a margin, not the leave alone.
          yield* expectNothingLeftWithin(cluster.endpoints, [group], Duration.sum(ttl, "2 seconds"))
        }))
        yield* expectPidsGone(pids)
      }),
    75_000
  )

  it.live(
    "compacted watch history: a member whose only node was down re-reads the group and misses no leave or join",
    () =>
      Effect.gen(function*() {
        const pids: Array<number | undefined> = []
        yield* Effect.scoped(Effect.gen(function*() {
          const cluster = yield* startCluster(3)
          pids.push(...cluster.nodes.map((n) => n.pid))
          const leader = yield* cluster.leader
          const [pinned, ...others] = [...cluster.nodes.filter((n) => n !== leader), leader]
          const othersEndpoints = others.map((n) => n.clientUrl)
          const group = uniqueGroup("compacted")
          // `a` talks to one node only; its TTL outlasts that node's restart, so it stays a member throughout.
          const a = yield* joinMember({ endpoints: [pinned!.clientUrl], group, ttl: "10 seconds", name: "a" })
          const b = yield* joinMember({ endpoints: othersEndpoints, group, ttl, name: "b" })
          const c = yield* joinMember({ endpoints: othersEndpoints, group, ttl, name: "c" })
          yield* converged([a, b, c], "5 seconds")

          yield* pinned!.kill
          pids.push(pinned!.pid)
          // While `a` is cut off: a leave and two joins, then the history `a` would resume from is compacted away.
          yield* b.leave
          const d = yield* joinMember({ endpoints: othersEndpoints, group, ttl, name: "d" })
          const e = yield* joinMember({ endpoints: othersEndpoints, group, ttl, name: "e" })
          yield* Effect.all([c.until((i) => i.count === 4, "5 seconds"), d.until((i) => i.count === 4, "5 seconds")])
          yield* Effect.scoped(Effect.gen(function*() {
            const client = yield* admin(othersEndpoints)
            const revision = (yield* Effect.promise(() => client.get("anything").exec())).header.revision
            yield* Effect.promise(() => client.kv.compact({ revision, physical: true }))
          }))
          const readsBefore = (yield* Metric.value(Metrics.groupReads)).count

          const restartedAt = yield* Clock.currentTimeMillis
          yield* pinned!.restart
          pids.push(pinned!.pid)
          yield* converged([a, c, d, e], "15 seconds")
          yield* figure("compaction: node back to the cut-off member re-converged", yield* since(restartedAt))
          // Its watch could not resume (the history was compacted): it read the group once more.
          expect((yield* Metric.value(Metrics.groupReads)).count - readsBefore).toBeGreaterThanOrEqual(1)
          // No leave or join missed: `a` holds exactly the live members, in join order, as the others do.
          expect((yield* a.seq.members).map((m) => m.id)).toEqual((yield* c.seq.members).map((m) => m.id))
          expect(yield* a.infos).toEqual(["0/1", "0/2", "0/3", "0/4"])
          expect(yield* c.infos).toEqual(["2/3", "1/2", "1/3", "1/4"])

          yield* leaveAll([a, c, d, e])
          yield* expectNothingLeftWithin(cluster.endpoints, [group], "2 seconds")
        }))
        yield* expectPidsGone(pids)
      }),
    60_000
  )
})
