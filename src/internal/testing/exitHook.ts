/**
 * The last-resort safety net: every process and temp dir the harness made is registered here while it lives, and a
 * `process.once("exit")` hook SIGKILLs the processes still running and removes the dirs. Scopes are the normal path;
 * this covers a test run that exits without closing them.
 */
import type { ChildProcess } from "node:child_process"
import { rmSync } from "node:fs"

const liveChildren = new Set<ChildProcess>()
const liveDirs = new Set<string>()
let exitHookInstalled = false

const installExitHook = (): void => {
  if (exitHookInstalled) return
  exitHookInstalled = true
  process.once("exit", () => {
    for (const child of liveChildren) {
      try {
        child.kill("SIGKILL")
      } catch {
        // already gone
      }
    }
    for (const dir of liveDirs) {
      try {
        rmSync(dir, { recursive: true, force: true })
      } catch {
        // best effort
      }
    }
  })
}

/** Installs the hook (once); called before anything is spawned or created, so nothing escapes it. */
export const ensureExitHook = (): void => installExitHook()

export const trackChild = (child: ChildProcess): void => {
  liveChildren.add(child)
}

export const untrackChild = (child: ChildProcess): void => {
  liveChildren.delete(child)
}

export const trackDir = (dir: string): void => {
  liveDirs.add(dir)
}

export const untrackDir = (dir: string): void => {
  liveDirs.delete(dir)
}
