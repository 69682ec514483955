/**
 * `etcdseq drain` and `etcdseq shards ...` end to end: real `etcdseq` processes against a real etcd, beside members of
 * this process that run `runShards` (with weights and instances). Each command's effect is checked where it lands:
 * on which member each shard runs, and in what `status --json` shows.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { Etcd, EtcdSeq } from "../src/index.js"
import { child, cli, eventually } from "./support/cli.js"
import { startEtcd } from "./support/etcd.js"
import { uniqueGroup } from "./support/members.js"
import { expectPidsGone } from "./support/reliability.js"
import { makeShardChecker, running, shardOverlaps } from "./support/shardChecker.js"

describe("the etcdseq commands over a sharded group", () => {
  it.live(
    "weights shown; pin, pause, resume, unpin, freeze, thaw obeyed; drain by instance; run drains on SIGTERM",
    () =>
      Effect.gen(function*() {
        const pids: Array<number | undefined> = []
        yield* Effect.scoped(Effect.gen(function*() {
          const etcd = yield* startEtcd({ name: "cli-shards" })
          pids.push(etcd.pid)
          const group = uniqueGroup("cli-shards")
          const endpoints = ["--endpoints", etcd.clientUrl]
          const checker = makeShardChecker()
          const shards = 8
          const join = (name: string, instance: string, weight: number) =>
            Effect.gen(function*() {
              const client = yield* Etcd.make({ endpoints: [etcd.clientUrl] })
              const seq = yield* EtcdSeq.make({ key: group, ttl: "5 seconds", instance, weight }).pipe(
                Effect.provideService(Etcd, client)
              )
              yield* EtcdSeq.runShards({ shards }, checker.work(name)).pipe(
                Effect.provideService(EtcdSeq, seq),
                Effect.forkScoped
              )
              return seq
            })
          yield* join("a", "a-1", 1)
          const b = yield* join("b", "b-1", 2)
          const owners = () => running(checker.runs, shards).map((o) => o.join("+"))
          const settled = (what: string, check: (o: ReadonlyArray<string>) => boolean) =>
            eventually(() => check(owners()) && owners().every((o) => o === "" || !o.includes("+")), what)
          yield* settled("every shard runs", (o) => o.every((x) => x === "a" || x === "b"))
          const ran = (command: ReadonlyArray<string>) =>
            Effect.flatMap(cli([...command, "--group", group, ...endpoints]), (p) => {
              pids.push(p.pid)
              return Effect.map(p.exit(), (code) => ({ code, out: p.lines(), err: p.stderr() }))
            })
          const status = Effect.map(ran(["status", "--json"]), (r) => JSON.parse(r.out[0]!))

          // --- Weights: in members and status ---
          const listed = yield* ran(["members", "--json"])
          expect(JSON.parse(listed.out[0]!).members.map((m: { weight: number }) => m.weight)).toEqual([1, 2])
          expect((yield* ran(["members"])).out.join("\n")).toMatch(/WEIGHT/)

          // --- pin, pause, resume, unpin ---
          const s = owners().indexOf("b")
          expect(s).toBeGreaterThanOrEqual(0)
          expect(yield* ran(["shards", "pin", "--shard", String(s), "--to", "a-1"])).toMatchObject({ code: 0 })
          yield* settled("the pinned shard runs at a", (o) => o[s] === "a")
          expect((yield* status).controls.pins).toEqual([{ shard: s, to: "a-1" }])
          expect(yield* ran(["shards", "pause", "--shard", String(s)])).toMatchObject({ code: 0 })
          yield* settled("the paused shard runs nowhere", (o) => o[s] === "")
          const paused = yield* ran(["status"])
          expect(paused.out.join("\n")).toMatch(new RegExp(`paused ${s}`))
          yield* ran(["shards", "resume", "--shard", String(s)])
          yield* ran(["shards", "unpin", "--shard", String(s)])
          yield* settled("the shard back at b", (o) => o[s] === "b")
          const plan = owners()

          // --- freeze and thaw ---
          expect(yield* ran(["shards", "freeze"])).toMatchObject({ code: 0 })
          const frozen = yield* status
          expect(frozen.controls.frozen).toBe(true)
          expect(frozen.controls.frozenOwners).toHaveLength(shards)
          expect(yield* ran(["shards", "thaw"])).toMatchObject({ code: 0 })
          expect((yield* status).controls.frozen).toBe(false)
          expect(owners()).toEqual(plan)

          // --- drain by instance: b keeps its Info, holds nothing, its shards run at a ---
          const info = String(yield* b.current)
          const drained = yield* ran(["drain", "--instance", "b-1", "--timeout", "20s"])
          expect(drained.code).toBe(0)
          expect(drained.out.at(-1)).toMatch(/is drained/)
          yield* settled("every shard at a", (o) => o.every((x) => x === "a"))
          expect(String(yield* b.current)).toBe(info)
          const after = yield* status
          expect(after.drains).toHaveLength(1)
          expect(after.members.find((m: { instance: string }) => m.instance === "b-1").id).toBe(after.drains[0])

          // --- errors ---
          expect((yield* ran(["drain", "--instance", "nobody"])).code).toBe(67)
          const noTo = yield* ran(["shards", "pin", "--shard", "1"])
          expect(noTo.code).toBe(64)
          expect(noTo.err).toMatch(/needs --to/)
          const badWeight = yield* cli(["run", "--group", group, "--weight", "0", ...endpoints, "--", "true"])
          pids.push(badWeight.pid)
          expect(yield* badWeight.exit()).toBe(64)
          expect(badWeight.stderr()).toMatch(/--weight: must be a positive finite number/)

          // --- run drains before it leaves on SIGTERM ---
          const wrapper = yield* cli([
            "run",
            "--group",
            group,
            "--ttl",
            "4s",
            ...endpoints,
            "--",
            process.execPath,
            child
          ])
          pids.push(wrapper.pid)
          yield* eventually(() => /started/.test(wrapper.stderr()), "the wrapper's child started")
          yield* wrapper.signal("SIGTERM")
          expect(yield* wrapper.exit()).toBe(0)
          expect(wrapper.stderr()).toMatch(/draining before the leave \(at most 2s\)/)
          expect(wrapper.stderr()).toMatch(/etcdseq run: drained/)
          expect(shardOverlaps(checker.runs)).toEqual([])
        }))
        yield* expectPidsGone(pids)
      }),
    120_000
  )
})
