/**
 * What the benchmark reads of its own process: a monotonic clock in milliseconds, heap after a full GC, CPU time.
 */
import { Clock, Effect } from "effect"
import * as v8 from "node:v8"
import * as vm from "node:vm"

const clock = Clock.make()
const origin = clock.unsafeCurrentTimeNanos()

/** Milliseconds since the benchmark started, from Effect's monotonic clock; for callbacks outside any Effect. */
export const unsafeNowMs = (): number => Number(clock.unsafeCurrentTimeNanos() - origin) / 1e6

/** Milliseconds since the benchmark started, on the Clock in context. */
export const nowMs: Effect.Effect<number> = Effect.map(Clock.currentTimeNanos, (nanos) => Number(nanos - origin) / 1e6)

/**
 * `global.gc` when node runs with `--expose-gc`; otherwise the same function obtained at run time (V8 lets a flag be
 * set after start-up, and a new context then exposes `gc`), so `npm run bench` needs no extra flag.
 */
const gcFunction: () => void = (() => {
  const exposed = (globalThis as { gc?: () => void }).gc
  if (typeof exposed === "function") return exposed
  v8.setFlagsFromString("--expose-gc")
  return vm.runInNewContext("gc") as () => void
})()

/**
 * Heap in use after full collections. Several rounds, with a turn of the event loop between them, so that objects
 * freed by finalizers and weak callbacks are gone too.
 */
export const heapUsedAfterGc: Effect.Effect<number> = Effect.gen(function*() {
  for (let round = 0; round < 3; round++) {
    gcFunction()
    yield* Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))
  }
  gcFunction()
  return process.memoryUsage().heapUsed
})

/** CPU time (user + system) this process has used, in milliseconds. */
export const cpuMs: Effect.Effect<number> = Effect.sync(() => {
  const usage = process.cpuUsage()
  return (usage.user + usage.system) / 1000
})
