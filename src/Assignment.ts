/**
 * `Assignment`: what `EtcdSeq.runAssigned` hands to the work it runs.
 *
 * @since 0.1.0
 */
import { Info } from "./Info.js"

/**
 * Which exclusivity `runAssigned` enforces between members.
 *
 * - `"none"`: work restarts per Info, nothing more (fastest). During a handover two members can briefly work on
 *   the same share.
 * - `"index"`: work for index `i` runs only while the member holds the etcd lock `<key>/locks/<i>`; no two members
 *   ever run work for the same index at once.
 * - `"group"`: no two members ever run work whose shares overlap, across count changes too: work of a new view
 *   starts only after every live member has stopped work of older views.
 *
 * @since 0.1.0
 * @category models
 */
export type Exclusive = "none" | "index" | "group"

/**
 * One assignment: an Info and the helpers to split work by it.
 *
 * A share is a shard number `s` in `0..totalShards-1` with `s % count === index`; a key is owned when its stable hash
 * modulo `count` is `index`. Every member computes the same hash, so each key has exactly one owner per view.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { EtcdSeq, EtcdSeqLive } from "effect-etcdseq"
 *
 * const worker = EtcdSeq.runAssigned((a) => Effect.log(`shards ${a.shares(16).join(",")}, fence ${a.fence}`)).pipe(
 *   Effect.provide(EtcdSeqLive)
 * )
 * ```
 * @since 0.1.0
 * @category models
 */
export interface Assignment {
  readonly info: Info
  /**
   * A number that never decreases from one assignment to a later one, usable as a fencing token: a downstream
   * system that remembers the highest fence it saw can reject writes from an older assignment. In `"index"` mode it
   * is the create revision of the index lock (new for every run); otherwise the Info's revision, which a member that
   * takes its place back after a self-fence (the same Info) resumes with.
   */
  readonly fence: number
  /**
   * In `"index"` mode, the etcd key of the run's index lock, `<group>/locks/<index>/<member id>.<run>`: the run holds
   * the index while the key exists, and its create revision is `fence`. A write to etcd that compares it in its
   * transaction (`FenceEtcd.ofAssignment`) fails from the moment the run lost the lock. `undefined` in the other modes.
   *
   * @since 0.1.0
   */
  readonly lockKey: string | undefined
  /** True when `shard` (in `0..totalShards-1`) is one of this member's shares. */
  readonly owns: (shard: number, totalShards: number) => boolean
  /** The shard numbers in `0..totalShards-1` this member owns, ascending. */
  readonly shares: (totalShards: number) => ReadonlyArray<number>
  /**
   * True when this member owns `key` (stable 32-bit FNV-1a hash of its UTF-8 bytes, modulo count). When the count
   * changes, almost every key moves: (n-1)/n of them. Simple to reproduce anywhere.
   */
  readonly ownsKey: (key: string) => boolean
  /**
   * True when this member owns `key` by jump consistent hash (`jumpHash(key, count) === index`). When a member joins
   * (it gets the highest index), only about 1/(n+1) of the keys move, all to it; when the newest member leaves, only
   * its keys move. When an older member leaves, the indexes after it shift down and their keys move with them: for
   * work that must stay put across any change, use `EtcdSeq.runShards`.
   */
  readonly ownsKeyJump: (key: string) => boolean
}

/**
 * The stable hash `ownsKey` uses: 32-bit FNV-1a over the UTF-8 bytes of the key. Exposed so other systems (and other
 * languages) can route keys the same way.
 *
 * @example
 * ```ts
 * import { keyHash } from "effect-etcdseq"
 *
 * console.log(keyHash("order-42") % 3) // 2: the index that owns the key in a group of 3
 * ```
 * @since 0.1.0
 * @category utils
 */
export const keyHash = (key: string): number => {
  let hash = 0x811c9dc5
  for (const byte of new TextEncoder().encode(key)) {
    hash ^= byte
    hash = Math.imul(hash, 0x01000193) >>> 0
  }
  return hash >>> 0
}

/**
 * Jump consistent hash (Lamping and Veach, 2014) of a key over `buckets` buckets: the bucket in `0..buckets-1`. As
 * the number of buckets grows from n to n+1, a key moves only to the new bucket, with probability 1/(n+1). The key
 * is hashed with 64-bit FNV-1a over its UTF-8 bytes first; both steps are easy to reproduce in other languages.
 *
 * Errors: throws a `RangeError` for a `buckets` that is not a positive integer (a programming error).
 *
 * @example
 * ```ts
 * import { jumpHash } from "effect-etcdseq"
 *
 * console.log(jumpHash("order-42", 3)) // 0: the index that owns the key in a group of 3
 * ```
 * @since 0.1.0
 * @category utils
 */
export const jumpHash = (key: string, buckets: number): number => {
  if (!Number.isSafeInteger(buckets) || buckets < 1) {
    throw new RangeError(`buckets must be a positive integer, got ${buckets}`)
  }
  let state = fnv64(key)
  let bucket = -1
  let next = 0
  while (next < buckets) {
    bucket = next
    state = (state * 2862933555777941757n + 1n) & mask64
    next = Math.floor((bucket + 1) * (2 ** 31 / Number((state >> 33n) + 1n)))
  }
  return bucket
}

const mask64 = (1n << 64n) - 1n

const fnv64 = (key: string): bigint => {
  let hash = 0xcbf29ce484222325n
  for (const byte of new TextEncoder().encode(key)) {
    hash ^= BigInt(byte)
    hash = (hash * 0x100000001b3n) & mask64
  }
  return hash
}

const checkTotal = (totalShards: number): void => {
  if (!Number.isSafeInteger(totalShards) || totalShards < 1) {
    throw new RangeError(`totalShards must be a positive integer, got ${totalShards}`)
  }
}

/**
 * Builds an Assignment for an Info (tests, test layers, and `runAssigned` itself); `lockKey` is the index lock's key
 * of an `"index"` run.
 *
 * `owns` and `shares` throw a `RangeError` for a `totalShards` that is not a positive integer or a shard outside
 * `0..totalShards-1`: a programming error, not a runtime condition.
 *
 * @example
 * ```ts
 * import { Info, makeAssignment } from "effect-etcdseq"
 *
 * const a = makeAssignment(Info.make(1, 3, 7), 7)
 * console.log(a.shares(8)) // [1, 4, 7]
 * ```
 * @since 0.1.0
 * @category constructors
 */
export const makeAssignment = (info: Info, fence: number, lockKey?: string | undefined): Assignment => ({
  info,
  fence,
  lockKey,
  owns: (shard, totalShards) => {
    checkTotal(totalShards)
    if (!Number.isSafeInteger(shard) || shard < 0 || shard >= totalShards) {
      throw new RangeError(`shard must be an integer in 0..${totalShards - 1}, got ${shard}`)
    }
    return Info.isValid(info) && shard % info.count === info.index
  },
  shares: (totalShards) => {
    checkTotal(totalShards)
    const out: Array<number> = []
    if (!Info.isValid(info)) return out
    for (let shard = info.index; shard < totalShards; shard += info.count) out.push(shard)
    return out
  },
  ownsKey: (key) => Info.isValid(info) && keyHash(key) % info.count === info.index,
  ownsKeyJump: (key) => Info.isValid(info) && jumpHash(key, info.count) === info.index
})
