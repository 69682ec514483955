import { describe, expect, it } from "@effect/vitest"
import { Duration, Either, FastCheck as fc } from "effect"
import { parseDuration } from "../../src/cli/duration.js"
import { table } from "../../src/cli/inspect.js"

const millis = (text: string) => Either.map(parseDuration(text), Duration.toMillis)

describe("the command's durations", () => {
  it("reads 3s, 500ms, 2m, 1h and Effect's own forms", () => {
    expect(["3s", "500ms", "2m", "1h", "1.5s", "3 seconds", "500 millis", " 10s "].map(millis)).toEqual(
      [3_000, 500, 120_000, 3_600_000, 1_500, 3_000, 500, 10_000].map(Either.right)
    )
  })

  it("refuses anything else, naming the text", () => {
    for (const text of ["", "soon", "3", "-1s", "3 parsecs", "Infinity"]) {
      expect(parseDuration(text)).toEqual(
        Either.left(`"${text}" is not a duration (write 3s, 500ms, 2m or "3 seconds")`)
      )
    }
  })

  it.prop("any whole number of milliseconds or seconds reads back", [fc.nat({ max: 1e9 })], ([n]) => {
    expect(millis(`${n}ms`)).toEqual(Either.right(n))
    expect(millis(`${n}s`)).toEqual(Either.right(n * 1_000))
  })
})

describe("the inspector's tables", () => {
  it("pads each column to its widest cell", () => {
    expect(table(["A", "LONG"], [["xyz", "1"], ["w", "22"]])).toBe("A    LONG\nxyz  1\nw    22")
  })
})
