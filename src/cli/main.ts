#!/usr/bin/env node
/**
 * `etcdseq`: any program as a member of a group (`run`), and a group inspector (`members`, `watch`, `status`).
 * Every error ends in one line on stderr and a documented exit code (exit.ts), never a stack trace.
 */
import { Command, ValidationError } from "@effect/cli"
import { NodeContext, NodeRuntime } from "@effect/platform-node"
import { Cause, Console, Effect, Exit, Logger, LogLevel } from "effect"
import { createRequire } from "node:module"
import type { EtcdSeqError } from "../EtcdSeqError.js"
import { CliExit, ExitCode } from "./exit.js"
import { members, status, watch } from "./inspect.js"
import { run } from "./run.js"

const { version } = createRequire(import.meta.url)("../../package.json") as { readonly version: string }

const root = Command.make("etcdseq").pipe(
  Command.withDescription("Run any program as a member of an etcd group, and inspect groups."),
  Command.withSubcommands([run, members, watch, status])
)

const fail = (code: number, message: string) => Effect.as(Console.error(`etcdseq: ${message}`), code)

/** The exit code for how the command ended, after its one line on stderr. */
const report = (error: EtcdSeqError | CliExit | ValidationError.ValidationError): Effect.Effect<number> => {
  if (ValidationError.isValidationError(error)) return Effect.succeed(ExitCode.usage) // @effect/cli printed it
  switch (error._tag) {
    case "CliExit":
      return error.line === undefined ? Effect.succeed(error.code) : fail(error.code, error.line)
    case "InvalidOptions":
      return fail(ExitCode.usage, `invalid ${error.field}: ${error.reason}`)
    case "EtcdUnavailable":
      return fail(ExitCode.etcdUnavailable, error.message)
    case "EtcdRequestFailed":
      return fail(ExitCode.etcdRefused, error.message)
    case "InstanceTaken":
      return fail(ExitCode.instanceTaken, error.message)
    default:
      return fail(ExitCode.failed, error.message)
  }
}

const program = Command.run(root, { name: "etcdseq", version })(process.argv).pipe(
  Effect.as<number>(ExitCode.ok),
  Effect.catchAll(report),
  Effect.catchAllDefect((defect) => fail(ExitCode.failed, `unexpected failure: ${Cause.pretty(Cause.die(defect))}`)),
  Effect.provide(NodeContext.layer),
  // The library's own logs go to stderr: stdout belongs to the child (`run`) and to what the inspector prints.
  Effect.provide(Logger.replace(Logger.defaultLogger, Logger.withConsoleError(Logger.logfmtLogger))),
  Logger.withMinimumLogLevel(LogLevel.Warning)
)

NodeRuntime.runMain(program, {
  disableErrorReporting: true,
  // Stopped by SIGINT or SIGTERM (interrupted): the member has left, a clean end.
  teardown: (exit, onExit) => onExit(Exit.isSuccess(exit) && typeof exit.value === "number" ? exit.value : ExitCode.ok)
})
