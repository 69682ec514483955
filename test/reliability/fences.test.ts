/**
 * The proof that a store's fence check holds where no lease can: a real etcd, a real PostgreSQL (test/support/
 * postgres.ts), two members in processes of their own (test/support/fence-member.ts) running `runShards` and writing
 * guarded rows in transactions held open 40 ms. One member is SIGSTOPped past its TTL while mid-transaction, its
 * successor takes its shards and writes, then it gets SIGCONT and its open transactions run to their end.
 *
 * Per resource (a shard), the fences of the committed rows in commit order (PostgreSQL's commit timestamps, etcd's
 * revisions) never decrease, and the paused member's late writes were refused with StaleFence (or committed before
 * any newer one). With the check replaced by a no-op, the same run commits the paused member's stale rows after its
 * successor's: the last two tests show it, so the check is what the first two measure.
 */
import { PgClient } from "@effect/sql-pg"
import * as SqlClient from "@effect/sql/SqlClient"
import { describe, expect, it } from "@effect/vitest"
import { Context, Duration, Effect, Layer, Option, Redacted } from "effect"
import { fileURLToPath } from "node:url"
import { blockUnder } from "../../scripts/codeBlocks.js"
import { FenceSql } from "../../src/sql.js"
import { type Cli, cli, eventually as until } from "../support/cli.js"
import { startEtcd } from "../support/etcd.js"
import { uniqueGroup } from "../support/members.js"
import { startPostgres } from "../support/postgres.js"
import { type MemberEvent, type MemberProcess, pidIsGone, spawnMember } from "../support/processes.js"
import { admin, expectPidsGone } from "../support/reliability.js"

const fixture = fileURLToPath(new URL("../support/fence-member.ts", import.meta.url))
const fenceChild = fileURLToPath(new URL("../support/fence-child.mjs", import.meta.url))
const guide = fileURLToPath(new URL("../../docs/exclusive-work.md", import.meta.url))
const ttl = Duration.seconds(3)
const shards = 12
const txnMillis = 40

type Write = Extract<MemberEvent, { event: "write" }>

/** A line of `fence-child.mjs`: its start, or one of its writes. */
interface ChildLine {
  readonly event: "start" | "write"
  readonly writer: string
  readonly index: number
  readonly count: number
  readonly fence: number
  readonly mono: number
  readonly lockKey?: string | null
  readonly shares: ReadonlyArray<number>
}

interface ChildWrite extends ChildLine {
  readonly event: "write"
  readonly resource: string
  readonly outcome: "committed" | "stale" | "failed"
  readonly began: number
}

/** A committed row, as the store holds it, in commit order. */
export interface Row {
  readonly resource: string
  readonly fence: number
  readonly writer: string
}

const mono = () => Number(process.hrtime.bigint()) / 1e6

const writesOf = (events: ReadonlyArray<MemberEvent>): ReadonlyArray<Write> =>
  events.filter((e): e is Write => e.event === "write")

/** Rows, in commit order, whose fence is below one committed before them for the same resource. */
export const regressions = (rows: ReadonlyArray<Row>): Array<string> => {
  const highest = new Map<string, Row>()
  const found: Array<string> = []
  for (const row of rows) {
    const before = highest.get(row.resource)
    if (before !== undefined && row.fence < before.fence) {
      found.push(
        `${row.resource}: ${row.writer}'s fence ${row.fence} committed after ${before.writer}'s ${before.fence}`
      )
    }
    if (before === undefined || row.fence > before.fence) highest.set(row.resource, row)
  }
  return found
}

/** Polls `check` every 50 ms until it holds; dies with `what` after `within`. */
const eventually = (check: Effect.Effect<boolean>, what: Effect.Effect<string>, within: Duration.DurationInput) =>
  Effect.gen(function*() {
    const deadline = Date.now() + Duration.toMillis(Duration.decode(within))
    while (!(yield* check)) {
      if (Date.now() > deadline) {
        return yield* Effect.dieMessage(`not within ${Duration.format(within)}: ${yield* what}`)
      }
      yield* Effect.sleep("50 millis")
    }
  })

