/**
 * Churn soak: up to 30 members join and leave at random against a 3-node cluster for a bounded time, one etcd
 * node is killed and restarted from its data dir in the middle; at every quiet point the group is converged, and
 * the members' work (runAssigned, "group" mode, under the assignment checker) never overlaps on a share.
 */
import { describe, expect, it } from "@effect/vitest"
import { Clock, Duration, Effect, Fiber } from "effect"
import { fenceRegressions, makeChecker, selfOverlaps, shareOverlaps } from "../support/checker.js"
import { startCluster } from "../support/etcd.js"
import { uniqueGroup } from "../support/members.js"
import {
  admin,
  converged,
  expectNothingLeftWithin,
  expectPidsGone,
  figure,
  joinMember,
  leftovers,
  type Member,
  since
} from "../support/reliability.js"

/** A small seeded generator (mulberry32), so a failing run can be replayed with CHURN_SEED. */
const random = (seed: number) => () => {
  seed = (seed + 0x6d2b79f5) | 0
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}

/** Compacts etcd's history up to now. */
const compact = (endpoints: ReadonlyArray<string>) =>
  Effect.scoped(Effect.gen(function*() {
    const client = yield* admin(endpoints)
    const { header } = yield* Effect.promise(() => client.get("compact").exec())
    yield* Effect.promise(() => client.kv.compact({ revision: header.revision, physical: true }))
  }))

describe("churn", () => {
  it.live(
    "30 members join and leave at random for 30 s with an etcd node restarted midway: every quiet point converged",
    () =>
      Effect.gen(function*() {
        const ttl = Duration.seconds(3)
        const soakMillis = 30_000
        const maxMembers = 30
        const seed = Number(process.env["CHURN_SEED"] ?? Date.now() % 1_000_000)
        console.log(`churn seed ${seed}`)
        const next = random(seed)
        const pids: Array<number | undefined> = []
        const checker = makeChecker()
        yield* Effect.scoped(Effect.gen(function*() {
          const cluster = yield* startCluster(3)
          pids.push(...cluster.nodes.map((n) => n.pid))
          const group = uniqueGroup("churn")
          const live: Array<Member> = []
          let joined = 0
          let left = 0
          let quietPoints = 0
          let slowest = 0
          const startedAt = yield* Clock.currentTimeMillis
          let restart: Fiber.Fiber<void, unknown> | undefined

          while ((yield* since(startedAt)) < soakMillis) {
            const burst = 3 + Math.floor(next() * 8)
            for (let i = 0; i < burst; i++) {
              if (live.length < maxMembers && (live.length < 3 || next() < 0.55)) {
                const name = `m${joined++}`
                const work = { run: checker.work(name, Math.floor(next() * 50)), exclusive: "group" as const }
                live.push(yield* joinMember({ endpoints: cluster.endpoints, group, ttl, name, work }))
              } else {
                const [gone] = live.splice(Math.floor(next() * live.length), 1)
                yield* gone!.leave
                left++
              }
            }
            if (restart === undefined && (yield* since(startedAt)) > soakMillis / 2) {
              // A follower: losing the leader is a test of its own, with the TTL an election needs. The history is
              // compacted while it is down: members whose watch was on it resume elsewhere from a compacted
              // revision, so they re-read the group, and must still name every view as the others do.
              const leader = yield* cluster.leader
              const node = cluster.nodes.find((n) => n !== leader)!
              restart = yield* Effect.fork(Effect.zipRight(
                Effect.zipRight(node.kill, compact(cluster.endpoints.filter((e) => e !== node.clientUrl))),
                node.restart
              ))
            }
            // A quiet point: no join or leave until every member agrees, and etcd holds one key per live member
            // (every leave was graceful). On a loaded machine a member may fence itself (its event loop stalled
            // past the renewal window) and register anew meanwhile: then both are checked again, within the bound.
            const quietAt = yield* Clock.currentTimeMillis
            while (true) {
              const remaining = 15_000 - (yield* since(quietAt))
              yield* converged(live, Duration.millis(Math.max(1, remaining)))
              // Member keys only: the handover keys of the members' work live under the group too.
              const keys = (yield* leftovers(cluster.endpoints, [group])).keys.filter((k) => k.includes("/members/"))
              if (keys.length === live.length) break
              expect(remaining, `etcd holds ${keys.length} member keys for ${live.length} members`).toBeGreaterThan(0)
              yield* Effect.sleep("100 millis")
            }
            slowest = Math.max(slowest, yield* since(quietAt))
            quietPoints++
          }
          yield* Fiber.join(restart!)
          pids.push(...cluster.nodes.map((n) => n.pid))
          yield* converged(live, "15 seconds")
          yield* figure(`churn: slowest quiet point to converged (${joined} joins, ${left} leaves)`, slowest)
          console.log(`churn: ${quietPoints} quiet points, ${live.length} members at the end`)
          expect(quietPoints).toBeGreaterThanOrEqual(5)

          yield* Effect.forEach(live, (m) => m.leave, { concurrency: 10, discard: true })
          console.log(`churn: ${checker.runs.length} runs of work`)
          expect(checker.runs.length).toBeGreaterThan(0)
          expect(checker.runs.every((r) => Number.isFinite(r.end))).toBe(true)
          expect(selfOverlaps(checker.runs)).toEqual([])
          expect(shareOverlaps(checker.runs)).toEqual([])
          expect(fenceRegressions(checker.runs)).toEqual([])
          yield* expectNothingLeftWithin(cluster.endpoints, [group], Duration.sum(ttl, Duration.seconds(2)))
        }))
        yield* expectPidsGone(pids)
      }),
    120_000
  )
})
