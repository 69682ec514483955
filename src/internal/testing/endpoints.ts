/**
 * Which etcd a test suite talks to: `ETCD_ENDPOINTS`, else an `etcd` binary on PATH, else a container, else an error
 * that says how to get etcd.
 */
import { Effect, Option, type Scope } from "effect"
import { findEtcdBinary, NO_ETCD_MESSAGE } from "./binary.js"
import { live } from "./clock.js"
import { startContainer } from "./container.js"
import { type EtcdHarnessError, harnessError } from "./error.js"
import { startEtcdWith } from "./etcdNode.js"
import type { ResolvedEtcdEndpoints } from "./model.js"

/** `ETCD_ENDPOINTS`, comma separated, if it names at least one endpoint. */
const endpointsFromEnv = (): Option.Option<ReadonlyArray<string>> => {
  const raw = process.env["ETCD_ENDPOINTS"]
  if (raw === undefined) return Option.none()
  const endpoints = raw
    .split(",")
    .map((e) => e.trim())
    .filter((e) => e !== "")
  return endpoints.length === 0 ? Option.none() : Option.some(endpoints)
}

export const resolveEndpoints: Effect.Effect<ResolvedEtcdEndpoints, EtcdHarnessError, Scope.Scope> = Effect.gen(
  function*() {
    const fromEnv = endpointsFromEnv()
    if (Option.isSome(fromEnv)) return { endpoints: fromEnv.value, source: "env" } as const

    const binary = yield* findEtcdBinary
    if (Option.isSome(binary)) {
      const node = yield* startEtcdWith(binary.value, "etcd")
      return { endpoints: [node.clientUrl], source: "binary" } as const
    }

    const container = yield* startContainer
    if (Option.isSome(container)) return { endpoints: [container.value], source: "container" } as const

    return yield* Effect.fail(harnessError(NO_ETCD_MESSAGE))
  }
).pipe(live)
