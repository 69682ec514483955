/**
 * How a group's views are paced while changes come fast (a join storm), pure. A view after a quiet moment goes out at
 * once; one that follows the last within the interval (at first `initial`) is held, and goes out (the latest one) at
 * the end of the interval. The interval doubles, up to `max`, while the views it holds stand for several etcd events
 * each, more often than one per tenth of `max`; otherwise it halves, down to `initial`, and after twice its length
 * with no change it starts again from `initial`. A storm of N joins then costs each member a number of views that
 * grows with the storm's length, not with N. Instants are milliseconds on the monotonic clock; watch.ts applies it.
 */

/** The pacing's bounds, in milliseconds. */
export interface Bounds {
  readonly initial: number
  readonly max: number
}

export interface Pacer<V> {
  readonly interval: number
  /** When the last view went out. */
  readonly lastAt: number
  /** The latest view not gone out yet, while an interval runs. */
  readonly held: V | undefined
  /** The etcd events the held view stands for, not the views: a starved process reads many events as one view. */
  readonly heldChanges: number
  /** etcd events applied since the last view was offered. */
  readonly events: number
  /** An interval runs: its end sends the held view. */
  readonly flushing: boolean
}

export const initial = <V>(bounds: Bounds): Pacer<V> => ({
  interval: bounds.initial,
  lastAt: Number.NEGATIVE_INFINITY,
  held: undefined,
  heldChanges: 0,
  events: 0,
  flushing: false
})

/** `count` etcd events were applied to the view. */
export const counted = <V>(pacer: Pacer<V>, count: number): Pacer<V> => ({ ...pacer, events: pacer.events + count })

/**
 * What to do with a new view: send it now, hold it for the running interval, or hold it and start an interval
 * (whose end `release` sends it).
 */
export type Offer = "Send" | "Held" | "StartInterval"

export const offer = <V>(bounds: Bounds, pacer: Pacer<V>, view: V, now: number): [Pacer<V>, Offer] => {
  const changes = Math.max(1, pacer.events)
  const base = { ...pacer, events: 0 }
  if (pacer.flushing) return [{ ...base, held: view, heldChanges: pacer.heldChanges + changes }, "Held"]
  const quiet = now - pacer.lastAt
  if (quiet >= pacer.interval) {
    const interval = quiet >= 2 * pacer.interval ? bounds.initial : pacer.interval
    return [{ ...base, interval, lastAt: now }, "Send"]
  }
  return [{ ...base, held: view, heldChanges: changes, flushing: true }, "StartInterval"]
}

/** How long until the running interval ends. */
export const untilRelease = <V>(pacer: Pacer<V>, now: number): number =>
  Math.max(0, pacer.lastAt + pacer.interval - now)

/**
 * The interval's end: the held view goes out, and the interval doubles while changes come fast (several, more often
 * than one per tenth of `max`) and halves otherwise, so changes a few hundred ms apart after a storm soon go out
 * alone instead of each waiting up to `max`. Nothing held: nothing changes.
 */
export const release = <V>(bounds: Bounds, pacer: Pacer<V>, now: number): [Pacer<V>, V | undefined] => {
  if (pacer.held === undefined) return [pacer, undefined]
  const interval = pacer.heldChanges > 1 && pacer.interval / pacer.heldChanges < bounds.max / 10
    ? Math.min(bounds.max, pacer.interval * 2)
    : Math.max(bounds.initial, pacer.interval / 2)
  return [{ ...pacer, interval, held: undefined, heldChanges: 0, lastAt: now }, pacer.held]
}

/** Nothing was held by the interval's end: the interval stops, and the next view is judged by the quiet before it. */
export const stop = <V>(pacer: Pacer<V>): Pacer<V> => ({ ...pacer, flushing: false })
