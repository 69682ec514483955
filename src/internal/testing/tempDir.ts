/** A temp dir for the life of a scope, also removed by the exit hook if the scope never closes. */
import { Effect, type Scope } from "effect"
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { describeCause, type EtcdHarnessError, harnessError } from "./error.js"
import { ensureExitHook, trackDir, untrackDir } from "./exitHook.js"

export const tempDir = (prefix: string): Effect.Effect<string, EtcdHarnessError, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.tryPromise({
      try: async () => {
        ensureExitHook()
        const dir = await fs.mkdtemp(path.join(os.tmpdir(), `${prefix}-`))
        trackDir(dir)
        return dir
      },
      catch: (cause) => harnessError(`cannot create temp dir: ${describeCause(cause)}`, cause)
    }),
    (dir) =>
      Effect.promise(async () => {
        await fs.rm(dir, { recursive: true, force: true }).catch(() => undefined)
        untrackDir(dir)
      })
  )
