/**
 * For the examples only: use `ETCD_ENDPOINTS` when it is set, otherwise start a throwaway etcd (the `etcd` binary
 * on PATH, or a testcontainers container) for the life of the program, exactly as the tests do.
 */
import { ConfigProvider, Effect, Layer } from "effect"
import { resolveEndpoints } from "../test/support/etcd.js"

export const LocalEtcd = (defaults: Record<string, string> = {}): Layer.Layer<never, unknown> =>
  Layer.unwrapScoped(Effect.gen(function*() {
    const { endpoints, source } = yield* resolveEndpoints
    yield* Effect.log(`etcd at ${endpoints.join(",")} (${source === "env" ? "ETCD_ENDPOINTS" : `throwaway ${source}`})`)
    // The environment wins; then the endpoints found above; then the example's defaults.
    return Layer.setConfigProvider(
      ConfigProvider.fromEnv().pipe(
        ConfigProvider.orElse(() =>
          ConfigProvider.fromMap(new Map([...Object.entries(defaults), ["ETCD_ENDPOINTS", endpoints.join(",")]]))
        )
      )
    )
  }))
