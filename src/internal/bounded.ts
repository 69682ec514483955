/**
 * Time bounds that hold in finalizers too. A finalizer (an `acquireRelease` release, `addFinalizer`, `ensuring`, a
 * scope closing) runs uninterruptibly, and `Effect.timeout` ends its effect by interrupting it: there, the interrupt
 * waits for the effect to finish by itself, so the bound never fires (`etcdseq run --grace` and the leave's TTL bound
 * both broke this way). These run the timed effect interruptibly, in the fiber the timeout races it in, so the bound
 * fires wherever they are used. An effect that must complete once started (a write) stays so: mark it
 * `Effect.uninterruptible` inside, and the bound then waits for it, as `Effect.timeout` would.
 *
 * The lint rule `etcdseq/bounded-timeout` (eslint/boundedTimeout.js) refuses `Effect.timeout*` elsewhere in `src/`.
 */
/* eslint-disable etcdseq/bounded-timeout -- the one place the bare timeouts are made safe */
import { type Cause, type Duration, Effect, Function, type Option } from "effect"

/** `Effect.timeout`, bounded in finalizers too: fails with `TimeoutException` once `duration` has passed. */
export const timeout: {
  (
    duration: Duration.DurationInput
  ): <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E | Cause.TimeoutException, R>
  <A, E, R>(
    self: Effect.Effect<A, E, R>,
    duration: Duration.DurationInput
  ): Effect.Effect<A, E | Cause.TimeoutException, R>
} = Function.dual(
  2,
  <A, E, R>(self: Effect.Effect<A, E, R>, duration: Duration.DurationInput) =>
    Effect.timeout(Effect.interruptible(self), duration)
)

/** `Effect.timeoutOption`, bounded in finalizers too: `None` once `duration` has passed. */
export const timeoutOption: {
  (duration: Duration.DurationInput): <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<Option.Option<A>, E, R>
  <A, E, R>(self: Effect.Effect<A, E, R>, duration: Duration.DurationInput): Effect.Effect<Option.Option<A>, E, R>
} = Function.dual(
  2,
  <A, E, R>(self: Effect.Effect<A, E, R>, duration: Duration.DurationInput) =>
    Effect.timeoutOption(Effect.interruptible(self), duration)
)

/** `Effect.timeoutFail`, bounded in finalizers too: fails with `onTimeout()` once `duration` has passed. */
export const timeoutFail: {
  <E1>(
    options: { readonly duration: Duration.DurationInput; readonly onTimeout: () => E1 }
  ): <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E | E1, R>
  <A, E, R, E1>(
    self: Effect.Effect<A, E, R>,
    options: { readonly duration: Duration.DurationInput; readonly onTimeout: () => E1 }
  ): Effect.Effect<A, E | E1, R>
} = Function.dual(
  2,
  <A, E, R, E1>(
    self: Effect.Effect<A, E, R>,
    options: { readonly duration: Duration.DurationInput; readonly onTimeout: () => E1 }
  ) => Effect.timeoutFail(Effect.interruptible(self), options)
)
