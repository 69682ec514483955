// dependency-cruiser: the rules of the code's structure, checked by `npm run lint:deps` (and so by .ci/run).
// docs/development.md ("Structure checks") explains each rule and the temporary allow-list
// .dependency-cruiser-known-violations.json: violations listed there are tolerated until the refactor removes them;
// any other one fails.
/** @type {import("dependency-cruiser").IConfiguration} */
export default {
  forbidden: [
    {
      name: "no-circular",
      severity: "error",
      comment: "A cycle (type-only imports included) ties modules into one: none may be understood, tested or moved "
        + "alone.",
      from: {},
      to: { circular: true }
    },
    {
      name: "no-orphans-in-src",
      severity: "error",
      comment: "A module of src/ that no other module imports and that is not an entry point (src/index.ts, "
        + "src/testing.ts, src/sql.ts, src/cli/main.ts) ships as dead code.",
      from: {
        orphan: true,
        path: "^src/",
        pathNot: "^src/(index|testing|sql)\\.ts$|^src/cli/main\\.ts$"
      },
      to: {}
    },
    {
      name: "internal-not-to-cli",
      severity: "error",
      comment: "src/internal/ is the library; src/cli/ is one program built on it. The library never depends on "
        + "the command.",
      from: { path: "^src/internal/" },
      to: { path: "^src/cli/" }
    },
    {
      name: "etcd3-only-in-the-seam",
      severity: "error",
      comment: "Only the seam (src/internal/etcd/) knows the etcd3 package, types included; everything else in "
        + "src/ speaks src/internal/etcd/api.ts. (Tests and benchmarks may drive a raw etcd3 client.)",
      from: { path: "^src/", pathNot: "^src/internal/etcd/" },
      to: { path: "^node_modules/etcd3/" }
    },
    {
      name: "seam-implementations-private-to-the-client",
      severity: "error",
      comment: "The seam's implementations (src/internal/etcd/ except api.ts: etcd3.ts, memory.ts, "
        + "watchStream.ts) belong to the client modules src/Etcd.ts, src/MemoryEtcd.ts and src/internal/client.ts. "
        + "Other modules use the one narrow interface, src/internal/etcd/api.ts.",
      from: { path: "^src/", pathNot: "^src/(Etcd|MemoryEtcd)\\.ts$|^src/internal/client\\.ts$|^src/internal/etcd/" },
      to: { path: "^src/internal/etcd/", pathNot: "^src/internal/etcd/api\\.ts$" }
    },
    {
      name: "src-not-to-entry-points",
      severity: "error",
      comment: "The entry points (src/index.ts, src/testing.ts, src/sql.ts, src/cli/main.ts) re-export or run; no "
        + "module of src/ imports them.",
      from: { path: "^src/" },
      to: { path: "^src/(index|testing|sql)\\.ts$|^src/cli/main\\.ts$" }
    },
    {
      name: "src-not-to-tests-bench-scripts-examples",
      severity: "error",
      comment: "What ships (src/) never imports what does not: test/, bench/, scripts/, examples/.",
      from: { path: "^src/" },
      to: { path: "^(test|bench|scripts|examples)/" }
    },
    {
      name: "src-not-to-dev-dependencies",
      severity: "error",
      comment: "A package src/ imports at run time must be a dependency or a peer dependency of package.json, not "
        + "only a devDependency: users would not have it.",
      from: { path: "^src/" },
      to: {
        dependencyTypes: ["npm-dev"],
        dependencyTypesNot: ["npm", "npm-peer", "npm-optional"]
      }
    },
    {
      name: "not-to-unresolvable",
      severity: "error",
      comment: "An import that does not resolve to a file or an installed package.",
      from: {},
      to: { couldNotResolve: true }
    },
    {
      name: "no-non-package-json",
      severity: "error",
      comment: "A package imported but not named in package.json works only by the accident of a hoisted "
        + "node_modules.",
      from: {},
      // dependencyTypesNot: dependency-cruiser also reads peerDependenciesMeta as a list of dependencies and calls
      // the optional peers (@effect/sql, testcontainers) npm-no-pkg besides npm-peer; named in package.json is enough.
      to: {
        dependencyTypes: ["npm-no-pkg", "npm-unknown"],
        dependencyTypesNot: ["npm", "npm-dev", "npm-peer", "npm-optional"]
      }
    }
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    // Type-only imports count: a cycle or a forbidden package through types is still a dependency of the design.
    tsPreCompilationDeps: true,
    tsConfig: { fileName: "tsconfig.json" },
    enhancedResolveOptions: {
      exportsFields: ["exports"],
      conditionNames: ["import", "require", "node", "default", "types"],
      mainFields: ["module", "main", "types", "typings"],
      extensions: [".ts", ".mts", ".js", ".mjs", ".cjs", ".d.ts"]
    },
    skipAnalysisNotInRules: true,
    reporterOptions: {
      text: { highlightFocused: true }
    }
  }
}
