/**
 * The in-memory etcd's faults: an outage (clients cannot reach it: requests fail at once or hang until their
 * deadline), a client that dies without revoking, answers lost after their writes landed.
 */
import type { OutageMode, State } from "./state.js"
import * as Watches from "./watches.js"

/** How the client reaches the server now. */
export const reachable = (state: State, client: number): OutageMode | "yes" =>
  state.crashed.has(client)
    ? "unreachable"
    : state.outage !== undefined && (state.outage.clients === undefined || state.outage.clients.has(client))
    ? state.outage.mode
    : "yes"

/** Cuts off the clients given (all when undefined): their watches end. */
export const outage = (state: State, mode: OutageMode, affected: ReadonlyArray<number> | undefined): void => {
  const set = affected === undefined ? undefined : new Set(affected)
  state.outage = { mode, clients: set }
  Watches.drop(state, (client) => set === undefined || set.has(client))
}

export const recover = (state: State): void => {
  state.outage = undefined
}

export const crash = (state: State, client: number): void => {
  state.crashed.add(client)
  Watches.drop(state, (c) => c === client)
}

export const loseAnswers = (state: State, client: number, count: number): void => {
  state.answersToLose.set(client, count)
}

/** Whether the answer of a write the client just made is lost; counts it. */
export const takeLostAnswer = (state: State, client: number): boolean => {
  const toLose = state.answersToLose.get(client) ?? 0
  if (toLose === 0) return false
  state.answersToLose.set(client, toLose - 1)
  return true
}
