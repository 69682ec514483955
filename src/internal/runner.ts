/**
 * What `runAssigned` and `runShards` share as runners of a membership: one runner at a time, and supervision of the
 * work they fork (a piece of work that fails, rather than being interrupted, ends the runner with its failure).
 */
import { Cause, Deferred, Effect, Exit, type Scope } from "effect"
import { AlreadyRunning } from "../EtcdSeqError.js"
import type { Source } from "./source.js"

/**
 * Runs `loop` as the membership's one runner. A second is refused with `AlreadyRunning`: two runners would share one
 * lock queue position and one handover key, and each would undo the other's promises.
 */
export const single = <E, R>(
  source: Source,
  loop: Effect.Effect<never, E, R>
): Effect.Effect<never, E | AlreadyRunning, R> =>
  source.runner.withPermitsIfAvailable(1)(loop).pipe(
    Effect.flatMap(() => Effect.fail(new AlreadyRunning({ group: source.group })))
  )

/** Runs a piece of a runner's work so that its failure ends the runner; it never fails itself. */
export type Supervise<E> = <R>(work: Effect.Effect<void, E, R>) => Effect.Effect<void, never, R>

/**
 * Runs `body` (its set-up and its loop, in a scope of its own) until it ends, or until a piece of work run through
 * the `supervise` it is given fails: the runner then fails with that failure, and `body` is interrupted, stopping
 * whatever it still runs. An interrupted piece of work is no failure: the loop interrupts work whenever it moves.
 */
export const supervised = <E, E2, R>(
  body: (supervise: Supervise<E>) => Effect.Effect<never, E2, R>
): Effect.Effect<never, E | E2, Exclude<R, Scope.Scope>> =>
  Effect.gen(function*() {
    const failed = yield* Deferred.make<never, E>()
    const supervise: Supervise<E> = (work) =>
      work.pipe(
        Effect.onExit((exit) =>
          Exit.isFailure(exit) && !Cause.isInterruptedOnly(exit.cause)
            ? Deferred.failCause(failed, exit.cause)
            : Effect.void
        ),
        Effect.ignore
      )
    return yield* Effect.raceFirst(Effect.scoped(body(supervise)), Deferred.await(failed))
  })
