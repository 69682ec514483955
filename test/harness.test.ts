import { describe, expect, it, layer } from "@effect/vitest"
import { Cause, Duration, Effect, Exit, Option, Schedule } from "effect"
import { Etcd3 } from "etcd3"
import { existsSync, readdirSync, readFileSync } from "node:fs"
import * as path from "node:path"
import {
  EtcdEndpoints,
  etcdHealthy,
  etcdStatus,
  NO_ETCD_MESSAGE,
  resolveEndpoints,
  startCluster,
  startEtcd
} from "./support/etcd.js"

const hasEtcdBinary = (process.env["PATH"] ?? "")
  .split(path.delimiter)
  .some((dir) => dir !== "" && existsSync(path.join(dir, "etcd")))

/** Whether a Docker engine answers (testcontainers' own probe), within a bound. */
const dockerAnswers = Effect.tryPromise(async () => {
  const { getContainerRuntimeClient } = await import("testcontainers")
  await getContainerRuntimeClient()
}).pipe(Effect.timeout("10 seconds"), Effect.isSuccess)

/** pids of `etcd` processes whose parent is this test process (Linux /proc; empty elsewhere). */
const etcdChildren = (): ReadonlyArray<number> => {
  if (!existsSync("/proc/self/stat")) return []
  const pids: Array<number> = []
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8")
      const close = stat.lastIndexOf(")")
      const comm = stat.slice(stat.indexOf("(") + 1, close)
      const ppid = Number(stat.slice(close + 2).split(" ")[1])
      if (comm === "etcd" && ppid === process.pid) pids.push(Number(entry))
    } catch {
      // raced with exit
    }
  }
  return pids
}

const pidIsGone = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return false
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "ESRCH"
  }
}

/** Set env vars for the scope, restore the previous values when it closes. */
const withEnv = (vars: Record<string, string | undefined>) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const saved: Record<string, string | undefined> = {}
      for (const [key, value] of Object.entries(vars)) {
        saved[key] = process.env[key]
        if (value === undefined) delete process.env[key]
        else process.env[key] = value
      }
      return saved
    }),
    (saved) =>
      Effect.sync(() => {
        for (const [key, value] of Object.entries(saved)) {
          if (value === undefined) delete process.env[key]
          else process.env[key] = value
        }
      })
  )

const etcdClient = (endpoint: string) =>
  Effect.acquireRelease(
    Effect.sync(() => new Etcd3({ hosts: endpoint })),
    (client) => Effect.sync(() => client.close())
  )

const waitUntilHealthy = (clientUrl: string, within: Duration.DurationInput) =>
  etcdHealthy(clientUrl).pipe(
    Effect.flatMap((ok) => (ok ? Effect.void : Effect.fail("not healthy yet" as const))),
    Effect.retry(Schedule.spaced("100 millis")),
    Effect.timeout(within),
    Effect.orDieWith(() => new Error(`${clientUrl} not healthy within ${Duration.format(within)}`))
  )

