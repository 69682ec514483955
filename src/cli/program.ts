/**
 * One subcommand of `etcdseq`, once main.ts has found which: only its module is loaded, its flags are parsed by
 * @effect/cli, and it runs under `NodeRuntime.runMain`. Every error ends as one line on stderr, `etcdseq: ...`, naming
 * the flag where a flag is wrong, and a documented exit code (exit.ts), never a stack trace.
 *
 * The @effect packages are imported by module, not from their index: `@effect/platform-node`'s loads its HTTP, socket
 * and cluster modules too (undici, ws, msgpackr), `@effect/platform`'s and `@effect/cli`'s theirs; 200 modules of the
 * 940 `etcdseq members` loaded.
 *
 * The parse goes through `CommandDescriptor.parse` rather than `Command.run`: `Command.run` prints its own help and
 * usage errors (in ANSI colours, without the prefix, over several lines), where here they are values to report.
 */
import * as CliConfig from "@effect/cli/CliConfig"
import type * as Command from "@effect/cli/Command"
import * as Descriptor from "@effect/cli/CommandDescriptor"
import * as HelpDoc from "@effect/cli/HelpDoc"
import type * as Span from "@effect/cli/HelpDoc/Span"
import * as ValidationError from "@effect/cli/ValidationError"
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Cause, Console, Effect, Either, Exit, Logger, LogLevel } from "effect"
import type { EtcdSeqError } from "../EtcdSeqError.js"
import { CliExit, ExitCode } from "./exit.js"
import { type CommandName, flags } from "./help.js"

type Failure = EtcdSeqError | CliExit | ValidationError.ValidationError

type Environment = Effect.Effect.Context<ReturnType<typeof Descriptor.parse>>

/** The command line of a parsed command: its handler, run as `Command.run` would. */
const execute =
  <Name extends string, R, E, A>(command: Command.Command<Name, R, E, A>) =>
  (args: ReadonlyArray<string>): Effect.Effect<void, E | ValidationError.ValidationError, R | Environment> =>
    Effect.flatMap(
      Descriptor.parse(command.descriptor, args, CliConfig.defaultConfig),
      (directive): Effect.Effect<void, E | ValidationError.ValidationError, R> => {
        // main.ts answers --help and --version, and --log-level is taken out before: a built-in left is --wizard or
        // --completions, which this command does not offer.
        if (directive._tag === "BuiltIn") return usage("--wizard and --completions are not supported")
        const [extra] = directive.leftover
        if (extra !== undefined) {
          return usage(extra.startsWith("-") ? `unknown flag ${extra}` : `unexpected argument "${extra}"`)
        }
        return command.transform(command.handler(directive.value), directive.value)
      }
    )

const usage = (text: string): Effect.Effect<never, ValidationError.ValidationError> =>
  Effect.fail(ValidationError.invalidArgument(HelpDoc.p(text)))

/** Each subcommand's module, loaded on demand: `members` does not load what `run` needs, and the reverse. */
const commands = {
  run: () => import("./run.js").then((m) => execute(m.run)),
  members: () => import("./inspect.js").then((m) => execute(m.members)),
  watch: () => import("./inspect.js").then((m) => execute(m.watch)),
  status: () => import("./inspect.js").then((m) => execute(m.status)),
  drain: () => import("./shards.js").then((m) => execute(m.drain)),
  shards: () => import("./shards.js").then((m) => execute(m.shards)),
  ui: () => import("./ui.js").then((m) => execute(m.ui))
}

const levels: Record<string, LogLevel.LogLevel> = {
  all: LogLevel.All,
  trace: LogLevel.Trace,
  debug: LogLevel.Debug,
  info: LogLevel.Info,
  warning: LogLevel.Warning,
  error: LogLevel.Error,
  fatal: LogLevel.Fatal,
  none: LogLevel.None
}

/** `--log-level <level>` (or `--log-level=<level>`) taken out of the command's own flags (those before `--`). */
const takeLogLevel = (
  args: ReadonlyArray<string>
): Either.Either<readonly [LogLevel.LogLevel, ReadonlyArray<string>], CliExit> => {
  const flag = `--${flags.logLevel.name}`
  const end = args.includes("--") ? args.indexOf("--") : args.length
  const at = args.findIndex((arg, i) => i < end && (arg === flag || arg.startsWith(`${flag}=`)))
  if (at === -1) return Either.right([levels[flags.logLevel.default]!, args])
  const inline = args[at] !== flag
  const value = inline ? args[at]!.slice(flag.length + 1) : args[at + 1]
  const level = value === undefined ? undefined : levels[value.toLowerCase()]
  return level === undefined
    ? Either.left(
      new CliExit({
        code: ExitCode.usage,
        line: `${flag}: ${value === undefined ? "needs a value" : `"${value}" is not`} one of ${
          Object.keys(levels).join(", ")
        }`
      })
    )
    : Either.right([level, [...args.slice(0, at), ...args.slice(at + (inline ? 1 : 2))]])
}

/** A usage error of @effect/cli as one line, naming the flag or argument. */
const usageLine = (error: ValidationError.ValidationError): string => {
  const text = docText(error.error).trim()
  for (const [pattern, line] of rewordings) {
    const match = pattern.exec(text)
    if (match !== null) return line(match[1]!, match[2]!)
  }
  return text
}

