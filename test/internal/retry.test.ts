import { describe, expect, it } from "@effect/vitest"
import { Chunk, Duration, Effect, Schedule } from "effect"
import { GRPCResourceExhastedError, GRPCUnavailableError } from "etcd3"
import { classify } from "../../src/internal/etcd/etcd3.js"
import * as Retry from "../../src/internal/retry.js"

const endpoints = ["http://127.0.0.1:2379"]
const timeout = Duration.seconds(5)

describe("retries", () => {
  it.effect.each(
    [
      ["background retries", Retry.backoff, [50, 100, 200, 400, 800]],
      ["re-registration", Retry.reregister, [100, 200, 400, 800, 1600]]
    ] as const
  )(
    "%s back off exponentially with jitter, so that processes cut off together do not retry in lockstep",
    ([, schedule, base]) =>
      Effect.gen(function*() {
        const delays = Chunk.toReadonlyArray(
          yield* Schedule.run(Schedule.delays(schedule), 0, [1, 2, 3, 4, 5])
        ).map(Duration.toMillis)
        expect(delays).toHaveLength(5)
        delays.forEach((delay, i) => {
          expect(delay).toBeGreaterThanOrEqual(base[i]! * 0.8)
          expect(delay).toBeLessThanOrEqual(base[i]! * 1.2)
        })
        expect(delays).not.toEqual(base)
      })
  )
})

describe("classify", () => {
  it("a response over the client's message size is a refusal, not an unreachable etcd", () => {
    const refused = classify(endpoints, "range", timeout)(
      new GRPCResourceExhastedError("Received message larger than max (4718592 vs. 4194304)")
    )
    expect(refused._tag).toBe("EtcdRequestFailed")
    expect(refused.message).toContain("larger than max")
    expect(classify(endpoints, "range", timeout)(new GRPCUnavailableError("no connection"))._tag).toBe(
      "EtcdUnavailable"
    )
  })

  it("an error's cause shows its message when logged or serialized, not {}", () => {
    const error = classify(endpoints, "put", timeout)(new GRPCUnavailableError("connect ECONNREFUSED 127.0.0.1:2379"))
    expect(JSON.stringify(error)).toContain("ECONNREFUSED")
  })
})
