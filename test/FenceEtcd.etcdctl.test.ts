/**
 * The guide's `etcdctl txn` inputs ("From any language"), exactly as printed, run by bash against a real etcd with
 * etcdctl (Debian's etcd-client): the lock-key compare with the environment an `etcdseq run --exclusive index` child
 * gets from a real index lock, and the fence record function with the fences a child would pass.
 */
import { expect, layer } from "@effect/vitest"
import { Deferred, Effect, Exit, Scope } from "effect"
import { execFileSync, spawnSync } from "node:child_process"
import { fileURLToPath } from "node:url"
import { blockUnder } from "../scripts/codeBlocks.js"
import { type Assignment, Etcd, EtcdSeq, FenceEtcd } from "../src/index.js"
import { EtcdEndpoints } from "./support/etcd.js"
import { admin } from "./support/reliability.js"

const guide = fileURLToPath(new URL("../docs/exclusive-work.md", import.meta.url))

/** The block run by bash with `env`: its exit code and stdout. */
const bash = (code: string, env: Record<string, string>) =>
  Effect.sync(() => {
    const run = spawnSync("bash", ["-c", code], {
      encoding: "utf8",
      timeout: 20_000,
      env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin", ETCDCTL_API: "3", ...env }
    })
    return { status: run.status, stdout: run.stdout, stderr: run.stderr }
  })

const etcdctlThere = (() => {
  try {
    execFileSync("etcdctl", ["version"], { stdio: "ignore" })
    return true
  } catch {
    return false
  }
})()

layer(EtcdEndpoints.layer, { timeout: "60 seconds", excludeTestServices: true })("the guide's etcdctl txn", (it) => {
  it.effect("needs etcdctl (apt-get install -y etcd-client)", () => Effect.sync(() => expect(etcdctlThere).toBe(true)))

  it.effect("with the lock key of an index run: the write lands while the run holds the lock, not once it lost it", () =>
    Effect.gen(function*() {
      const { endpoints } = yield* EtcdEndpoints
      const etcd = yield* admin(endpoints)
      const code = blockUnder(guide, "etcd, with the holder's lock key", "sh").code
      // A real run of `"index"` mode: what `etcdseq run --exclusive index` puts in its child's environment.
      const scope = yield* Scope.make()
      const client = yield* Etcd.make({ endpoints }).pipe(Scope.extend(scope))
      const seq = yield* EtcdSeq.make({ key: `etcdctl/index-${Date.now()}`, ttl: "5 seconds" }).pipe(
        Effect.provideService(Etcd, client),
        Scope.extend(scope)
      )
      const run = yield* Deferred.make<Assignment>()
      yield* EtcdSeq.runAssigned((a) => Effect.zipRight(Deferred.succeed(run, a), Effect.never), { exclusive: "index" })
        .pipe(Effect.provideService(EtcdSeq, seq), Effect.forkIn(scope))
      const a = yield* Deferred.await(run)
      const env = {
        ETCDCTL_ENDPOINTS: endpoints.join(","),
        ETCDSEQ_LOCK_KEY: a.lockKey!,
        ETCDSEQ_FENCE: String(a.fence)
      }
      const held = yield* bash(code, env)
      expect([held.status, held.stdout.split("\n")[0]], held.stderr).toEqual([0, "SUCCESS"])
      expect(yield* Effect.promise(() => etcd.get("app/images/7").string())).toBe("resized")

      // The run ends (its member leaves, its lock key goes): the same transaction writes nothing.
      yield* Effect.promise(() => etcd.delete().key("app/images/7").exec())
      yield* Scope.close(scope, Exit.void)
      const lost = yield* bash(code, env)
      expect([lost.status, lost.stdout.split("\n")[0]], lost.stderr).toEqual([0, "FAILURE"])
      expect(yield* Effect.promise(() => etcd.get("app/images/7").string())).toBeNull()
    }).pipe(Effect.scoped))

  it.effect("with a fence record: created by the first write, equal and higher fences pass, lower ones are refused", () =>
    Effect.gen(function*() {
      const { endpoints } = yield* EtcdEndpoints
      const etcd = yield* admin(endpoints)
      const code = blockUnder(guide, "etcd, with a fence record", "sh").code
      const put = (fence: number) =>
        bash(code, { ETCDCTL_ENDPOINTS: endpoints.join(","), ETCDSEQ_FENCE: String(fence) })
      const get = (key: string) => Effect.promise(() => etcd.get(key).string())
      const status = (fence: number) => Effect.map(put(fence), (r) => r.status)

      expect(yield* status(12)).toBe(0)
      expect(yield* get("app/fences/images")).toBe("00000000000000000012")
      expect(yield* get("app/images/7")).toBe("resized")
      expect(yield* status(12)).toBe(0)
      yield* Effect.promise(() => etcd.put("app/images/7").value("by the holder of 12"))
      // Below: refused, nothing written. Ten is below twelve also where "10" < "12" would hold unpadded.
      expect(yield* status(9)).toBe(1)
      expect(yield* status(10)).toBe(1)
      expect(yield* get("app/images/7")).toBe("by the holder of 12")
      expect(yield* status(100)).toBe(0)
      expect(yield* get("app/fences/images")).toBe("00000000000000000100")
      expect(yield* status(99)).toBe(1)
      // The library's FenceEtcd reads and writes the same record.
      const library = (fence: number) =>
        FenceEtcd.commit(FenceEtcd.record("app/fences/images", fence), [FenceEtcd.put("app/images/7", "library")]).pipe(
          Effect.provide(EtcdEndpoints.etcd)
        )
      expect(yield* Effect.flip(library(50))).toMatchObject({ _tag: "StaleFence", fence: 50, current: 100 })
      yield* library(101)
      expect(yield* status(100)).toBe(1)
      expect(yield* get("app/images/7")).toBe("library")
    }).pipe(Effect.scoped))
})