/**
 * The scenario, on one store, with the check or without: members a then b, a paused past its TTL mid-transaction,
 * b takes a's shards and writes, a resumes. Returns the committed rows in commit order, a's writes, and when a was
 * paused and resumed (monotonic ms).
 */
const pauseMidTransaction = (store: "pg" | "etcd", asked: "real" | "noop") =>
  Effect.gen(function*() {
    // FENCES_CHECK=noop runs every test without the check: the first two then fail, as the no-op tests show.
    const check = process.env["FENCES_CHECK"] === "noop" ? "noop" : asked
    const pids: Array<number | undefined> = []
    const outcome = yield* Effect.scoped(Effect.gen(function*() {
      const [etcd, pg] = yield* Effect.all([
        startEtcd({ name: `fences-${store}` }),
        store === "pg" ? Effect.map(startPostgres, Option.some) : Effect.succeed(Option.none())
      ], { concurrency: "unbounded" })
      pids.push(etcd.pid, ...Option.toArray(Option.map(pg, (p) => p.pid)))
      const group = uniqueGroup(`fences-${store}`)
      const rowsPrefix = `${group}-rows`
      const sql = Option.isSome(pg)
        ? Option.some(Context.get(
          yield* Layer.build(PgClient.layer({ url: Redacted.make(pg.value.url) })),
          SqlClient.SqlClient
        ))
        : Option.none()
      if (Option.isSome(sql)) {
        yield* sql.value`CREATE TABLE fence_rows (resource TEXT, fence BIGINT, writer TEXT, seq INT)`
        yield* FenceSql.setup.pipe(Effect.provideService(SqlClient.SqlClient, sql.value))
      }
      const spawn = (name: string) =>
        spawnMember({
          endpoints: [etcd.clientUrl],
          group,
          ttl,
          fixture: {
            path: fixture,
            args: [
              "--name",
              name,
              "--store",
              store,
              "--check",
              check,
              "--txn-millis",
              String(txnMillis),
              "--shards",
              String(shards),
              "--rows",
              rowsPrefix,
              ...Option.match(pg, { onNone: () => [], onSome: (p) => ["--pg-url", p.url] })
            ]
          }
        }).pipe(Effect.tap((m) => Effect.sync(() => pids.push(m.pid))))
      const committed = (m: MemberProcess) =>
        Effect.map(m.events, (events) => writesOf(events).filter((w) => w.outcome === "committed"))

      // --- a alone, then b beside it: both writing ---
      const a = yield* spawn("a")
      yield* eventually(
        Effect.map(committed(a), (ws) => new Set(ws.map((w) => w.shard)).size === shards),
        Effect.succeed("a writes every shard"),
        "20 seconds"
      )
      const b = yield* spawn("b")
      const since = mono()
      yield* eventually(
        Effect.map(committed(b), (ws) => ws.some((w) => w.began > since)),
        Effect.map(b.events, (e) => `b writes: ${JSON.stringify(e.slice(-5))}; stderr ${b.stderr()}`),
        "20 seconds"
      )
      yield* Effect.sleep("1 second")

      // --- a paused mid-transaction: its shards, with the fence it writes them under ---
      const aShards = new Map<number, number>()
      for (const w of yield* committed(a)) aShards.set(w.shard, w.fence)
      const lastOfA = (yield* committed(a)).filter((w) => w.mono > mono() - 500).map((w) => w.shard)
      for (const shard of [...aShards.keys()]) if (!lastOfA.includes(shard)) aShards.delete(shard)
      expect(aShards.size, "a writes shards of its own beside b").toBeGreaterThan(0)
      const pausedAt = mono()
      process.kill(a.pid, "SIGSTOP")

      // --- b takes a's shards and writes them under higher fences, while a is stopped ---
      // Checked last (even shards), a's open transactions hold no lock and b writes at once, unless the pause fell
      // between a's check and its commit: then a holds the row lock and b's write waits for a (stuck). Checked first
      // (odd shards), a's open transactions hold the resource's row lock and b waits for them to end; without the
      // check, it does not wait.
      const expected = [...aShards.keys()].filter((s) => store === "etcd" || check === "noop" || s % 2 === 0)
      const progress = Effect.map(b.events, (events) => {
        const ended = new Set(writesOf(events).map((w) => w.seq))
        const writes = writesOf(events).filter((w) => w.outcome === "committed")
        const taken = expected.filter((shard) =>
          writes.some((w) => w.shard === shard && w.fence > aShards.get(shard)! && w.began > pausedAt)
        )
        const stuck = store === "pg" && check === "real"
          ? expected.filter((shard) =>
            !taken.includes(shard) && events.some((e) =>
              e.event === "begin" && e.shard === shard && e.fence > aShards.get(shard)! && e.began > pausedAt &&
              e.began < mono() - 1000 && !ended.has(e.seq)
            )
          )
          : []
        return { taken, stuck }
      })
      yield* eventually(
        Effect.map(progress, ({ stuck, taken }) => taken.length + stuck.length === expected.length),
        Effect.map(progress, ({ stuck, taken }) => `b takes a's shards ${expected}: taken ${taken}, stuck ${stuck}`),
        "20 seconds"
      )
      const { stuck } = yield* progress
      yield* Effect.sleep("500 millis")
      const resumedAt = mono()
      process.kill(a.pid, "SIGCONT")

      // --- a learns it lost its lease, stops, joins again; then both leave ---
      yield* a.waitFor((info) => info.index < 0, "10 seconds", "Info.invalid after the pause")
      yield* Effect.sleep("1 second")
      yield* Effect.all([a.leave, b.leave])
      for (const m of [a, b]) {
        expect(Option.map(yield* m.exit("15 seconds"), (e) => e.code), `member ${m.pid} ends by itself`).toEqual(
          Option.some(0)
        )
      }

      // --- What the store committed, in commit order ---
      const rows: ReadonlyArray<Row> = Option.isSome(sql)
        ? (yield* sql.value<{ resource: string; fence: string; writer: string }>`
            SELECT resource, fence, writer FROM fence_rows
            ORDER BY pg_xact_commit_timestamp(xmin), xmin::text::bigint`).map((r) => ({
          resource: r.resource,
          fence: Number(r.fence),
          writer: r.writer
        }))
        : yield* Effect.gen(function*() {
          const client = yield* admin([etcd.clientUrl])
          const found = yield* Effect.promise(() => client.getAll().prefix(`${rowsPrefix}/`).exec())
          return found.kvs.map((kv) => ({
            revision: Number(kv.create_revision),
            shard: kv.key.toString().slice(rowsPrefix.length + 1).split("/")[0]!,
            ...(JSON.parse(kv.value.toString()) as { fence: number; writer: string })
          })).sort((x, y) => x.revision - y.revision).map((r) => ({
            resource: `shard-${r.shard}`,
            fence: r.fence,
            writer: r.writer
          }))
        })
      return { rows, a: writesOf(yield* a.events), pausedAt, resumedAt, aShards, stuck }
    }))
    yield* expectPidsGone(pids)
    const late = outcome.a.filter((w) => w.began < outcome.pausedAt && w.mono > outcome.resumedAt)
    yield* Effect.log(
      `${store}, check ${check}: ${outcome.rows.length} rows committed, ${
        regressions(outcome.rows).slice(0, 2).join("; ") || "fences never down"
      }; a's writes open across the pause: ${
        late.map((w) =>
          `${w.resource}@${w.fence} ${w.outcome} ${Math.round(w.mono - outcome.resumedAt)} ms after SIGCONT${
            w.message === undefined ? "" : ` (${w.message})`
          }`
        ).join(", ")
      }`
    )
    return { ...outcome, late }
  })

