/**
 * runShards against a real etcd, members in this process (each on a client of its own, behind a proxy the test can
 * pause) and in processes of their own (SIGKILLed like a crashed pod): joins, a crash, a member paused past its TTL,
 * a graceful leave. Every run of every shard is recorded on the machine's monotonic clock; no two may overlap. At
 * each quiet point every shard has exactly the worker the plan names, and a shard whose owner did not change was not
 * restarted.
 */
import { describe, expect, it } from "@effect/vitest"
import { Clock, Duration, Effect, Exit, Option, Scope } from "effect"
import { Etcd, EtcdSeq, type EtcdSeqService, Info } from "../../src/index.js"
import * as ShardPlan from "../../src/internal/shardPlan.js"
import { startEtcd } from "../support/etcd.js"
import { uniqueGroup } from "../support/members.js"
import { type MemberProcess, spawnMember } from "../support/processes.js"
import { startProxy } from "../support/proxy.js"
import { expectNothingLeftWithin, expectPidsGone, figure } from "../support/reliability.js"
import {
  fenceRegressions,
  makeShardChecker,
  now,
  running,
  runsOfProcess,
  shardOverlaps,
  type ShardRun
} from "../support/shardChecker.js"

const ttl = Duration.seconds(3)
const shards = 32
const stopMillis = 100

/** A small seeded generator, so a failing run can be replayed with SHARDS_SEED. */
const mulberry32 = (seed: number) => () => {
  seed = (seed + 0x6d2b79f5) | 0
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}

