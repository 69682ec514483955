/**
 * A headless Chromium for the page tests: Debian's `chromium` (`.ci/run` installs it) driven by playwright-core.
 * Started as a browser server, so the test holds its pid: closed through playwright, then SIGKILLed by that pid if it
 * is still there. Every wait is bounded.
 */
import { Effect, type Scope } from "effect"
import { existsSync } from "node:fs"
import { type Browser, chromium } from "playwright-core"
import { pidIsGone } from "./processes.js"

const chromiumPath = process.env["CHROMIUM_PATH"] ?? "/usr/bin/chromium"

export const haveChromium = (): boolean => existsSync(chromiumPath)

/** A browser for the life of the scope. */
export const launchBrowser: Effect.Effect<Browser, never, Scope.Scope> = Effect.acquireRelease(
  Effect.promise(async () => {
    const server = await chromium.launchServer({
      executablePath: chromiumPath,
      // Chromium's sandbox refuses to run as root (CI containers).
      args: process.getuid?.() === 0 ? ["--no-sandbox"] : [],
      timeout: 30_000
    })
    const pid = server.process().pid
    const browser = await chromium.connect(server.wsEndpoint(), { timeout: 30_000 })
    return { server, pid, browser }
  }),
  ({ browser, pid, server }) =>
    Effect.promise(async () => {
      const bounded = (p: Promise<unknown>) =>
        Promise.race([p.catch(() => undefined), new Promise((resolve) => setTimeout(resolve, 10_000))])
      await bounded(browser.close())
      await bounded(server.close())
      if (pid !== undefined && !pidIsGone(pid)) process.kill(pid, "SIGKILL")
    })
).pipe(Effect.map(({ browser }) => browser))
