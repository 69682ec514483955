/**
 * Fences checked by a SQL database (`effect-etcdseq/sql`, over `@effect/sql`): the writes of a holder's transaction
 * commit only if no newer holder of the resource has written, so a process paused past its TTL writes nothing once it
 * resumes beside its successor.
 *
 * One table, `etcdseq_fences` (`resource` text primary key, `fence` 64-bit integer): one row per resource, holding
 * the highest fence a transaction recorded for it. `check(resource, fence)`, inside the caller's transaction, is one
 * statement: an upsert that records `GREATEST(stored, fence)` and returns it. It takes the row's lock until the
 * transaction ends, so two holders' transactions on one resource serialize: a stale holder's writes commit before any
 * newer holder's check, never after it. When the returned fence is above the caller's, `check` fails with
 * `StaleFence` and the transaction rolls back. Equal fences pass: a holder writes many times.
 *
 * PostgreSQL and SQLite. Programs in other languages run the same statement (`statements`), then compare.
 *
 * @since 0.1.0
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { SqlError } from "@effect/sql/SqlError"
import { Effect, Metric, Option, Schema } from "effect"
import { StaleFence } from "./Fence.js"
import * as Metrics from "./internal/metrics.js"

/**
 * The table `setup` creates and `check` writes: one row per resource.
 *
 * @since 0.1.0
 * @category constants
 */
export const table = "etcdseq_fences"

/**
 * The statements, per dialect, for programs that do not use this module (a child of `etcdseq run` in Python or Go):
 * `setup` creates the table if missing; `check` takes the resource (`$1`, the first `?`) and the fence (`$2`, the second `?`), runs
 * inside the transaction of the writes it guards, and returns one row whose `fence` is the highest recorded. Above
 * the caller's fence, the caller rolls back: a newer holder wrote.
 *
 * @example
 * ```ts
 * import { FenceSql } from "effect-etcdseq/sql"
 *
 * console.log(FenceSql.statements.pg.check)
 * ```
 * @since 0.1.0
 * @category constants
 */
export const statements: {
  readonly pg: { readonly setup: string; readonly check: string }
  readonly sqlite: { readonly setup: string; readonly check: string }
} = {
  pg: {
    setup: `CREATE TABLE IF NOT EXISTS ${table} (resource TEXT PRIMARY KEY, fence BIGINT NOT NULL)`,
    check: `INSERT INTO ${table} (resource, fence) VALUES ($1, $2)
ON CONFLICT (resource) DO UPDATE SET fence = GREATEST(${table}.fence, EXCLUDED.fence)
RETURNING fence`
  },
  sqlite: {
    setup: `CREATE TABLE IF NOT EXISTS ${table} (resource TEXT PRIMARY KEY, fence INTEGER NOT NULL)`,
    check: `INSERT INTO ${table} (resource, fence) VALUES (?, ?)
ON CONFLICT (resource) DO UPDATE SET fence = MAX(fence, excluded.fence)
RETURNING fence`
  }
}

/**
 * Creates the fences table if it is missing. Safe to run from every member at start: members that create it at
 * once are tried again, and find it.
 *
 * Errors: `SqlError`, as any statement; for a dialect other than PostgreSQL and SQLite.
 *
 * @example
 * ```ts
 * import { PgClient } from "@effect/sql-pg"
 * import { Effect, Redacted } from "effect"
 * import { FenceSql } from "effect-etcdseq/sql"
 *
 * const ready = FenceSql.setup.pipe(
 *   Effect.provide(PgClient.layer({ url: Redacted.make("postgres://app@db/app") }))
 * )
 * ```
 * @since 0.1.0
 * @category combinators
 */
export const setup: Effect.Effect<void, SqlError, SqlClient.SqlClient> = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const statement = yield* dialectOf(sql)
  // PostgreSQL's CREATE TABLE IF NOT EXISTS is not safe against itself: of two at once, the later fails on the catalog's
  // unique index once the first commits. Tried again, it finds the table.
  yield* sql.unsafe(statements[statement].setup).raw.pipe(Effect.retry({ times: 3 }))
}).pipe(Effect.withSpan("EtcdSeq.FenceSql.setup"))

