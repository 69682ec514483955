#!/usr/bin/env node
/**
 * `etcdseq`: any program as a member of a group (`run`), a group inspector (`members`, `watch`, `status`), and the
 * operator's controls of a sharded group (`drain`, `shards`).
 *
 * This module answers `--version` and `--help` itself and loads the rest only for a subcommand (program.ts): loading
 * Effect, @effect/cli, @effect/platform-node and etcd3 was over 90% of `etcdseq --version`'s 1.3 s (on two busy
 * cores), and a help or a version needs none of them.
 */
import { createRequire } from "node:module"
import { commandHelp, commands, isCommand, rootHelp } from "./help.js"

const args = process.argv.slice(2)
const [name] = args
// Flags after `--` belong to the program `etcdseq run` starts.
const own = args.includes("--") ? args.slice(0, args.indexOf("--")) : args

const version = () => (createRequire(import.meta.url)("../../package.json") as { readonly version: string }).version

if (own.includes("--version")) {
  console.log(version())
} else if (args.length === 0 || own.includes("--help") || own.includes("-h")) {
  console.log(isCommand(name) ? commandHelp(name) : rootHelp(version()))
} else if (!isCommand(name)) {
  const known = Object.keys(commands).join(", ")
  console.error(
    name!.startsWith("-")
      ? `etcdseq: a command comes first, then its flags: one of ${known} (see etcdseq --help)`
      : `etcdseq: unknown command "${name}": one of ${known} (see etcdseq --help)`
  )
  // EX_USAGE, as every usage error (exit.ts); not imported from there, which would load Effect.
  process.exitCode = 64
} else {
  const program = await import("./program.js")
  program.main(name, args)
}
