/**
 * One scenario alone, to profile it: a join storm of N library members on one client, then single leaves and joins.
 *
 *   node --cpu-prof --cpu-prof-dir=bench/results/profiles --import tsx bench/entry/profile.ts --size=300 --rounds=20
 *
 * Prints the storm's time and each change's time; `--impl=baseline` profiles the baseline instead.
 */
import { NodeRuntime } from "@effect/platform-node"
import { Console, Duration, Effect, Fiber, Metric } from "effect"
import { startEtcd } from "../../test/support/etcd.js"
import * as Baseline from "../drivers/baseline.js"
import * as Library from "../drivers/library.js"
import { BenchError } from "../measures/etcdMetrics.js"
import { nowMs } from "../measures/runtime.js"

const arg = (name: string, fallback: string): string =>
  process.argv.slice(2).find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3) ?? fallback

const size = Number(arg("size", "300"))
const rounds = Number(arg("rounds", "10"))
const impl = arg("impl", "library")
const clients = Number(arg("clients", "1"))
const within = Duration.seconds(Number(arg("within", "60")))

const main = Effect.gen(function*() {
  const node = yield* startEtcd({ name: "profile" })
  const group = `profile/${impl}-${size}`
  const driver = impl === "baseline"
    ? yield* Baseline.make({
      endpoints: [node.clientUrl],
      group,
      ttlSeconds: 10,
      requestWithin: Duration.seconds(30),
      closeWithin: Duration.seconds(30)
    })
    : yield* Library.make({
      endpoints: [node.clientUrl],
      group,
      ttl: Duration.seconds(10),
      clients,
      closeWithin: Duration.seconds(30),
      prefillConcurrency: 10
    })
  const slots = Array.from({ length: size }, (_, i) => i)
  const goal = yield* driver.tracker.expect(slots, (_, info) => info.count === size)
  const handles = yield* Effect.fork(driver.joinAll(slots))
  // Every second: members holding an Info, members at the full count, and how late a 0 ms timer fires (event-loop lag).
  const progress = Effect.gen(function*() {
    const started = yield* nowMs
    for (let second = 1; second <= Duration.toSeconds(within); second++) {
      const before = yield* nowMs
      yield* Effect.sleep(Duration.seconds(1))
      const lag = (yield* nowMs) - before - 1000
      const infos = yield* driver.tracker.infos
      const full = [...infos.values()].filter((info) => info.count === size).length
      const counters = yield* driver.counters
      const snapshot = yield* Metric.snapshot
      const changes = snapshot.find((m) => m.metricKey.name === "etcdseq_membership_changes")
      const changeCount = changes === undefined ? 0 : (changes.metricState as unknown as { count: number }).count
      yield* Console.log(
        `  +${
          (((yield* nowMs) - started) / 1000).toFixed(0)
        } s: ${infos.size} members with an Info, ${full} at count ${size}; ${counters.watchResponses} watch responses; timer lag ${
          lag.toFixed(0)
        } ms; ${changeCount} member Info changes`
      )
    }
  })
  const progressFiber = yield* Effect.fork(progress)
  const storm = yield* goal.await(within)
  yield* Fiber.interrupt(progressFiber)
  yield* Console.log(
    `storm of ${size}: ${storm.complete ? "" : "NOT DONE, "}${(storm.end - storm.start).toFixed(1)} ms`
  )
  if (!storm.complete) {
    const joins = yield* handles.poll
    if (joins._tag === "Some" && joins.value._tag === "Success") {
      yield* Console.log(`failed joins: ${joins.value.value.failures.length}`, joins.value.value.failures.slice(0, 3))
    }
    return yield* new BenchError({ message: `storm not done: ${storm.stragglers.join(", ")}` })
  }
  const members = new Map((yield* Fiber.join(handles)).handles.map((h) => [h.slot, h]))
  yield* Effect.sleep(Duration.millis(500))
  for (let round = 0; round < rounds; round++) {
    const slot = size + round
    const joinGoal = yield* driver.tracker.expect([...members.keys(), slot], (_, info) => info.count === size + 1)
    const joined = yield* driver.join(slot)
    members.set(slot, joined)
    const join = yield* joinGoal.await(within)
    yield* Effect.sleep(Duration.millis(200))
    const infos = yield* driver.tracker.infos
    const oldest = [...members.keys()].find((s) => infos.get(s)?.index === 0) ?? [...members.keys()][0]!
    const leaver = members.get(oldest)!
    members.delete(oldest)
    const leaveGoal = yield* driver.tracker.expect([...members.keys()], (_, info) => info.count === size)
    const leaveStart = yield* nowMs
    yield* Effect.fork(leaver.leave)
    const leave = yield* leaveGoal.await(within)
    yield* Console.log(
      `round ${round}: join ${(join.end - join.start).toFixed(1)} ms, leave ${(leave.end - leaveStart).toFixed(1)} ms`
    )
    yield* Effect.sleep(Duration.millis(200))
  }
  yield* driver.closeAll
}).pipe(Effect.scoped)

NodeRuntime.runMain(main)