/** @effect/cli's wording of the usage errors that come from it (test/cli.test.ts pins each). */
const rewordings: ReadonlyArray<readonly [RegExp, (a: string, b: string) => string]> = [
  [/^Expected to find option: '(--[\w-]+)'$/, (flag) => `${flag} is required`],
  [/^Expected a value following option: '(--[\w-]+)'$/, (flag) => `${flag} needs a value`],
  [
    /^The flag '(--[\w-]+)' is not recognized\. Did you mean '(--[\w-]+)'\?$/,
    (flag, near) => `unknown flag ${flag}; did you mean ${near}?`
  ],
  [/^Missing argument <(\w+)>$/, (name) => `no <${name}> given: etcdseq run [flags] -- <${name}> [args...]`]
]

const spanText = (span: Span.Span): string => {
  switch (span._tag) {
    case "Text":
    case "URI":
      return span.value
    case "Sequence":
      return spanText(span.left) + spanText(span.right)
    default:
      return spanText(span.value)
  }
}

const docText = (doc: HelpDoc.HelpDoc): string => {
  switch (doc._tag) {
    case "Empty":
      return ""
    case "Header":
    case "Paragraph":
      return spanText(doc.value)
    case "DescriptionList":
      return doc.definitions.map(([term, description]) => `${spanText(term)}: ${docText(description)}`).join("; ")
    case "Enumeration":
      return doc.elements.map(docText).join("; ")
    case "Sequence":
      return [docText(doc.left), docText(doc.right)].filter((t) => t !== "").join(" ")
  }
}

/** The library's `InvalidOptions` fields as the flags that set them. */
const flagOf = (field: string): string =>
  field === "key"
    ? "--group"
    : field === "tls"
    ? "--cacert/--cert/--key"
    : field.startsWith("auth")
    ? "--user/--password-file"
    : `--${field.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`

/** `line` on stderr, after what it was made from at debug level (`--log-level debug`), with its stack. */
const fail = (code: number, line: string, behind?: Cause.Cause<unknown>) =>
  Effect.zipRight(
    behind === undefined ? Effect.void : Effect.logDebug("the error behind the next line", behind),
    Effect.as(Console.error(`etcdseq: ${line}`), code)
  )

const failWith = (code: number, line: string, error: unknown) =>
  fail(code, line, error === undefined ? undefined : Cause.fail(error))

/** The exit code for how the command ended, after its one line on stderr. */
const report = (name: CommandName) => (error: Failure): Effect.Effect<number> => {
  if (ValidationError.isValidationError(error)) {
    // A value refused says what would be accepted (flags.ts); for the rest, the help lists what is.
    const line = usageLine(error)
    return fail(ExitCode.usage, ValidationError.isInvalidValue(error) ? line : `${line} (see etcdseq ${name} --help)`)
  }
  switch (error._tag) {
    case "CliExit":
      return error.line === undefined ? Effect.succeed(error.code) : failWith(error.code, error.line, error.error)
    case "InvalidOptions":
      return fail(ExitCode.usage, `${flagOf(error.field)}: ${error.reason}`)
    case "EtcdUnavailable":
      return failWith(ExitCode.etcdUnavailable, error.message, error.error)
    case "EtcdRequestFailed":
      return failWith(ExitCode.etcdRefused, error.message, error.error)
    case "InstanceTaken":
      return fail(ExitCode.instanceTaken, error.message)
    default:
      return fail(ExitCode.failed, error.message)
  }
}

/** Runs `etcdseq <name> <args>` (`args` from the command's name on) and exits with its code. */
export const main = (name: CommandName, args: ReadonlyArray<string>): void => {
  // A dependency's deprecation (gRPC sets a TLS server name to an IP address) is a second line on stderr, and not
  // something a user of the command can act on.
  process.noDeprecation = true
  const parsed = takeLogLevel(args)
  const program = Effect.flatMap(
    parsed,
    ([, rest]) => Effect.flatMap(Effect.promise(commands[name]), (run) => run(rest))
  )
    .pipe(
      Effect.as<number>(ExitCode.ok),
      Effect.catchAll(report(name)),
      Effect.catchAllDefect((defect) =>
        fail(
          ExitCode.failed,
          `unexpected failure (--log-level debug shows where): ${
            defect instanceof Error ? `${defect.name}: ${defect.message}` : String(defect)
          }`.split("\n")[0]!,
          Cause.die(defect)
        )
      ),
      Effect.provide(NodeContext.layer),
      // The library's own logs go to stderr: stdout belongs to the child (`run`) and to what the inspector prints.
      Effect.provide(Logger.replace(Logger.defaultLogger, Logger.withConsoleError(Logger.logfmtLogger))),
      Logger.withMinimumLogLevel(Either.match(parsed, { onLeft: () => LogLevel.Warning, onRight: ([level]) => level }))
    )
  NodeRuntime.runMain(program, {
    disableErrorReporting: true,
    // The logger is the one above, on stderr: runMain's pretty logger writes to stdout.
    disablePrettyLogger: true,
    // Stopped by SIGINT or SIGTERM (interrupted): the member has left, a clean end.
    teardown: (exit) => {
      const code = Exit.isSuccess(exit) && typeof exit.value === "number" ? exit.value : ExitCode.ok
      // Everything is done (the member left, the client is closed): the exit does not wait for gRPC to close its
      // channels, which holds Node's event loop 0.2 s more. Once what was written to stdout and stderr is out, as
      // `process.exit` does not wait for a pipe on every platform.
      process.stdout.write("", () => process.stderr.write("", () => process.exit(code)))
    }
  })
}
