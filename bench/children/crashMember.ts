/**
 * One member in a process of its own, for the crash scenario: the benchmark starts it, waits for `ready`, then
 * SIGKILLs it, so its lease is never revoked and expires after its TTL, exactly as when a real member crashes.
 *
 *   node <loader flags> bench/children/crashMember.ts <library|baseline> <endpoint> <group> <ttl seconds>
 *
 * It also ends by itself when its parent goes away (its stdin closes) or after two minutes.
 */
import { NodeRuntime } from "@effect/platform-node"
import { Duration, Effect } from "effect"
import { Etcd, EtcdSeq } from "../../src/index.js"
import * as Baseline from "../drivers/baseline.js"
import { BenchError } from "../measures/etcdMetrics.js"
import { rawClient } from "../measures/probe.js"

const [impl = "", endpoint = "", group = "", ttlText = ""] = process.argv.slice(2)
const ttlSeconds = Number(ttlText)

const join = impl === "baseline"
  ? Effect.flatMap(
    rawClient([endpoint]),
    (client) => Baseline.register(client, Baseline.membersPrefix(group), ttlSeconds, Duration.seconds(10))
  )
  : Effect.flatMap(
    Etcd.make({ endpoints: [endpoint] }),
    (client) =>
      EtcdSeq.make({ key: group, ttl: Duration.seconds(ttlSeconds) }).pipe(Effect.provideService(Etcd, client))
  ).pipe(Effect.mapError((cause) => new BenchError({ message: "the crash member could not join", cause })))

const parentGone = Effect.async<void>((resume) => {
  const done = () => resume(Effect.void)
  process.stdin.once("end", done)
  process.stdin.once("close", done)
  process.stdin.resume()
  return Effect.sync(() => {
    process.stdin.off("end", done)
    process.stdin.off("close", done)
    process.stdin.pause()
  })
})

const program = Effect.gen(function*() {
  if (!["library", "baseline"].includes(impl) || endpoint === "" || group === "" || !(ttlSeconds >= 1)) {
    return yield* new BenchError({ message: `usage: crashMember.ts <library|baseline> <endpoint> <group> <ttl>` })
  }
  yield* join
  yield* Effect.sync(() => process.stdout.write("ready\n"))
  yield* parentGone.pipe(Effect.timeout(Duration.minutes(2)), Effect.ignore)
}).pipe(Effect.scoped)

NodeRuntime.runMain(program)