describe("runShards on a real etcd", () => {
  it.live(
    "20 s of joins, leaves, SIGKILLs and pauses past the TTL: never two workers of one shard, kept shards kept",
    () =>
      Effect.gen(function*() {
        const pids: Array<number | undefined> = []
        yield* Effect.scoped(Effect.gen(function*() {
          const etcd = yield* startEtcd({ name: "shards" })
          pids.push(etcd.pid)
          const group = uniqueGroup("shards")
          const checker = makeShardChecker()

          // --- Members: in this process behind proxies, or in processes of their own ---
          const inProcess = new Map<string, { readonly seq: EtcdSeqService; readonly leave: Effect.Effect<void> }>()
          const proxies = new Map<string, Effect.Effect.Success<ReturnType<typeof startProxy>>>()
          const join = (name: string) =>
            Effect.gen(function*() {
              const proxy = yield* startProxy(etcd.clientUrl)
              const scope = yield* Scope.make()
              const client = yield* Etcd.make({ endpoints: [proxy.endpoint], requestTimeout: "1 second" }).pipe(
                Scope.extend(scope)
              )
              const seq = yield* EtcdSeq.make({ key: group, ttl }).pipe(
                Effect.provideService(Etcd, client),
                Scope.extend(scope)
              )
              yield* EtcdSeq.runShards({ shards }, checker.work(name, stopMillis)).pipe(
                Effect.provideService(EtcdSeq, seq),
                Effect.ignore,
                Effect.forkIn(scope)
              )
              yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
              proxies.set(name, proxy)
              inProcess.set(name, { seq, leave: Scope.close(scope, Exit.void) })
            })
          // `exitedAt`: when a SIGKILLed one was seen gone (its runs end there at the latest).
          const processes = new Map<string, { readonly member: MemberProcess; exitedAt: number; live: boolean }>()
          const spawn = (name: string) =>
            Effect.map(
              spawnMember({ endpoints: [etcd.clientUrl], group, ttl, shards, stopMillis }),
              (member) => {
                pids.push(member.pid)
                processes.set(name, { member, exitedAt: Infinity, live: true })
              }
            )

          // --- Every run so far, of every member ---
          const allRuns = Effect.gen(function*() {
            const runs: Array<ShardRun> = [...checker.runs]
            for (const [name, p] of processes) runs.push(...runsOfProcess(name, yield* p.member.events, p.exitedAt))
            return runs
          })

          // --- A quiet point: each shard run by exactly the member the plan names (polled, bounded) ---
          const ownerNames = (runs: ReadonlyArray<ShardRun>) => running(runs, shards).map((o) => o.join("+"))
          const matchesPlan = (away: string | undefined) =>
            Effect.gen(function*() {
              const runs = yield* allRuns
              const owners = ownerNames(runs)
              if (owners.some((o) => o === "" || o.includes("+"))) return false
              const members = yield* inProcess.get("a")!.seq.members
              const plan = ShardPlan.plan(members.map((m) => m.id), shards)
              // Members here: by their own id. Processes: each runs the plan's shards of one of the other ids.
              const ids = new Set(members.map((m) => m.id))
              for (const [name, m] of inProcess) {
                if (name === away) continue
                const info = yield* m.seq.current
                if (!Info.isValid(info)) return false
                const id = members[info.index]?.id
                if (id === undefined) return false
                ids.delete(id)
                const planned = ShardPlan.shardsOf(plan, id)
                const actual = owners.flatMap((o, s) => (o === name ? [s] : []))
                if (planned.join() !== actual.join()) return false
              }
              const plannedSets = [...ids].map((id) => ShardPlan.shardsOf(plan, id).join()).sort()
              const actualSets = [...processes].filter(([, p]) => p.live).map(([name]) =>
                owners.flatMap((o, s) => (o === name ? [s] : [])).join()
              ).sort()
              return plannedSets.join("|") === actualSets.join("|")
            })
          const quiet = (what: string, away?: string) =>
            Effect.gen(function*() {
              const from = yield* Clock.currentTimeMillis
              while (!(yield* matchesPlan(away))) {
                if ((yield* Clock.currentTimeMillis) - from > 20_000) {
                  return yield* Effect.dieMessage(
                    `${what}: no quiet point within 20 s; owners ${JSON.stringify(ownerNames(yield* allRuns))}`
                  )
                }
                yield* Effect.sleep("50 millis")
              }
              const runs = yield* allRuns
              return new Map(
                running(runs, shards).map((owners, shard) => {
                  const run = runs.find((r) => r.shard === shard && !Number.isFinite(r.end))!
                  return [shard, { owner: owners[0]!, start: run.start }] as const
                })
              )
            })
          type Owners = Effect.Effect.Success<ReturnType<typeof quiet>>
          /** Shards whose owner did not change (bar `except`, which lost its membership) were not restarted. */
          const expectKept = (before: Owners, after: Owners, except?: string) => {
            let moved = 0
            for (const [shard, was] of before) {
              const is = after.get(shard)!
              if (is.owner !== was.owner) moved++
              else if (was.owner !== except) {
                expect(is.start, `shard ${shard} of ${was.owner} restarted`).toBe(was.start)
              }
            }
            return moved
          }

          // --- Three here, two in processes of their own; then changes at random, a quiet point after each ---
          yield* Effect.all([join("a"), join("b"), join("c"), spawn("p0"), spawn("p1")], { concurrency: "unbounded" })
          let owners = yield* quiet("five members")
          const random = mulberry32(Number(process.env["SHARDS_SEED"] ?? 7))
          let joined = 0
          let spawned = 2
          const startedAt = now()
          const actions: Array<string> = []
          while (actions.length < 12 || now() - startedAt < 20_000) {
            const here = [...inProcess.keys()].filter((n) => n !== "a")
            const there = [...processes].filter(([, p]) => p.live).map(([n]) => n)
            const roll = random()
            const pick = (names: ReadonlyArray<string>) => names[Math.floor(random() * names.length)]!
            let changedAt = now()
            let gone: string | undefined
            if (roll < 0.2 && here.length < 4) {
              const name = `h${joined++}`
              yield* join(name)
              actions.push(`join ${name}`)
            } else if (roll < 0.35 && there.length < 3) {
              const name = `p${spawned++}`
              yield* spawn(name)
              actions.push(`spawn ${name}`)
            } else if (roll < 0.5 && here.length > 1) {
              gone = pick(here)
              yield* inProcess.get(gone)!.leave
              inProcess.delete(gone)
              actions.push(`leave ${gone}`)
            } else if (roll < 0.65 && there.length > 1) {
              gone = pick(there)
              const p = processes.get(gone)!
              yield* p.member.leave
              const exit = yield* p.member.exit("10 seconds")
              expect(Option.map(exit, (e) => [e.code, e.signal]), `${gone} ended by itself`).toEqual(
                Option.some([0, null])
              )
              p.live = false
              actions.push(`leave ${gone}`)
            } else if (roll < 0.85 && there.length > 1) {
              gone = pick(there)
              const p = processes.get(gone)!
              const exit = yield* p.member.crash
              Object.assign(p, { exitedAt: exit.mono, live: false })
              actions.push(`SIGKILL ${gone}`)
            } else if (here.length > 0) {
              // Paused past its TTL: it fences itself, its shards move; back, it joins as a new member.
              const paused = pick(here)
              yield* proxies.get(paused)!.pause
              const away = yield* quiet(`${paused} paused`, paused)
              expectKept(owners, away, paused)
              owners = away
              changedAt = now()
              yield* proxies.get(paused)!.resume
              actions.push(`pause ${paused}`)
            } else {
              continue
            }
            const after = yield* quiet(actions.at(-1)!)
            // Each shard that moved started once, at its new owner; every other shard kept its run.
            const started = (yield* allRuns).filter((r) => r.start > changedAt).length
            expect(started, `after ${actions.join(", ")}`).toBe(expectKept(owners, after, gone))
            owners = after
            if (gone !== undefined) {
              const last = Math.max(...(yield* allRuns).filter((r) => r.start > changedAt).map((r) => r.start))
              yield* figure(
                `${actions.at(-1)!.split(" ")[0]} to the last of its shards started elsewhere`,
                last - changedAt
              )
            }
          }
          yield* Effect.log(`runShards on etcd: ${actions.join(", ")}`)

          // --- Never two workers of one shard, fences growing; nothing left behind ---
          const runs = yield* allRuns
          expect(shardOverlaps(runs)).toEqual([])
          expect(fenceRegressions(runs)).toEqual([])
          yield* Effect.forEach(inProcess.values(), (m) => m.leave, { concurrency: "unbounded", discard: true })
          yield* Effect.forEach(
            [...processes.values()].filter((p) => p.live),
            (p) =>
              Effect.gen(function*() {
                yield* p.member.leave
                expect(Option.map(yield* p.member.exit("10 seconds"), (e) => e.code)).toEqual(Option.some(0))
              }),
            { concurrency: "unbounded", discard: true }
          )
          expect(running(checker.runs, shards).flat()).toEqual([])
          yield* expectNothingLeftWithin([etcd.clientUrl], [group], "5 seconds")
        }))
        yield* expectPidsGone(pids)
      }),
    120_000
  )
})
