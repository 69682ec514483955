/**
 * The lint rule `etcdseq/bounded-timeout`: a bare `Effect.timeout*` in the library's sources is refused (in a
 * finalizer it never fires); the helpers of `src/internal/bounded.ts` pass.
 */
import { describe, expect, it } from "@effect/vitest"
import { Linter } from "eslint"
import etcdseq from "../eslint/boundedTimeout.js"

const lint = (code: string) =>
  new Linter({ configType: "flat" }).verify(code, [
    { plugins: { etcdseq }, rules: { "etcdseq/bounded-timeout": "error" } }
  ]).map((m) => m.message)

describe("etcdseq/bounded-timeout", () => {
  it("refuses every bare Effect.timeout variant, in a release or not", () => {
    const found = lint(`
      Effect.acquireRelease(start, (child) => child.kill("SIGTERM").pipe(Effect.timeout(grace)))
      wait.pipe(Effect.timeoutOption("1 second"))
      Effect.timeoutFail(wait, { duration: "1 second", onTimeout: () => new Error("late") })
      Effect.timeoutTo(wait, { duration: "1 second", onSuccess: f, onTimeout: g })
    `)
    expect(found).toHaveLength(4)
    expect(found[0]).toContain("Bounded.timeout from src/internal/bounded.ts")
    expect(found[1]).toContain("Bounded.timeoutOption")
  })

  it("lets the bounded helpers pass", () => {
    expect(lint(`
      Effect.acquireRelease(start, (child) => child.kill("SIGTERM").pipe(Bounded.timeout(grace)))
      Bounded.timeoutOption(wait, "1 second")
    `)).toEqual([])
  })
})
