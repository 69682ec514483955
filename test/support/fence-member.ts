/**
 * A member that writes guarded rows, in a process of its own: `runShards`, and per owned shard a loop of writes to a
 * store, each checked against the shard's fence. The fence tests SIGSTOP it mid-transaction past its TTL.
 *
 *   node --import tsx test/support/fence-member.ts --name a --store pg|etcd --check real|noop --txn-millis 40
 *     [--pg-url postgres://...] [--rows <etcd prefix>] --endpoints http://... --group g --ttl "3000 millis" --shards 12
 *
 * - `--store pg`: each write is one transaction of `@effect/sql-pg`: a row of `fence_rows (resource, fence, writer,
 *   seq)` and `FenceSql.check(resource, fence)`, held open about `--txn-millis` in between. Odd shards check first (the
 *   row lock held for the whole transaction), even shards last (just before the commit).
 * - `--store etcd`: each write waits about `--txn-millis`, then puts `<rows>/<shard>/<writer>-<seq>` = `{fence, writer}` in
 *   one transaction with the shard's claim key (`FenceEtcd.ofShard`).
 * - `--check noop`: the same writes without the check (a plain put, a transaction without `FenceSql.check`): what the
 *   tests show fails.
 *
 * A write, once begun, runs to its end (uninterruptible): as a worker finishing its transaction before it stops, and
 * as a process paused mid-transaction does when it resumes, whatever its membership says meanwhile.
 *
 * stdout: the lines of `member-process.ts` (`info`, `error`, `done`), a line `begin` as each write begins, and one line
 * per write once it ended:
 *   {"event":"write","member":"a","resource":"shard-3","shard":3,"fence":41,"seq":7,"outcome":"stale","began":...,"mono":...}
 * A line `leave` on stdin, or stdin closing, ends the member.
 */
import { PgClient } from "@effect/sql-pg"
import * as SqlClient from "@effect/sql/SqlClient"
import {
  Cause,
  Context,
  Deferred,
  type Duration,
  Effect,
  Exit,
  Fiber,
  Layer,
  Logger,
  LogLevel,
  Redacted,
  Stream
} from "effect"
import * as readline from "node:readline"
import { Etcd, type Etcd3Client, EtcdSeq, FenceEtcd, Info, type Shard } from "../../src/index.js"
import { FenceSql } from "../../src/sql.js"

const argument = (name: string): string | undefined => {
  const at = process.argv.indexOf(`--${name}`)
  return at >= 0 ? process.argv[at + 1] : undefined
}
const print = (line: Record<string, unknown>) => process.stdout.write(JSON.stringify(line) + "\n")
const mono = () => Number(process.hrtime.bigint()) / 1e6

const name = argument("name") ?? "member"
const store = argument("store") === "etcd" ? "etcd" : "pg"
const check = argument("check") === "noop" ? "noop" : "real"
const txnMillis = Number(argument("txn-millis") ?? 40)
const endpoints = (argument("endpoints") ?? "http://127.0.0.1:2379").split(",")
const group = argument("group") ?? "test/fence-member"
const ttl = (argument("ttl") ?? "3 seconds") as Duration.DurationInput
const shards = Number(argument("shards") ?? 12)
const rows = argument("rows") ?? `${group}-rows`

let seq = 0

/**
 * How long a transaction stays open: `--txn-millis` give or take a half, so that the shards' writes do not run in
 * step, and a pause finds most of them mid-transaction, not all at one moment of their requests.
 */
const held = () => Math.round(txnMillis * (0.5 + Math.random()))

/** How one write reaches the store: with the shard's fence, the write's resource and number. */
type Store = (shard: Shard, resource: string, n: number) => Effect.Effect<void, unknown>

const pgStore = (sql: SqlClient.SqlClient): Store => (shard, resource, n) => {
  const guard = check === "real" ? FenceSql.check(resource, shard.fence) : Effect.void
  const checkFirst = shard.id % 2 === 1
  return sql.withTransaction(Effect.gen(function*() {
    if (checkFirst) yield* guard
    yield* sql`INSERT INTO fence_rows (resource, fence, writer, seq) VALUES (${resource}, ${shard.fence}, ${name}, ${n})`
    yield* Effect.sleep(held())
    if (!checkFirst) yield* guard
  })).pipe(Effect.provideService(SqlClient.SqlClient, sql))
}

