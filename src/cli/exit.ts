/**
 * How the command ends: its exit codes, and the one line it prints on stderr for each error. Documented in the
 * README's "Command line" section; keep the two in step.
 */
import { Data } from "effect"

/** Exit codes of `etcdseq`. A child's own non-zero exit code is passed through by `etcdseq run`. */
export const ExitCode = {
  ok: 0,
  /** Anything not below (a bug, an unexpected failure). */
  failed: 1,
  /** Bad flags or arguments: the usage error is printed. */
  usage: 2,
  /** etcd unreachable within the connect timeout, or it refused a request (credentials, permissions). */
  etcd: 3,
  /** `status`: the group has not converged (someone waits). */
  notConverged: 4,
  /** `run`: a newer member with this `--instance` took the place. */
  instanceTaken: 5,
  /** `run`: the command could not be started (not found, not executable), as a shell reports it. */
  cannotStart: 127
} as const

/** Ends the command with `code`, after printing `line` on stderr when there is one. */
export class CliExit extends Data.TaggedError("CliExit")<{
  readonly code: number
  readonly line?: string | undefined
}> {}
