/**
 * How the command ends: its exit codes, and the one line it prints on stderr for each error. Documented in
 * docs/command.md and in `etcdseq run --help` (help.ts); keep the three in step.
 *
 * `etcdseq run` passes its child's exit code through, so its own codes are the BSD `sysexits.h` numbers (64-78),
 * which programs use only for those meanings, and a supervisor can tell "etcdseq could not do its part" from "the
 * child failed". A child that uses sysexits codes itself is told apart by the wrapper's last line on stderr.
 */
import { Data } from "effect"

/** Exit codes of `etcdseq`. A child's own non-zero exit code is passed through by `etcdseq run`. */
export const ExitCode = {
  ok: 0,
  /** Bad flags, arguments or options: the usage error is printed (EX_USAGE). */
  usage: 64,
  /** `drain`: no live member of the group has that `--instance` or `--member` id (EX_NOUSER). */
  noSuchMember: 67,
  /** etcd unreachable within the connect timeout, or no answer within the request timeout (EX_UNAVAILABLE). */
  etcdUnavailable: 69,
  /** Anything not below: a bug, an unexpected failure (EX_SOFTWARE). */
  failed: 70,
  /**
   * `status`: the group has not converged (someone waits); `drain`: the member is not drained within `--timeout`;
   * `shards freeze`: the group runs no shards yet. Try again later (EX_TEMPFAIL).
   */
  notConverged: 75,
  /** etcd refused a request: credentials, permissions (EX_NOPERM). */
  etcdRefused: 77,
  /** `run`: a newer member with this `--instance` took the place: two processes with one instance (EX_CONFIG). */
  instanceTaken: 78,
  /** `run`: the command is not executable, as a shell reports it. */
  cannotExecute: 126,
  /** `run`: the command was not found, as a shell reports it. */
  notFound: 127
} as const

/**
 * Ends the command with `code`, after printing `line` on stderr when there is one. `error`, what the line was made
 * from, is logged at debug level (`--log-level debug`).
 */
export class CliExit extends Data.TaggedError("CliExit")<{
  readonly code: number
  readonly line?: string | undefined
  readonly error?: unknown
}> {}
