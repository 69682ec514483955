/**
 * How the library retries against etcd. Every schedule is jittered (each delay between 0.8 and 1.2 times its nominal
 * value): processes cut off by one outage come back at one moment, and retrying in lockstep would hit etcd with every
 * one of them at once, again and again.
 */
import { Schedule } from "effect"

/**
 * Background retries (re-establishing a watch, a lock, a handover publish, a delete that must go through):
 * exponential from 50 ms, capped at 2 s, so recovery after an outage stays prompt.
 */
export const backoff: Schedule.Schedule<unknown> = Schedule.exponential("50 millis").pipe(
  Schedule.union(Schedule.spaced("2 seconds")),
  Schedule.jittered
)

/** Registering again after a lost membership, by default: exponential from 100 ms, capped at 5 s, forever. */
export const reregister: Schedule.Schedule<unknown> = Schedule.exponential("100 millis").pipe(
  Schedule.union(Schedule.spaced("5 seconds")),
  Schedule.jittered
)
