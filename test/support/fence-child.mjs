/* global process, setTimeout */
// A program run by `etcdseq run` in the fence tests, in plain JavaScript with the `pg` driver and without this library:
// it guards its writes with the SQL statement the guide gives (`FENCE_SQL`, read from docs/exclusive-work.md by the
// test), as a Python or Go child would. Its shares are the shards s of `CHILD_SHARDS` with s % ETCDSEQ_COUNT ===
// ETCDSEQ_INDEX; each write is one transaction: the check first, then a row of fence_rows, held open
// `CHILD_TXN_MILLIS`, then the commit; a check that returns a higher fence rolls back.
// stdout, one JSON line each: its start (with the environment it was given), then every write once it ended:
//   {"event":"write","writer":"a-1234","resource":"shard-2","fence":12,"outcome":"committed"|"stale"|"failed",...}
// SIGTERM ends it after the write in progress.
import pg from "pg"

const mono = () => Number(process.hrtime.bigint()) / 1e6
const env = process.env
const fence = Number(env.ETCDSEQ_FENCE)
const index = Number(env.ETCDSEQ_INDEX)
const count = Number(env.ETCDSEQ_COUNT)
const writer = `${env.CHILD_NAME ?? "child"}-${process.pid}`
const shares = Array.from({ length: Number(env.CHILD_SHARDS ?? 4) }, (_, s) => s).filter((s) => s % count === index)
const line = (event, more) =>
  process.stdout.write(JSON.stringify({ event, writer, index, count, fence, shares, mono: mono(), ...more }) + "\n")

let stopping = false
process.on("SIGTERM", () => {
  stopping = true
})
line("start", { lockKey: env.ETCDSEQ_LOCK_KEY ?? null })

const client = new pg.Client({ connectionString: env.PG_URL })
await client.connect()
let seq = 0
while (!stopping) {
  for (const shard of shares) {
    const resource = `shard-${shard}`
    const began = mono()
    seq++
    try {
      await client.query("BEGIN")
      const { rows } = await client.query(env.FENCE_SQL, [resource, fence])
      const current = Number(rows[0].fence)
      if (current > fence) {
        await client.query("ROLLBACK")
        line("write", { resource, seq, outcome: "stale", current, began })
        continue
      }
      await client.query("INSERT INTO fence_rows (resource, fence, writer, seq) VALUES ($1, $2, $3, $4)", [
        resource,
        fence,
        writer,
        seq
      ])
      await new Promise((resolve) => setTimeout(resolve, Number(env.CHILD_TXN_MILLIS ?? 30)))
      await client.query("COMMIT")
      line("write", { resource, seq, outcome: "committed", began })
    } catch (error) {
      await client.query("ROLLBACK").catch(() => {})
      line("write", { resource, seq, outcome: "failed", message: String(error), began })
    }
  }
}
await client.end()
process.exit(0)