/**
 * Records `fence` as the highest of `resource` and fails with `StaleFence` when a higher one is recorded. Run it
 * inside the transaction of the writes it guards (`sql.withTransaction`), anywhere before its commit: its row lock,
 * held to the end of the transaction, orders the transactions of two holders of `resource`, and a `StaleFence` rolls
 * the whole transaction back. Checked last, the lock is held the shortest time.
 *
 * Under READ COMMITTED (PostgreSQL's default) a check waits for the other holder's transaction, then reads its
 * fence; under REPEATABLE READ or SERIALIZABLE it fails with a serialization error (an `SqlError`) instead, and the
 * transaction may be tried again.
 *
 * Errors: `StaleFence` (the transaction must roll back: it does when the error leaves `withTransaction`), `SqlError`
 * as any statement. Outside a transaction it dies: it would guard nothing.
 *
 * @example
 * ```ts
 * import * as SqlClient from "@effect/sql/SqlClient"
 * import { Effect } from "effect"
 * import type { Shard } from "effect-etcdseq"
 * import { FenceSql } from "effect-etcdseq/sql"
 *
 * // One shard's write: both rows or none, and none once a newer owner of the shard has written.
 * const record = (shard: Shard, offset: number) =>
 *   Effect.gen(function*() {
 *     const sql = yield* SqlClient.SqlClient
 *     yield* sql.withTransaction(Effect.gen(function*() {
 *       yield* sql`UPDATE offsets SET value = ${offset} WHERE shard = ${shard.id}`
 *       yield* FenceSql.check(`offsets/${shard.id}`, shard.fence)
 *     }))
 *   })
 * ```
 * @since 0.1.0
 * @category combinators
 */
export const check = (
  resource: string,
  fence: number
): Effect.Effect<void, StaleFence | SqlError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    if (typeof resource !== "string") {
      return yield* Effect.die(new TypeError("FenceSql.check: resource must be a string"))
    }
    if (!Number.isSafeInteger(fence) || fence < 1) {
      return yield* Effect.die(new RangeError(`FenceSql.check: fence must be a positive integer, got ${fence}`))
    }
    if (Option.isNone(yield* Effect.serviceOption(SqlClient.TransactionConnection))) {
      return yield* Effect.dieMessage(
        "FenceSql.check runs inside sql.withTransaction, beside the writes it guards: alone it would guard nothing"
      )
    }
    const sql = yield* SqlClient.SqlClient
    const statement = yield* dialectOf(sql)
    const rows = yield* sql.unsafe(statements[statement].check, [resource, fence])
    const current = yield* Schema.decodeUnknown(Returned)(rows).pipe(
      Effect.map(([row]) => row.fence),
      Effect.mapError((cause) =>
        new SqlError({ cause, message: `FenceSql.check: ${table} answered ${JSON.stringify(rows)}, not one fence` })
      )
    )
    if (current > fence) {
      yield* Metric.increment(Metric.tagged(Metrics.staleFences, "store", "sql"))
      return yield* new StaleFence({ resource, fence, current })
    }
  }).pipe(Effect.withSpan("EtcdSeq.FenceSql.check", { attributes: { resource, fence } }))

// internal

const dialectOf = (sql: SqlClient.SqlClient): Effect.Effect<"pg" | "sqlite", SqlError> =>
  sql.onDialectOrElse({
    pg: () => Effect.succeed("pg" as const),
    sqlite: () => Effect.succeed("sqlite" as const),
    orElse: () =>
      Effect.fail(
        new SqlError({ message: "FenceSql supports PostgreSQL and SQLite; this client speaks another dialect" })
      )
  })

/**
 * The fence column as drivers return it: a JavaScript number (SQLite), a decimal string (PostgreSQL's BIGINT through
 * `pg`), or a bigint (SQLite with safe integers).
 */
const FenceColumn = Schema.Union(
  Schema.Int,
  Schema.NumberFromString.pipe(Schema.int()),
  Schema.transform(Schema.BigIntFromSelf, Schema.Int, {
    strict: true,
    decode: (n) => Number(n),
    encode: (n) => BigInt(n)
  })
)

const Returned = Schema.Tuple(Schema.Struct({ fence: FenceColumn }))
