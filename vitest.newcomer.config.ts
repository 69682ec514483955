import { defineConfig } from "vitest/config"

/**
 * `npm run test:newcomer`: the README's Install and Quick start in a fresh app (test/newcomer/). Apart from `npm test`
 * because it needs the npm registry and takes a minute or two; `.ci/run` runs it after the suite.
 */
export default defineConfig({
  test: { include: ["test/newcomer/*.test.ts"], testTimeout: 12 * 60_000, hookTimeout: 60_000 }
})
