/**
 * FenceSql against a real PostgreSQL server (test/support/postgres.ts) and against SQLite in memory: the fences table,
 * the check inside the caller's transaction (equal fences pass, a lower one rolls the transaction back with
 * StaleFence), and on PostgreSQL two holders' transactions on one resource serialized by the check's row lock.
 */
import { PgClient } from "@effect/sql-pg"
import { SqliteClient } from "@effect/sql-sqlite-node"
import * as SqlClient from "@effect/sql/SqlClient"
import { describe, expect, it, layer, type Vitest } from "@effect/vitest"
import { Deferred, Effect, Either, Exit, Fiber, Layer, Metric } from "effect"
import { StaleFence } from "../src/index.js"
import * as Metrics from "../src/internal/metrics.js"
import { FenceSql } from "../src/sql.js"
import { startPostgres } from "./support/postgres.js"

const PostgresLive = Layer.unwrapScoped(
  Effect.map(
    startPostgres,
    (pg) => PgClient.layer({ host: pg.host, port: pg.port, username: pg.user, database: pg.database })
  )
)

const SqliteLive = SqliteClient.layer({ filename: ":memory:" })

/** A guarded write: a row of `log` and the check, in one transaction. */
const write = (resource: string, fence: number, writer: string) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql.withTransaction(Effect.gen(function*() {
      yield* sql`INSERT INTO fence_log (resource, fence, writer) VALUES (${resource}, ${fence}, ${writer})`
      yield* FenceSql.check(resource, fence)
    }))
  })

const logged = (resource: string) =>
  Effect.flatMap(
    SqlClient.SqlClient,
    (sql) => sql<{ writer: string }>`SELECT writer FROM fence_log WHERE resource = ${resource} ORDER BY writer`
  ).pipe(
    Effect.map((rows) => rows.map((r) => r.writer))
  )

const stored = (resource: string) =>
  Effect.flatMap(
    SqlClient.SqlClient,
    (sql) => sql<{ fence: unknown }>`SELECT fence FROM etcdseq_fences WHERE resource = ${resource}`
  ).pipe(
    Effect.map((rows) => rows.map((r) => Number(r.fence)))
  )

const refusals = Metric.value(Metric.tagged(Metrics.staleFences, "store", "sql")).pipe(Effect.map((s) => s.count))

/** What both dialects must do. */
const contract = <X extends boolean>(it: Vitest.MethodsNonLive<SqlClient.SqlClient, X>) => {
  it.effect("setup creates the table, once, however many members run it at once", () =>
    Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      yield* sql`DROP TABLE IF EXISTS etcdseq_fences`
      yield* Effect.all(Array.from({ length: 6 }, () => FenceSql.setup), { concurrency: "unbounded" })
      yield* FenceSql.setup
      yield* sql`CREATE TABLE IF NOT EXISTS fence_log (resource TEXT, fence BIGINT, writer TEXT)`
      expect(yield* stored("nothing")).toEqual([])
    }))

  it.effect("a check records the fence; equal and higher pass; a lower one rolls its transaction back", () =>
    Effect.gen(function*() {
      yield* FenceSql.setup
      const before = yield* refusals
      yield* write("orders", 7, "a1")
      yield* write("orders", 7, "a2")
      expect(yield* stored("orders")).toEqual([7])
      yield* write("orders", 9, "b1")
      expect(yield* stored("orders")).toEqual([9])
      const refused = yield* Effect.flip(write("orders", 8, "stale"))
      expect(refused).toBeInstanceOf(StaleFence)
      expect(refused).toMatchObject({ _tag: "StaleFence", resource: "orders", fence: 8, current: 9 })
      expect(yield* logged("orders")).toEqual(["a1", "a2", "b1"])
      expect(yield* stored("orders")).toEqual([9])
      expect((yield* refusals) - before).toBe(1)
      // Another resource has a fence of its own.
      yield* write("invoices", 3, "c1")
      expect([yield* stored("invoices"), yield* stored("orders")]).toEqual([[3], [9]])
    }))

  it.effect("outside a transaction the check dies: it would guard nothing", () =>
    Effect.gen(function*() {
      yield* FenceSql.setup
      const exit = yield* Effect.exit(FenceSql.check("alone", 1))
      expect(Exit.isFailure(exit) && String(exit.cause)).toContain("inside sql.withTransaction")
      expect(yield* stored("alone")).toEqual([])
    }))
}

