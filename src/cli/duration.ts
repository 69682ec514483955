/**
 * Durations as the command reads them: `3s`, `500ms`, `2m`, `1h`, or Effect's own `3 seconds`, `500 millis`.
 */
import { Duration, Either, Option } from "effect"

const short = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h)$/
const units = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 } as const

/** The duration `text` names, or why it names none. */
export const parseDuration = (text: string): Either.Either<Duration.Duration, string> => {
  const trimmed = text.trim()
  const match = short.exec(trimmed)
  if (match !== null) return Either.right(Duration.millis(Number(match[1]) * units[match[2] as keyof typeof units]))
  const decoded = Duration.decodeUnknown(trimmed)
  return Option.isSome(decoded) && Duration.isFinite(decoded.value)
    ? Either.right(decoded.value)
    : Either.left(`"${text}" is not a duration (write 3s, 500ms, 2m or "3 seconds")`)
}
