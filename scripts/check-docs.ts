/**
 * `npm run docs:check`: every TypeScript block of the README, of the guides in `docs/` and of the sources' `@example`s
 * compiles under the project's strict settings, and the blocks that are tests (they import `@effect/vitest`) pass;
 * every relative link of the README and the guides reaches its file and heading.
 *
 * `@effect/docgen` (`npm run docgen`) compiles and runs the examples of functions and methods only: it skips those of
 * classes and their properties, and it reads no markdown. This covers all of them. Each block is a module of its own,
 * written to `.tmp/docs-check/` as printed: the package's own name resolves to `src/` (as in the tests), nothing is
 * added, so a block that compiles here compiles when copied into an app.
 */
import { execFileSync, spawnSync } from "node:child_process"
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { type CodeBlock, exampleBlocks, markdownBlocks, markdownHeadings } from "./codeBlocks.js"

const root = fileURLToPath(new URL("..", import.meta.url))
const out = path.join(root, ".tmp", "docs-check")

const guides = readdirSync(path.join(root, "docs")).filter((f) => f.endsWith(".md")).map((f) => `docs/${f}`)
const sources = readdirSync(path.join(root, "src"), { recursive: true, encoding: "utf8" })
  .filter((f) => f.endsWith(".ts"))
  .map((f) => `src/${f}`)

const blocks: ReadonlyArray<CodeBlock> = [
  ...["README.md", ...guides].flatMap((f) => markdownBlocks(path.join(root, f))),
  ...sources.flatMap((f) => exampleBlocks(path.join(root, f)))
].filter((b) => b.lang === "ts" || b.lang === "typescript")

// --- Links: every relative link of the README and the guides reaches a file, and a heading where it names one.

/** GitHub's anchor of a heading: lower case, punctuation dropped, spaces as dashes. */
const anchor = (heading: string) => heading.toLowerCase().replace(/[^\p{L}\p{N}_\- ]/gu, "").replace(/ /g, "-")
const anchorsOf = (file: string) => markdownHeadings(file).map(anchor)

let failed = false
for (const doc of ["README.md", ...guides]) {
  const text = readFileSync(path.join(root, doc), "utf8").replace(/```[\s\S]*?```/g, "")
  for (const [, target] of text.matchAll(/\]\(([^)\s]+)\)/g)) {
    if (/^[a-z]+:/.test(target!)) continue
    const [file, hash] = target!.split("#") as [string, string | undefined]
    const resolved = file === "" ? path.join(root, doc) : path.resolve(path.dirname(path.join(root, doc)), file)
    if (!existsSync(resolved)) {
      failed = true
      console.error(`${doc}: link to a missing file: ${target}`)
    } else if (hash !== undefined && resolved.endsWith(".md") && !anchorsOf(resolved).includes(hash)) {
      failed = true
      console.error(`${doc}: link to a missing heading: ${target}`)
    }
  }
}

// --- The layout in docs/development.md names every file of src/, and only files that exist.

{
  const development = readFileSync(path.join(root, "docs/development.md"), "utf8")
  const layout = /## Layout[\s\S]*?```text\n([\s\S]*?)```/.exec(development)?.[1] ?? ""
  const named = new Set([...layout.matchAll(/([A-Za-z0-9_.]+\.ts)\b/g)].map((m) => m[1]!))
  const actual = new Set(sources.filter((f) => f.endsWith(".ts")).map((f) => path.basename(f)))
  for (const file of actual) {
    if (!named.has(file)) {
      failed = true
      console.error(`docs/development.md: the layout does not name src/**/${file}`)
    }
  }
  for (const file of named) {
    if (!actual.has(file)) {
      failed = true
      console.error(`docs/development.md: the layout names ${file}, which src/ does not have`)
    }
  }
}

// --- The README's short tree names directories that exist.

{
  const readme = readFileSync(path.join(root, "README.md"), "utf8")
  const tree = /The tree, in short[\s\S]*?```text\n([\s\S]*?)```/.exec(readme)?.[1] ?? ""
  for (const [, dir] of tree.matchAll(/(?:^|\s)([a-z][a-z/]*\/)(?=\s)/gm)) {
    if (!existsSync(path.join(root, dir!))) {
      failed = true
      console.error(`README.md: the tree names ${dir}, which does not exist`)
    }
  }
}

// --- Code blocks.

const isTest = (b: CodeBlock) => b.code.includes(`from "@effect/vitest"`)
const where = (b: CodeBlock) => `${path.relative(root, b.file)}:${b.line}`

rmSync(out, { recursive: true, force: true })
mkdirSync(out, { recursive: true })
const files = new Map<string, CodeBlock>()
for (const b of blocks) {
  const name = `${path.relative(root, b.file).replace(/[/.]/g, "_")}_${b.line}${isTest(b) ? ".test.ts" : ".ts"}`
  files.set(name, b)
  writeFileSync(path.join(out, name), b.code)
}

// Blocks show values without using them all; everything else is the project's strict configuration.
writeFileSync(
  path.join(out, "tsconfig.json"),
  JSON.stringify({
    extends: "../../tsconfig.json",
    compilerOptions: { noUnusedLocals: false, noUnusedParameters: false, moduleDetection: "force" },
    include: ["./*.ts"]
  })
)

const tsc = spawnSync(process.execPath, [
  path.join(root, "node_modules/typescript/bin/tsc"),
  "-p",
  path.join(out, "tsconfig.json")
], {
  cwd: root,
  encoding: "utf8"
})
if (tsc.status !== 0) {
  failed = true
  // Point each error at the block's own line in the README, guide or source.
  for (const line of `${tsc.stdout}${tsc.stderr}`.split("\n")) {
    const m = /^\.tmp\/docs-check\/([^(]+)\((\d+),(\d+)\): (.*)$/.exec(line)
    const b = m === null ? undefined : files.get(m[1]!)
    console.error(
      b === undefined || m === null ? line : `${path.relative(root, b.file)}:${b.line + Number(m[2]) - 1}: ${m[4]}`
    )
  }
}

const tests = blocks.filter(isTest)
if (!failed && tests.length > 0) {
  writeFileSync(
    path.join(out, "vitest.config.ts"),
    `import { defineConfig } from "vitest/config"
export default defineConfig({
  resolve: {
    alias: {
      "effect-etcdseq/testing": ${JSON.stringify(path.join(root, "src/testing.ts"))},
      "effect-etcdseq/sql": ${JSON.stringify(path.join(root, "src/sql.ts"))},
      "effect-etcdseq": ${JSON.stringify(path.join(root, "src/index.ts"))}
    }
  },
  test: { root: ${
      JSON.stringify(root)
    }, include: [".tmp/docs-check/*.test.ts"], testTimeout: 60_000, hookTimeout: 60_000 }
})
`
  )
  try {
    execFileSync(process.execPath, [
      path.join(root, "node_modules/vitest/vitest.mjs"),
      "run",
      "--config",
      path.join(out, "vitest.config.ts")
    ], { cwd: root, stdio: "inherit" })
  } catch {
    failed = true
    console.error(`docs: a test block failed: ${tests.map(where).join(", ")}`)
  }
}

const count = (prefix: string) => blocks.filter((b) => path.relative(root, b.file).startsWith(prefix)).length
console.log(
  `docs: ${blocks.length} TypeScript blocks (README ${count("README")}, guides ${count("docs/")}, @example ${
    count("src/")
  }) ${failed ? "FAILED" : "compile"}; ${tests.length} of them are tests${failed ? "" : ", passed"}`
)
process.exit(failed ? 1 : 0)
