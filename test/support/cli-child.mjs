/* global process, setTimeout, setInterval */
// A program run by `etcdseq run` in the command-line tests: it prints its assignment from the environment as one
// JSON line when it starts and when SIGTERM stops it (`mono`: CLOCK_MONOTONIC in ms, comparable across processes).
// `CHILD_EXIT=<code>` makes it exit by itself with that code; `CHILD_STOP_MILLIS` is how long it takes to stop.
const mono = () => Number(process.hrtime.bigint()) / 1e6
const line = (event) =>
  process.stdout.write(
    JSON.stringify({
      event,
      pid: process.pid,
      group: process.env.ETCDSEQ_GROUP,
      index: Number(process.env.ETCDSEQ_INDEX),
      count: Number(process.env.ETCDSEQ_COUNT),
      fence: Number(process.env.ETCDSEQ_FENCE),
      revision: Number(process.env.ETCDSEQ_REVISION),
      mono: mono()
    }) + "\n"
  )
line("start")
if (process.env.CHILD_EXIT !== undefined) process.exit(Number(process.env.CHILD_EXIT))
process.on("SIGTERM", () => {
  setTimeout(() => {
    line("stop")
    process.exit(0)
  }, Number(process.env.CHILD_STOP_MILLIS ?? 0))
})
setInterval(() => {}, 1_000)
