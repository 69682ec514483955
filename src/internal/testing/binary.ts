/** The `etcd` binary on PATH, and the message for when there is none. */
import { Effect, Option } from "effect"
import { constants as fsConstants } from "node:fs"
import * as fs from "node:fs/promises"
import * as path from "node:path"
import { type EtcdHarnessError, harnessError } from "./error.js"

/** What the harness fails with when it finds no etcd at all (`testing.ts` exports it). */
export const NO_ETCD_MESSAGE =
  "No etcd available: set ETCD_ENDPOINTS, or install etcd (Debian/Ubuntu: apt-get update && apt-get install -y etcd-server), or run a Docker engine for testcontainers."

/** Absolute path of an executable `etcd` on PATH, if any. */
export const findEtcdBinary: Effect.Effect<Option.Option<string>> = Effect.promise(async () => {
  const dirs = (process.env["PATH"] ?? "").split(path.delimiter).filter((d) => d !== "")
  for (const dir of dirs) {
    const candidate = path.join(dir, "etcd")
    try {
      const stat = await fs.stat(candidate)
      if (!stat.isFile()) continue
      await fs.access(candidate, fsConstants.X_OK)
      return Option.some(candidate)
    } catch {
      // not here
    }
  }
  return Option.none()
})

/** `findEtcdBinary`, failing with `NO_ETCD_MESSAGE` when there is none. */
export const requireEtcdBinary: Effect.Effect<string, EtcdHarnessError> = findEtcdBinary.pipe(
  Effect.flatMap(
    Option.match({
      onNone: () => Effect.fail(harnessError(NO_ETCD_MESSAGE)),
      onSome: Effect.succeed
    })
  )
)