const etcdStore = (etcd: Etcd3Client): Store => (shard, _, n) =>
  Effect.gen(function*() {
    yield* Effect.sleep(held())
    const key = `${rows}/${shard.id}/${name}-${n}`
    const value = JSON.stringify({ fence: shard.fence, writer: name })
    if (check === "real") {
      yield* FenceEtcd.commit(FenceEtcd.ofShard(shard), [FenceEtcd.put(key, value)]).pipe(
        Effect.provideService(Etcd, etcd)
      )
    } else {
      yield* Effect.promise(() => etcd.client.put(key).value(value).exec())
    }
  })

/** One write of `shard`, guarded by its fence (or not, with `--check noop`), run to its end once begun. */
const write = (to: Store, shard: Shard) =>
  Effect.gen(function*() {
    const n = ++seq
    const resource = `shard-${shard.id}`
    const began = mono()
    print({ event: "begin", member: name, shard: shard.id, fence: shard.fence, seq: n, began })
    // In a fiber of its own, which the member's stop does not interrupt: the library's requests are interruptible
    // inside (a timeout races them), and a write once begun must be seen to its end, as a paused process's is.
    const exit = yield* Effect.flatMap(Effect.forkDaemon(to(shard, resource, n)), Fiber.await)
    const failure = Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined
    print({
      event: "write",
      member: name,
      resource,
      shard: shard.id,
      fence: shard.fence,
      seq: n,
      outcome: failure === undefined
        ? "committed"
        : (failure as { _tag?: string })._tag === "StaleFence"
        ? "stale"
        : "failed",
      ...(failure === undefined ? {} : { message: String(failure) }),
      began,
      mono: mono()
    })
    // A gap between writes, so that a pause lands mid-transaction more often than not.
    yield* Effect.sleep("2 millis")
  }).pipe(Effect.uninterruptible)

const program = Effect.gen(function*() {
  const leave = yield* Deferred.make<void>()
  const lines = readline.createInterface({ input: process.stdin })
  lines.on("line", (line) => line.trim() === "leave" && Deferred.unsafeDone(leave, Exit.void))
  lines.on("close", () => Deferred.unsafeDone(leave, Exit.void))

  yield* Effect.scoped(Effect.gen(function*() {
    const etcd = yield* Etcd.make({ endpoints })
    const seq = yield* EtcdSeq.make({ key: group, ttl }).pipe(Effect.provideService(Etcd, etcd))
    yield* seq.changes.pipe(
      Stream.runForEach((info) =>
        Effect.sync(() =>
          print({
            event: "info",
            index: info.index,
            count: info.count,
            revision: Info.isValid(info) ? info.revision : 0,
            at: Date.now()
          })
        )
      ),
      Effect.catchAll((e) => Effect.sync(() => print({ event: "error", tag: e._tag, message: String(e) }))),
      Effect.forkScoped
    )
    const to = store === "pg"
      ? pgStore(Context.get(
        // Built in the member's scope: the pool closes after the member's work stopped.
        yield* Layer.build(
          PgClient.layer({ url: Redacted.make(argument("pg-url") ?? ""), maxConnections: 2 * shards })
        ),
        SqlClient.SqlClient
      ))
      : etcdStore(etcd)
    yield* EtcdSeq.runShards({ shards }, (shard) => Effect.forever(write(to, shard))).pipe(
      Effect.provideService(EtcdSeq, seq),
      Effect.catchAll((e) => Effect.sync(() => print({ event: "error", tag: e._tag, message: String(e) }))),
      Effect.forkScoped
    )
    yield* Deferred.await(leave)
  })).pipe(Effect.ensuring(Effect.sync(() => {
    lines.close()
    process.stdin.destroy()
  })))
  print({ event: "done", at: Date.now() })
})

Effect.runPromiseExit(
  program.pipe(
    Effect.provide(Logger.replace(Logger.defaultLogger, Logger.withConsoleError(Logger.logfmtLogger))),
    Logger.withMinimumLogLevel(LogLevel.Info)
  )
).then((exit) => {
  if (Exit.isFailure(exit)) {
    print({ event: "error", message: String(exit.cause) })
    process.exitCode = 1
  }
})
