/**
 * Flags shared by the subcommands: the group, `--json`, and durations read by `parseDuration`.
 */
import { HelpDoc, Options, ValidationError } from "@effect/cli"
import { Either } from "effect"
import { parseDuration } from "./duration.js"

/** A duration flag: `3s`, `500ms`, `3 seconds`; anything else is a usage error naming the flag. */
export const durationOption = (name: string, description: string) =>
  Options.text(name).pipe(
    Options.withDescription(`${description} (3s, 500ms, 2m, "3 seconds")`),
    Options.mapEffect((text) =>
      Either.mapLeft(parseDuration(text), (reason) => ValidationError.invalidValue(HelpDoc.p(`--${name}: ${reason}`)))
    )
  )

export const groupOption = Options.text("group").pipe(Options.withDescription("the group's key, e.g. prod/indexer"))

export const jsonOption = Options.boolean("json").pipe(Options.withDescription("print JSON instead of text"))
