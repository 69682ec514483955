/**
 * Small numeric helpers: quantiles of latency samples and rounding for the tables.
 */

export interface Summary {
  readonly count: number
  readonly min: number
  readonly median: number
  readonly p90: number
  readonly p99: number
  readonly max: number
  readonly mean: number
}

/** The q-quantile (0..1) of already sorted samples, by the nearest-rank method. */
const quantileSorted = (sorted: ReadonlyArray<number>, q: number): number => {
  if (sorted.length === 0) return Number.NaN
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))
  return sorted[rank]!
}

export const summarize = (samples: ReadonlyArray<number>): Summary => {
  const sorted = [...samples].sort((a, b) => a - b)
  const total = sorted.reduce((sum, x) => sum + x, 0)
  return {
    count: sorted.length,
    min: sorted[0] ?? Number.NaN,
    median: quantileSorted(sorted, 0.5),
    p90: quantileSorted(sorted, 0.9),
    p99: quantileSorted(sorted, 0.99),
    max: sorted[sorted.length - 1] ?? Number.NaN,
    mean: sorted.length === 0 ? Number.NaN : total / sorted.length
  }
}

/** Rounds to `digits` significant digits, keeping integers >= 1000 whole. */
export const round = (x: number, digits = 3): number => {
  if (!Number.isFinite(x) || x === 0) return x
  if (Math.abs(x) >= 10 ** digits) return Math.round(x)
  return Number(x.toPrecision(digits))
}
