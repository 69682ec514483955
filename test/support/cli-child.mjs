/* global process, setTimeout, setInterval */
// A program run by `etcdseq run` in the command-line tests: it prints its assignment from the environment as one
// JSON line when it starts and when SIGTERM stops it (`mono`: CLOCK_MONOTONIC in ms, comparable across processes).
// `CHILD_EXIT=<code>` makes it exit by itself with that code; `CHILD_STOP_MILLIS` is how long it takes to stop;
// `CHILD_IGNORE_TERM=1` makes it ignore SIGTERM (a "term" line says when it came), so only SIGKILL ends it.
// The start line's `others` are the live processes of this program (on Linux, from /proc: zombies are gone) with the
// same ETCDSEQ_GROUP, and their assignments: what runs beside it the moment its work begins.
import { readdirSync, readFileSync } from "node:fs"

const mono = () => Number(process.hrtime.bigint()) / 1e6
const others = () => {
  const found = []
  let entries = []
  try {
    entries = readdirSync("/proc").filter((e) => /^[0-9]+$/.test(e) && Number(e) !== process.pid)
  } catch {
    return found
  }
  for (const entry of entries) {
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8")
      if (/^[ZX]/.test(stat.slice(stat.lastIndexOf(")") + 2))) continue
      // Only node's command line and environment are read: such a read waits on the process's memory map.
      if (stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")")) !== "node") continue
      const argv = readFileSync(`/proc/${entry}/cmdline`, "utf8").split("\0")
      if (!argv.some((a) => a.endsWith("/cli-child.mjs"))) continue
      const env = new Map(readFileSync(`/proc/${entry}/environ`, "utf8").split("\0").map((kv) => {
        const at = kv.indexOf("=")
        return [kv.slice(0, at), kv.slice(at + 1)]
      }))
      if (env.get("ETCDSEQ_GROUP") !== process.env.ETCDSEQ_GROUP) continue
      found.push({ pid: Number(entry), index: Number(env.get("ETCDSEQ_INDEX")), count: Number(env.get("ETCDSEQ_COUNT")) })
    } catch {
      // Gone since the listing, or not ours to read.
    }
  }
  return found
}
const line = (event, more = {}) =>
  process.stdout.write(
    JSON.stringify({
      event,
      pid: process.pid,
      group: process.env.ETCDSEQ_GROUP,
      index: Number(process.env.ETCDSEQ_INDEX),
      count: Number(process.env.ETCDSEQ_COUNT),
      fence: Number(process.env.ETCDSEQ_FENCE),
      revision: Number(process.env.ETCDSEQ_REVISION),
      mono: mono(),
      ...more
    }) + "\n"
  )
line("start", { others: others() })
if (process.env.CHILD_EXIT !== undefined) process.exit(Number(process.env.CHILD_EXIT))
process.on("SIGTERM", () => {
  if (process.env.CHILD_IGNORE_TERM === "1") return line("term")
  setTimeout(() => {
    line("stop")
    process.exit(0)
  }, Number(process.env.CHILD_STOP_MILLIS ?? 0))
})
setInterval(() => {}, 1_000)
