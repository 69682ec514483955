/**
 * The subcommands' flags as @effect/cli options, built from their descriptions in help.ts: the name, the environment
 * variable and the default come from there. A value that does not parse is a usage error naming the flag; the
 * descriptions are not given to @effect/cli, whose help is not used (help.ts writes it).
 *
 * @effect/cli and @effect/platform are imported by module, not from their index, which loads every module of the
 * package (see program.ts).
 */
import * as Args from "@effect/cli/Args"
import * as HelpDoc from "@effect/cli/HelpDoc"
import * as Options from "@effect/cli/Options"
import * as ValidationError from "@effect/cli/ValidationError"
import { Config, type Duration, Either, Option } from "effect"
import { parseDuration } from "./duration.js"
import { type Flag, flags } from "./help.js"

const invalid = (flag: Flag, reason: string) => ValidationError.invalidValue(HelpDoc.p(`--${flag.name}: ${reason}`))

const text = (flag: Flag): Options.Options<string> => Options.text(flag.name)

export const optional = (flag: Flag): Options.Options<Option.Option<string>> =>
  Options.text(flag.name).pipe(Options.optional)

export const boolean = (flag: Flag): Options.Options<boolean> => Options.boolean(flag.name)

/** The flag, else its environment variable when set and not empty, else none. */
const orEnv = (flag: Flag & { readonly env: string }): Options.Options<Option.Option<string>> =>
  Options.text(flag.name).pipe(
    Options.map(Option.some),
    Options.withFallbackConfig(Config.option(Config.string(flag.env))),
    Options.map(Option.filter((value) => value.trim() !== ""))
  )

/**
 * A number, else its environment variable, else the flag's default; any text is taken (`Number`), and the library
 * says what is wrong with it (a weight of `abc` is `NaN`: "must be a positive finite number").
 */
export const numberOrEnv = (flag: Flag & { readonly env: string; readonly default: string }): Options.Options<number> =>
  Options.map(orEnv(flag), (value) => Number(Option.getOrElse(value, () => flag.default).trim()))

/** A shard number: an integer from 0 to 65,535. */
export const shard = (flag: Flag): Options.Options<number> =>
  Options.text(flag.name).pipe(
    Options.mapEffect((text) =>
      /^(0|[1-9][0-9]{0,4})$/.test(text.trim()) && Number(text) < 65_536
        ? Either.right(Number(text))
        : Either.left(invalid(flag, `"${text}" is not a shard number (an integer from 0 to 65535)`))
    )
  )

/** The action of `etcdseq shards <action>`: its first argument. */
export const action = <const A extends string>(values: ReadonlyArray<A>): Args.Args<A> =>
  Args.text({ name: "action" }).pipe(
    Args.mapEffect((text) =>
      values.includes(text as A)
        ? Either.right(text as A)
        : Either.left(HelpDoc.p(`"${text}" is not one of ${values.join(", ")}`))
    )
  )

/** A duration: `3s`, `500ms`, `3 seconds`. */
export const duration = (flag: Flag): Options.Options<Duration.Duration> =>
  Options.text(flag.name).pipe(
    Options.mapEffect((text) => Either.mapLeft(parseDuration(text), (reason) => invalid(flag, reason)))
  )

/** A duration, with the flag's default read as the flag would be (a default that does not parse fails at load). */
export const durationOrDefault = (flag: Flag & { readonly default: string }): Options.Options<Duration.Duration> =>
  duration(flag).pipe(Options.withDefault(Either.getOrThrow(parseDuration(flag.default))))

/** One of `values`, else the flag's default. */
export const choice = <const A extends string>(
  flag: Flag & { readonly default: NoInfer<A> },
  values: ReadonlyArray<A>
): Options.Options<A> =>
  Options.text(flag.name).pipe(
    Options.mapEffect((text) =>
      values.includes(text as A)
        ? Either.right(text as A)
        : Either.left(invalid(flag, `"${text}" is not one of ${values.join(", ")}`))
    ),
    Options.withDefault(flag.default)
  )

export const group = text(flags.group)

export const json = boolean(flags.json)

/** The connection flags every subcommand takes. */
export const connection = {
  endpoints: orEnv(flags.endpoints),
  user: optional(flags.user),
  passwordFile: optional(flags.passwordFile),
  cacert: optional(flags.cacert),
  cert: optional(flags.cert),
  key: optional(flags.key),
  connectTimeout: durationOrDefault(flags.connectTimeout)
}

const known = (arg: string) => Object.values(flags).some((flag) => arg.split("=")[0] === `--${flag.name}`)

/**
 * `etcdseq run`'s <command>. A flag @effect/cli could not read before it (unknown, or given no value) is left to the
 * arguments: it would be started as the command, and end in "command not found". No program's name starts with `-`.
 */
export const command = Args.text({ name: "command" }).pipe(
  Args.mapEffect((text) =>
    text.startsWith("-")
      ? Either.left(HelpDoc.p(known(text) ? `${text} needs a value` : `unknown flag ${text}`))
      : Either.right(text)
  )
)