describe("FenceSql", () => {
  layer(PostgresLive, { timeout: "60 seconds", excludeTestServices: true })("on PostgreSQL", (it) => {
    contract(it)

    it.effect("a holder's open transaction holds the resource: a newer holder's check waits for its commit", () =>
      Effect.gen(function*() {
        yield* FenceSql.setup
        const sql = yield* SqlClient.SqlClient
        yield* write("queue", 5, "a0")
        const checked = yield* Deferred.make<void>()
        const commit = yield* Deferred.make<void>()
        const older = yield* sql.withTransaction(Effect.gen(function*() {
          yield* FenceSql.check("queue", 5)
          yield* sql`INSERT INTO fence_log (resource, fence, writer) VALUES ('queue', 5, 'a1')`
          yield* Deferred.succeed(checked, undefined)
          yield* Deferred.await(commit)
        })).pipe(Effect.fork)
        yield* Deferred.await(checked)
        const newer = yield* write("queue", 7, "b1").pipe(Effect.fork)
        yield* Effect.sleep("300 millis")
        expect(newer.unsafePoll()).toBeNull()
        yield* Deferred.succeed(commit, undefined)
        yield* Fiber.join(older)
        yield* Fiber.join(newer)
        // The older holder's writes committed before the newer's check: never after it.
        expect(yield* logged("queue")).toEqual(["a0", "a1", "b1"])
        expect(yield* Effect.flip(write("queue", 5, "a2"))).toMatchObject({ fence: 5, current: 7 })
      }))

    it.effect("and the other way round: the newer holder's open transaction makes the older one's check fail after it", () =>
      Effect.gen(function*() {
        yield* FenceSql.setup
        const sql = yield* SqlClient.SqlClient
        const checked = yield* Deferred.make<void>()
        const commit = yield* Deferred.make<void>()
        const newer = yield* sql.withTransaction(Effect.gen(function*() {
          yield* FenceSql.check("jobs", 12)
          yield* Deferred.succeed(checked, undefined)
          yield* Deferred.await(commit)
        })).pipe(Effect.fork)
        yield* Deferred.await(checked)
        const older = yield* write("jobs", 10, "late").pipe(Effect.either, Effect.fork)
        yield* Effect.sleep("300 millis")
        expect(older.unsafePoll()).toBeNull()
        yield* Deferred.succeed(commit, undefined)
        yield* Fiber.join(newer)
        const outcome = yield* Fiber.join(older)
        expect(Either.isLeft(outcome) && outcome.left).toMatchObject({ _tag: "StaleFence", fence: 10, current: 12 })
        expect(yield* logged("jobs")).toEqual([])
      }))

    it.effect("under REPEATABLE READ the waiting check fails with a serialization error instead", () =>
      Effect.gen(function*() {
        yield* FenceSql.setup
        const sql = yield* SqlClient.SqlClient
        yield* write("rr", 1, "r0")
        const checked = yield* Deferred.make<void>()
        const commit = yield* Deferred.make<void>()
        const first = yield* sql.withTransaction(Effect.gen(function*() {
          yield* FenceSql.check("rr", 2)
          yield* Deferred.succeed(checked, undefined)
          yield* Deferred.await(commit)
        })).pipe(Effect.fork)
        yield* Deferred.await(checked)
        const second = yield* sql.withTransaction(Effect.gen(function*() {
          yield* sql`SET TRANSACTION ISOLATION LEVEL REPEATABLE READ`
          yield* FenceSql.check("rr", 3)
        })).pipe(Effect.either, Effect.fork)
        yield* Effect.sleep("200 millis")
        yield* Deferred.succeed(commit, undefined)
        yield* Fiber.join(first)
        const outcome = yield* Fiber.join(second)
        expect(Either.isLeft(outcome) && outcome.left._tag).toBe("SqlError")
        expect(yield* stored("rr")).toEqual([2])
      }))
  })

  layer(SqliteLive)("on SQLite", (it) => {
    contract(it)
  })

  it.effect("another dialect is refused", () =>
    Effect.gen(function*() {
      const client = yield* SqlClient.SqlClient
      const mysql = Object.assign(Object.create(client), {
        onDialectOrElse: (options: { readonly mysql?: () => unknown; readonly orElse: () => unknown }) =>
          options.mysql === undefined ? options.orElse() : options.mysql()
      }) as SqlClient.SqlClient
      const refused = yield* FenceSql.setup.pipe(Effect.provideService(SqlClient.SqlClient, mysql), Effect.flip)
      expect(refused.message).toContain("PostgreSQL and SQLite")
    }).pipe(Effect.provide(SqliteLive)))
})
