/**
 * A child's process group, as `etcdseq run` stops it: the child is started as the leader of a group of its own
 * (`detached`), so its pid is the group id, and whatever it starts stays in the group unless it leaves on purpose
 * (`setsid`, `setpgid`). A stop is over once no live process of the group is left, not when the direct child exits: a
 * grandchild that ignores SIGTERM would otherwise outlive the assignment beside its successor's worker.
 *
 * Every wait here polls a deadline instead of racing a timeout: a stop runs in a finalizer, which is uninterruptible,
 * and there a timeout that has to interrupt what it bounds never fires.
 */
import { FileSystem } from "@effect/platform"
import { Duration, Effect } from "effect"
import * as Monotonic from "../internal/monotonic.js"

/** How often a stop looks at the group again. */
const pollEvery = Duration.millis(25)

/**
 * The pids of the group's live processes. On Linux from `/proc/<pid>/stat`: a process killed whose parent does not
 * reap it (an orphan of a parent, pid 1, that reaps nobody) stays a zombie there, and counts as gone. Elsewhere, a
 * signal 0 to the group tells whether any process (a zombie too) is left.
 */
const livePids = (pgid: number): Effect.Effect<ReadonlyArray<number>, never, FileSystem.FileSystem> =>
  process.platform !== "linux"
    ? Effect.sync(() => {
      try {
        process.kill(-pgid, 0)
        return [pgid]
      } catch {
        return []
      }
    })
    : Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const entries = yield* fs.readDirectory("/proc").pipe(Effect.orElseSucceed((): Array<string> => []))
      const live: Array<number> = []
      for (const entry of entries) {
        if (!/^[0-9]+$/.test(entry)) continue
        // Gone between the listing and the read: not live.
        const stat = yield* fs.readFileString(`/proc/${entry}/stat`).pipe(Effect.orElseSucceed(() => ""))
        const fields = parseStat(stat)
        if (fields !== undefined && fields.pgrp === pgid && fields.state !== "Z" && fields.state !== "X") {
          live.push(Number(entry))
        }
      }
      return live
    })

/**
 * State and process group from a `/proc/<pid>/stat` line: `pid (comm) state ppid pgrp ...`. The command name may hold
 * spaces and parentheses, so the fields are read after the last `)`.
 */
const parseStat = (stat: string): { readonly state: string; readonly pgrp: number } | undefined => {
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
  const pgrp = Number(fields[2])
  return fields[0] === undefined || fields[0] === "" || !Number.isInteger(pgrp)
    ? undefined
    : { state: fields[0], pgrp }
}

/** Sends `signal` to every process of the group; none left is no error. */
const signal = (pgid: number, signal: NodeJS.Signals): Effect.Effect<void> =>
  Effect.sync(() => {
    try {
      process.kill(-pgid, signal)
    } catch {
      // ESRCH: the group is empty.
    }
  })

/** Waits until no live process of the group is left or `within` has passed; true when none is left. */
const awaitEmpty = (
  pgid: number,
  within: Duration.Duration
): Effect.Effect<boolean, never, FileSystem.FileSystem> =>
  Effect.gen(function*() {
    const deadline = (yield* Monotonic.millis) + Duration.toMillis(within)
    while (true) {
      if ((yield* livePids(pgid)).length === 0) return true
      if ((yield* Monotonic.millis) >= deadline) return false
      yield* Effect.sleep(pollEvery)
    }
  })

/** How long processes killed with SIGKILL are given to be gone (one in uninterruptible sleep finishes its call). */
const killedWithin = Duration.seconds(5)

/**
 * Stops the group: SIGTERM to all of it, SIGKILL to all of it once `grace` has passed with any process left, and
 * returns once none is left (or, past SIGKILL, after `killedWithin` with a warning through `say`). Safe in finalizers.
 */
export const stop = (
  pgid: number,
  grace: Duration.Duration,
  say: (line: string) => Effect.Effect<void>
): Effect.Effect<void, never, FileSystem.FileSystem> =>
  Effect.gen(function*() {
    if ((yield* livePids(pgid)).length === 0) return
    yield* say(`stopping process group ${pgid}: SIGTERM`)
    yield* signal(pgid, "SIGTERM")
    if (yield* awaitEmpty(pgid, grace)) return
    const left = yield* livePids(pgid)
    yield* say(`process group ${pgid} did not stop within ${Duration.format(grace)} (pids ${left.join(" ")}): SIGKILL`)
    yield* signal(pgid, "SIGKILL")
    if (!(yield* awaitEmpty(pgid, killedWithin))) {
      yield* say(`process group ${pgid} still has pids ${(yield* livePids(pgid)).join(" ")} after SIGKILL`)
    }
  })
