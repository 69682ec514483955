/**
 * The fence proof in miniature, fast and deterministic: runShards over MemoryEtcd under the TestClock, writes to SQLite
 * through FenceSql.check. A member cut off past its TTL whose work does not stop (as a paused process's, resumed)
 * writes on after its successor took its shards: its writes are refused from the successor's first write on, and per
 * resource the committed fences never go down. Without the check they do, which is what the check is for.
 */
import { SqliteClient } from "@effect/sql-sqlite-node"
import * as SqlClient from "@effect/sql/SqlClient"
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Exit, Layer, Scope } from "effect"
import { Etcd, EtcdSeq, MemoryEtcd, type Shard } from "../src/index.js"
import { FenceSql } from "../src/sql.js"
import { advance, settle } from "./support/testClock.js"

interface Outcome {
  readonly member: string
  readonly shard: number
  readonly fence: number
  readonly outcome: "committed" | "stale"
}

/**
 * One member on a client of its own, running `runShards` over 4 shards; each shard's work writes a row every 100 ms.
 * While `stubborn.now`, a work started does not stop when asked, for 6 s: a process paused mid-work and resumed, as far
 * as its writes go.
 */
const member = (
  name: string,
  sql: SqlClient.SqlClient,
  outcomes: Array<Outcome>,
  options: { readonly check: boolean; readonly stubborn: { now: boolean } }
) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const context = yield* Layer.buildWithScope(Etcd.layerMemory, scope)
    const seq = yield* EtcdSeq.make({ key: "g/fences", ttl: "3 seconds" }).pipe(
      Effect.provide(context),
      Scope.extend(scope)
    )
    const write = (shard: Shard) =>
      sql.withTransaction(Effect.gen(function*() {
        yield* sql`INSERT INTO rows (resource, fence, writer) VALUES (${`shard-${shard.id}`}, ${shard.fence}, ${name})`
        if (options.check) yield* FenceSql.check(`shard-${shard.id}`, shard.fence)
      })).pipe(
        Effect.as("committed" as const),
        Effect.catchTag("StaleFence", () => Effect.succeed("stale" as const)),
        Effect.tap((outcome) =>
          Effect.sync(() => outcomes.push({ member: name, shard: shard.id, fence: shard.fence, outcome }))
        ),
        Effect.zipRight(Effect.sleep("100 millis"))
      )
    const work = (shard: Shard) =>
      options.stubborn.now
        ? Effect.uninterruptible(Effect.repeatN(write(shard), 60))
        : Effect.forever(write(shard))
    yield* EtcdSeq.runShards({ shards: 4 }, work).pipe(
      Effect.provideService(EtcdSeq, seq),
      Effect.provideService(SqlClient.SqlClient, sql),
      Effect.ignore,
      Effect.forkIn(scope)
    )
    return { etcd: Context.get(context, Etcd), leave: Scope.close(scope, Exit.void) }
  })

const scenario = (check: boolean) =>
  Effect.gen(function*() {
    const memory = yield* MemoryEtcd
    const sql = yield* SqlClient.SqlClient
    yield* sql`CREATE TABLE rows (id INTEGER PRIMARY KEY AUTOINCREMENT, resource TEXT, fence INTEGER, writer TEXT)`
    yield* FenceSql.setup
    const outcomes: Array<Outcome> = []
    const stubborn = { now: true }
    const a = yield* member("a", sql, outcomes, { check, stubborn })
    yield* settle
    const b = yield* member("b", sql, outcomes, { check, stubborn: { now: false } })
    yield* settle
    yield* advance(500)
    const aShards = [...new Set(outcomes.filter((o) => o.member === "a").map((o) => o.shard))]
    // a is cut off: its lease expires after its TTL and b takes its shards, while a's work writes on.
    yield* memory.outage({ mode: "hang", clients: [a.etcd] })
    // Only the works running now: those a starts once it joined again stop when asked.
    stubborn.now = false
    yield* advance(5_000)
    yield* memory.recover
    yield* advance(2_000)
    yield* a.leave
    yield* b.leave
    // SQLite runs one transaction at a time here: the id order is the commit order.
    const rows = yield* sql<{ resource: string; fence: number; writer: string }>`
      SELECT resource, fence, writer FROM rows ORDER BY id`
    const regressions: Array<string> = []
    const highest = new Map<string, number>()
    for (const row of rows) {
      if (row.fence < (highest.get(row.resource) ?? 0)) regressions.push(`${row.resource}: ${row.writer} ${row.fence}`)
      highest.set(row.resource, Math.max(row.fence, highest.get(row.resource) ?? 0))
    }
    return { outcomes, aShards, regressions }
  }).pipe(
    Effect.provide(Layer.merge(MemoryEtcd.layer, SqliteClient.layer({ filename: ":memory:" })))
  )

describe("fences over MemoryEtcd and SQLite, under the TestClock", () => {
  it.scoped("a member whose work outlives its lease is refused from its successor's first write on", () =>
    Effect.gen(function*() {
      const { aShards, outcomes, regressions } = yield* scenario(true)
      expect(aShards.length).toBeGreaterThan(0)
      expect(regressions).toEqual([])
      for (const shard of aShards) {
        const bFirst = outcomes.findIndex((o) => o.member === "b" && o.shard === shard)
        expect(bFirst, `b took shard ${shard}`).toBeGreaterThan(0)
        const aBefore = outcomes.slice(0, bFirst).filter((o) => o.member === "a" && o.shard === shard)
        const aAfter = outcomes.slice(bFirst).filter((o) => o.member === "a" && o.shard === shard)
        expect(aBefore.every((o) => o.outcome === "committed")).toBe(true)
        // a's work wrote on for seconds after b took the shard: every one of those writes was refused.
        expect(aAfter.length).toBeGreaterThan(5)
        expect(aAfter.filter((o) => o.fence < outcomes[bFirst]!.fence).every((o) => o.outcome === "stale")).toBe(true)
      }
    }))

  it.scoped("without the check, its writes commit after its successor's", () =>
    Effect.gen(function*() {
      const { regressions } = yield* scenario(false)
      expect(regressions.length).toBeGreaterThan(0)
    }))
})