describe("fences a store checks, under a member paused past its TTL mid-transaction", () => {
  it.live(
    "PostgreSQL with FenceSql.check: fences never go down in commit order; the paused member's late writes were refused",
    () =>
      Effect.gen(function*() {
        const { aShards, late, rows, stuck } = yield* pauseMidTransaction("pg", "real")
        expect(regressions(rows)).toEqual([])
        // The pause landed mid-transaction, and those transactions ran on when it resumed.
        expect(late.length).toBeGreaterThan(0)
        // Refused (checked after the successor wrote), or committed before the successor's rows (the row lock of a
        // check made before the pause made it wait): the regressions above would show one committed after.
        expect(late.filter((w) => w.outcome !== "stale" && w.outcome !== "committed")).toEqual([])
        // Refused somewhere, unless the pause fell between check and commit on every even shard of a (all stuck).
        if ([...aShards.keys()].some((s) => s % 2 === 0 && !stuck.includes(s))) {
          expect(late.filter((w) => w.outcome === "stale").length).toBeGreaterThan(0)
        }
      }),
    120_000
  )

  it.live(
    "etcd with FenceEtcd.ofShard: its writes fail once its claim is gone; fences never go down in commit order",
    () =>
      Effect.gen(function*() {
        const { late, rows } = yield* pauseMidTransaction("etcd", "real")
        expect(regressions(rows)).toEqual([])
        expect(late.length).toBeGreaterThan(0)
        // Its lease expired during the pause, and its claims with it: every write it sent after was refused. One sent
        // just before the pause landed then, before the successor could claim the shard.
        expect(late.filter((w) => w.outcome !== "stale" && w.outcome !== "committed")).toEqual([])
        expect(late.filter((w) => w.outcome === "stale").length).toBeGreaterThan(0)
      }),
    120_000
  )

  // The same runs with the check replaced by a no-op: what the two tests above would see without it.
  for (const store of ["pg", "etcd"] as const) {
    it.live(
      `${store} with the check a no-op: the paused member's stale rows commit after its successor's`,
      () =>
        Effect.gen(function*() {
          const { late, rows } = yield* pauseMidTransaction(store, "noop")
          expect(late.length).toBeGreaterThan(0)
          expect(regressions(rows).length).toBeGreaterThan(0)
        }),
      120_000
    )
  }
})

