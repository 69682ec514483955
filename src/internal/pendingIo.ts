/**
 * Deadlines judged after the I/O that is ready. After a stall (a process starved of CPU, a long pause of its event
 * loop) Node runs the timers that came due before it reads its sockets, so an answer that arrived in time would lose
 * to the timer waiting for it: a keepalive etcd answered within the TTL would read as failed, and the member would
 * fence itself although its lease lives. Measured in a fleet of a hundred processes on two cores, that turned a slow
 * moment into hundreds of fences and a group that never settled.
 */
import { Effect } from "effect"

/**
 * Event-loop turns that let ready I/O and the fibers it resumes run: a socket is read in the poll phase, a fiber it
 * resumes may be scheduled on a timer of the next turn, so one turn is not always enough.
 */
const turns = 3

/** Calls `f` once the I/O ready now, and what it resumed, had its turn. */
export const unsafeAfterPendingIo = (f: () => void): void => {
  let left = turns
  const next = () => {
    if (--left === 0) f()
    else setImmediate(next)
  }
  setImmediate(next)
}

/** Completes once the I/O ready now, and what it resumed, had its turn. */
export const afterPendingIo: Effect.Effect<void> = Effect.async<void>((resume) => {
  unsafeAfterPendingIo(() => resume(Effect.void))
})
