/**
 * The harness's one error, defined here so that every harness module can raise it without importing the public
 * `testing.ts` (which imports them): `testing.ts` re-exports it as `EtcdHarnessError`.
 */
import { Data } from "effect"

/** The harness could not provide an etcd; the message says what happened. */
export class EtcdHarnessError extends Data.TaggedError("EtcdHarnessError")<{
  readonly message: string
  readonly cause?: unknown
}> {}

export const harnessError = (message: string, cause?: unknown): EtcdHarnessError =>
  cause === undefined ? new EtcdHarnessError({ message }) : new EtcdHarnessError({ message, cause })

export const describeCause = (cause: unknown): string => (cause instanceof Error ? cause.message : String(cause))