describe("etcdseq run, a wrapper paused past its TTL while its child writes on", () => {
  it.live(
    "the child's writes through the guide's SQL statement are refused once its successor's child wrote",
    () =>
      Effect.gen(function*() {
        const pids: Array<number | undefined> = []
        const { aLines, bLines, rows } = yield* Effect.scoped(Effect.gen(function*() {
          const [etcd, pg] = yield* Effect.all([startEtcd({ name: "fences-cli" }), startPostgres], {
            concurrency: "unbounded"
          })
          pids.push(etcd.pid, pg.pid)
          // The guide's statements, as printed: the table, and the check a child in any language runs.
          const table = blockUnder(guide, "The table", "sql").code.trim()
          const documented = blockUnder(guide, "PostgreSQL", "sql").code.trim()
          expect(documented).toBe(FenceSql.statements.pg.check)
          // FENCES_CHECK=noop: a statement that returns the child's own fence, whatever is recorded (the test fails).
          const statement = process.env["FENCES_CHECK"] === "noop"
            ? "SELECT $2::bigint AS fence WHERE $1::text IS NOT NULL"
            : documented
          expect(table).toBe(FenceSql.statements.pg.setup)
          const sql = Context.get(
            yield* Layer.build(PgClient.layer({ url: Redacted.make(pg.url) })),
            SqlClient.SqlClient
          )
          yield* sql.unsafe(table)
          yield* sql`CREATE TABLE fence_rows (resource TEXT, fence BIGINT, writer TEXT, seq INT)`

          const group = uniqueGroup("fences-cli")
          const wrapper = (name: string) =>
            cli([
              "run",
              "--endpoints",
              etcd.clientUrl,
              "--group",
              group,
              "--ttl",
              "3s",
              "--exclusive",
              "index",
              "--grace",
              "1s",
              "--",
              process.execPath,
              fenceChild
            ], { PG_URL: pg.url, FENCE_SQL: statement, CHILD_NAME: name, CHILD_SHARDS: "4" }).pipe(
              Effect.tap((w) => Effect.sync(() => pids.push(w.pid)))
            )
          const linesOf = (w: Cli) => w.lines().flatMap((l) => l.startsWith("{") ? [JSON.parse(l) as ChildLine] : [])
          const writes = (w: Cli) => linesOf(w).filter((l): l is ChildWrite => l.event === "write")

          // --- a's child writes as 0/1, then as 0/2 once b's child writes as 1/2 ---
          const a = yield* wrapper("a")
          yield* until(() => writes(a).some((w) => w.outcome === "committed"), "a's child writes", 30_000)
          const b = yield* wrapper("b")
          yield* until(
            () =>
              writes(b).some((w) => w.outcome === "committed" && w.count === 2) &&
              writes(a).some((w) => w.outcome === "committed" && w.count === 2),
            `both children write as 0/2 and 1/2; a: ${a.stderr()}; b: ${b.stderr()}`,
            30_000
          )
          const childOfA = writes(a).filter((w) => w.count === 2).at(-1)!
          // The environment of an --exclusive index child: its lock key, created at its fence.
          const start = linesOf(a).find((l) => l.event === "start" && l.writer === childOfA.writer)!
          const client = yield* admin([etcd.clientUrl])
          const lock = yield* Effect.promise(() => client.get(start.lockKey!).exec())
          expect([start.lockKey!.startsWith(`${group}/locks/${childOfA.index}/`), Number(lock.kvs[0]?.create_revision)])
            .toEqual([true, childOfA.fence])

          // --- a's wrapper paused: its child writes on, under its old fence ---
          process.kill(a.pid, "SIGSTOP")
          const pausedAt = mono()
          // b's wrapper takes index 0 once a's lease expired; its new child writes a's shards under a higher fence, and
          // a's child is refused from then on.
          yield* until(
            () =>
              childOfA.shares.every((shard) =>
                writes(b).some((w) =>
                  w.resource === `shard-${shard}` && w.outcome === "committed" && w.fence > childOfA.fence &&
                  w.began > pausedAt
                )
              ),
            `b's new child writes a's shares ${childOfA.shares}; b: ${b.stderr()}`,
            30_000
          )
          yield* Effect.sleep("500 millis")
          process.kill(a.pid, "SIGCONT")
          const oldChild = Number(childOfA.writer.split("-").at(-1))
          yield* until(() => pidIsGone(oldChild), "a's old child stopped once its wrapper resumed", 15_000)

          yield* a.signal("SIGTERM")
          yield* b.signal("SIGTERM")
          expect([yield* a.exit(), yield* b.exit()]).toEqual([0, 0])
          const rows = (yield* sql<{ resource: string; fence: string; writer: string }>`
          SELECT resource, fence, writer FROM fence_rows
          ORDER BY pg_xact_commit_timestamp(xmin), xmin::text::bigint`).map((r) => ({
            resource: r.resource,
            fence: Number(r.fence),
            writer: r.writer
          }))
          return { aLines: writes(a), bLines: writes(b), rows }
        }))
        yield* expectPidsGone(pids)
        expect(regressions(rows)).toEqual([])
        // The successor's child wrote a's shares under higher fences while a's child was still running, and a's
        // child was refused from then on.
        expect(bLines.some((w) => w.count === 1 && w.outcome === "committed")).toBe(true)
        expect(aLines.filter((w) => w.outcome === "stale").length).toBeGreaterThan(0)
        expect(aLines.filter((w) => w.outcome === "failed")).toEqual([])
      }),
    120_000
  )
})