describe.skipIf(!hasEtcdBinary)("etcd harness (etcd binary)", () => {
  // it.effect runs under TestClock: this also checks that the harness does its waiting on the live clock.
  it.effect(
    "a single node starts, answers health, and leaves no process or data dir behind",
    () =>
      Effect.gen(function*() {
        const seen = yield* Effect.scoped(
          Effect.gen(function*() {
            const node = yield* startEtcd({ name: "single" })
            expect(node.pid).toBeTypeOf("number")
            expect(node.clientUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/)
            expect(yield* node.isRunning).toBe(true)
            expect(yield* etcdHealthy(node.clientUrl)).toBe(true)
            const status = yield* etcdStatus(node.clientUrl)
            expect(status.leader).toBe(status.memberId)
            expect(existsSync(node.dataDir)).toBe(true)
            expect(etcdChildren()).toContain(node.pid)
            return { pid: node.pid ?? -1, dataDir: node.dataDir }
          })
        )
        expect(pidIsGone(seen.pid)).toBe(true)
        expect(existsSync(seen.dataDir)).toBe(false)
        expect(etcdChildren()).not.toContain(seen.pid)
      }),
    20_000
  )

  it.scopedLive(
    "pause makes health fail, resume makes it answer again",
    () =>
      Effect.gen(function*() {
        const node = yield* startEtcd({ name: "pausable" })
        yield* node.pause
        expect(yield* node.isRunning).toBe(true)
        expect(yield* etcdHealthy(node.clientUrl, 500)).toBe(false)
        yield* node.resume
        yield* waitUntilHealthy(node.clientUrl, "5 seconds")
      }),
    20_000
  )

  it.scopedLive(
    "kill + restart keeps the data dir, the ports and a key written before",
    () =>
      Effect.gen(function*() {
        const node = yield* startEtcd({ name: "restartable" })
        const firstPid = node.pid
        yield* Effect.scoped(
          Effect.flatMap(etcdClient(node.clientUrl), (client) =>
            Effect.promise(() => client.put("harness/restart").value("still-here")))
        )

        yield* node.kill
        expect(yield* node.isRunning).toBe(false)
        expect(node.pid).toBeUndefined()
        expect(pidIsGone(firstPid ?? -1)).toBe(true)
        expect(yield* etcdHealthy(node.clientUrl, 500)).toBe(false)
        expect(existsSync(node.dataDir)).toBe(true)

        const clientUrl = node.clientUrl
        yield* node.restart
        expect(node.clientUrl).toBe(clientUrl)
        expect(node.pid).toBeTypeOf("number")
        expect(node.pid).not.toBe(firstPid)
        expect(yield* etcdHealthy(node.clientUrl)).toBe(true)

        const value = yield* Effect.scoped(
          Effect.flatMap(etcdClient(node.clientUrl), (client) =>
            Effect.promise(() =>
              client.get("harness/restart").string()
            ))
        )
        expect(value).toBe("still-here")
      }),
    25_000
  )

  it.scopedLive(
    "a 3-node cluster has one leader, elects a new one when it dies, and takes the old one back",
    () =>
      Effect.gen(function*() {
        const cluster = yield* startCluster(3)
        expect(cluster.nodes.map((n) => n.name)).toEqual(["etcd-1", "etcd-2", "etcd-3"])
        expect(new Set(cluster.endpoints).size).toBe(3)
        for (const node of cluster.nodes) expect(yield* etcdHealthy(node.clientUrl)).toBe(true)

        const statuses = yield* Effect.forEach(cluster.nodes, (n) => etcdStatus(n.clientUrl))
        expect(statuses.filter((s) => s.leader === s.memberId)).toHaveLength(1)
        expect(new Set(statuses.map((s) => s.leader)).size).toBe(1)

        const oldLeader = yield* cluster.leader
        const leaderStatus = statuses.find((s) => s.leader === s.memberId)
        expect(statuses[cluster.nodes.indexOf(oldLeader)]).toBe(leaderStatus)

        yield* oldLeader.kill
        const [elapsed, newLeader] = yield* Effect.timed(cluster.leader)
        expect(Duration.toMillis(elapsed)).toBeLessThan(10_000)
        expect(newLeader.name).not.toBe(oldLeader.name)
        expect(yield* newLeader.isRunning).toBe(true)

        yield* oldLeader.restart
        expect(yield* etcdHealthy(oldLeader.clientUrl)).toBe(true)
        const afterRejoin = yield* cluster.leader
        expect(yield* afterRejoin.isRunning).toBe(true)
        const rejoined = yield* etcdStatus(oldLeader.clientUrl)
        expect(rejoined.leader).toBe((yield* etcdStatus(afterRejoin.clientUrl)).memberId)

        yield* cluster.stopAll
        for (const node of cluster.nodes) expect(yield* node.isRunning).toBe(false)
        yield* cluster.startAll
        for (const node of cluster.nodes) expect(yield* etcdHealthy(node.clientUrl)).toBe(true)
      }),
    40_000
  )

  // Uses the real resolution order; ETCD_ENDPOINTS may legitimately be set by the environment running the suite.
  layer(EtcdEndpoints.layer, { timeout: "30 seconds" })("EtcdEndpoints.layer", (it) => {
    it.effect(
      "provides a working etcd for the whole file",
      () =>
        Effect.gen(function*() {
          const { endpoints, source } = yield* EtcdEndpoints
          expect(endpoints.length).toBeGreaterThan(0)
          if (process.env["ETCD_ENDPOINTS"] === undefined) expect(source).toBe("binary")
          const first = endpoints[0] ?? ""
          expect(yield* etcdHealthy(first)).toBe(true)
        }),
      10_000
    )
  })
})

describe("resolveEndpoints", () => {
  it.effect(
    "uses ETCD_ENDPOINTS (trimmed) and starts nothing",
    () =>
      Effect.gen(function*() {
        const before = etcdChildren()
        const resolved = yield* Effect.scoped(
          Effect.zipRight(
            withEnv({ ETCD_ENDPOINTS: " http://10.0.0.1:2379 ,http://10.0.0.2:2379,, " }),
            Effect.zip(resolveEndpoints, Effect.sync(etcdChildren))
          )
        )
        expect(resolved[0]).toEqual({ endpoints: ["http://10.0.0.1:2379", "http://10.0.0.2:2379"], source: "env" })
        expect(resolved[1]).toEqual(before)
      }),
    5_000
  )

  it.live(
    "without ETCD_ENDPOINTS, an etcd binary or a Docker engine it says how to get etcd",
    (ctx) =>
      Effect.gen(function*() {
        if (yield* dockerAnswers) {
          const reason = "a Docker engine answers here, so the harness would start a container"
          console.log(`skipped: ${reason}`)
          return ctx.skip(reason)
        }
        const exit = yield* Effect.scoped(
          Effect.zipRight(
            withEnv({ ETCD_ENDPOINTS: undefined, PATH: "/nonexistent-harness-path" }),
            Effect.exit(resolveEndpoints)
          )
        )
        expect(Exit.isFailure(exit)).toBe(true)
        if (Exit.isFailure(exit)) {
          const error = Option.getOrUndefined(Cause.failureOption(exit.cause))
          expect(error?._tag).toBe("EtcdHarnessError")
          expect(error?.message).toBe(NO_ETCD_MESSAGE)
        }
      }),
    20_000
  )
})

describe("resolveEndpoints through testcontainers", () => {
  it.live(
    "without ETCD_ENDPOINTS and an etcd binary, a Docker engine gives an etcd container, stopped with the scope",
    (ctx) =>
      Effect.gen(function*() {
        if (!(yield* dockerAnswers)) {
          const reason = "no Docker engine answers on this machine; the container path runs where one does"
          console.log(`skipped: ${reason}`)
          return ctx.skip(reason)
        }
        yield* Effect.scoped(Effect.gen(function*() {
          yield* withEnv({ ETCD_ENDPOINTS: undefined, PATH: "/nonexistent-harness-path" })
          const resolved = yield* resolveEndpoints
          expect(resolved.source).toBe("container")
          expect(yield* etcdHealthy(resolved.endpoints[0]!)).toBe(true)
        }))
      }),
    180_000
  )
})
