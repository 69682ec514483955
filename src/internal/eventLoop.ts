/**
 * The event loop, as an effect. One turn lets what is already due run first: I/O that arrived (watch responses), and
 * the fibers that ask for writes in the same moment, so that they are taken together.
 */
import { Effect } from "effect"

/** Lets the event loop run once (a `setImmediate`): I/O already due, and work queued meanwhile, go first. */
export const yieldToEventLoop: Effect.Effect<void> = Effect.async<void>((resume) => {
  const handle = setImmediate(() => resume(Effect.void))
  return Effect.sync(() => clearImmediate(handle))
})
