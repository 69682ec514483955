import { describe, expect, it } from "@effect/vitest"
import { Chunk, Effect, Equal, FastCheck as fc, Hash, Stream } from "effect"
import { Info } from "../src/index.js"

describe("Info", () => {
  it("invalid is index -1, count 0, and not valid", () => {
    expect([Info.invalid.index, Info.invalid.count]).toEqual([-1, 0])
    expect(Info.isValid(Info.invalid)).toBe(false)
    expect(Info.isValid(Info.make(0, 1, 5))).toBe(true)
    expect(Info.isValid(Info.make(3, 3, 5))).toBe(false)
    expect(String(Info.make(2, 5, 9))).toBe("2/5@9")
    expect(String(Info.invalid)).toBe("invalid")
  })

  it.prop("equality and hash follow index and count, not revision", [fc.nat(), fc.nat(), fc.nat(), fc.nat()], ([
    i,
    c,
    r1,
    r2
  ]) => {
    const a = Info.make(i, c, r1)
    const b = Info.make(i, c, r2)
    expect(Equal.equals(a, b)).toBe(true)
    expect(Hash.hash(a)).toBe(Hash.hash(b))
    expect(Equal.equals(a, Info.make(i + 1, c, r1))).toBe(false)
    expect(Equal.equals(a, Info.make(i, c + 1, r1))).toBe(false)
  })

  it.effect("Stream.changes drops a view change that leaves index and count as they were", () =>
    Effect.gen(function*() {
      const out = yield* Stream.make(Info.make(0, 2, 5), Info.make(0, 2, 6), Info.make(0, 3, 7), Info.invalid).pipe(
        Stream.changes,
        Stream.runCollect
      )
      expect(Chunk.toReadonlyArray(out).map(String)).toEqual(["0/2@5", "0/3@7", "invalid"])
    }))

  it.prop("sameView tells apart what Equal does not: the revision", [fc.nat(), fc.nat(), fc.nat(), fc.nat()], ([
    i,
    c,
    r1,
    r2
  ]) => {
    expect(Info.sameView(Info.make(i, c, r1), Info.make(i, c, r2))).toBe(r1 === r2)
    expect(Info.sameView(Info.make(i, c, r1), Info.make(i + 1, c, r1))).toBe(false)
    expect(Info.sameView(Info.make(i, c, r1), Info.make(i, c + 1, r1))).toBe(false)
  })
})
