import { fileURLToPath } from "node:url"
import { configDefaults, defineConfig } from "vitest/config"

/**
 * The churn test of runAssigned runs 48 members with a 2 s TTL in one process and checks that no two ever work on
 * one share. Its members fence themselves 400 ms before their leases could expire, so it needs an event loop that
 * is not starved by another test file running beside it on the same two cores: it runs after the rest, alone. So
 * does the runShards checker on a real etcd (TTL 3 s, members in this process and in processes of their own).
 */
const timingSensitive = ["test/runAssigned.concurrency.test.ts", "test/reliability/shards.test.ts"]

export default defineConfig({
  // Examples and tests import the package by its name; they test the sources, not a build.
  resolve: {
    alias: {
      "effect-etcdseq/testing": fileURLToPath(new URL("./src/testing.ts", import.meta.url)),
      "effect-etcdseq/sql": fileURLToPath(new URL("./src/sql.ts", import.meta.url)),
      "effect-etcdseq": fileURLToPath(new URL("./src/index.ts", import.meta.url))
    }
  },
  test: {
    // Integration files each start their own etcd; two cores run two files at once.
    fileParallelism: true,
    maxWorkers: 2,
    minWorkers: 1,
    testTimeout: 60_000,
    hookTimeout: 60_000,
    reporters: ["default"],
    projects: [
      {
        extends: true,
        test: {
          name: "suite",
          include: ["test/**/*.test.ts"],
          // test/newcomer/ needs the npm registry: `npm run test:newcomer` runs it.
          exclude: [...configDefaults.exclude, ...timingSensitive, "test/newcomer/**"],
          sequence: { groupOrder: 0 }
        }
      },
      // One project per file, in turn: files of one project may run side by side.
      ...timingSensitive.map((file, i) => ({
        extends: true as const,
        test: { name: `alone ${i + 1}`, include: [file], sequence: { groupOrder: i + 1 } }
      }))
    ]
  }
})
