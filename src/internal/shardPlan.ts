/**
 * Which member owns which shard: a pure function of the members (by id) and the number of shards, so that every
 * member holding one view computes the same owners. Pure: no etcd, no effects.
 *
 * The plan is built in three steps, each of which depends on hashes of member ids and shard numbers only, never on a
 * member's position in the view (positions shift whenever an older member leaves):
 *
 * 1. Applications: every member applies to its `cap` best shards by rendezvous score (`score(member, shard)`), and a
 *    shard goes to its best applicant. No member can get more than `cap`, and a member that joins or leaves changes
 *    the owners of the shards it applied to, and of no other: this step has no chains.
 * 2. Shards nobody won go, in hash order, to their best-scoring member with room (members holding none first, when
 *    every member must hold one).
 * 3. When every member must hold a shard (shards >= members), a member still holding none takes its best-scoring
 *    shard from a member holding more than one.
 *
 * Balance is guaranteed: at most `cap = ⌈1.25 · shards / members⌉` per member, at least one when shards >= members.
 * Movement (measured in the property tests and the README): a change moves about the ideal (`shards / (n + 1)` on a
 * join) when members hold many shards each; when they hold only a few (1 to 4) the capacity bounds make steps 2 and
 * 3 move more.
 */

/** 32-bit FNV-1a of a string's UTF-16 code units (member ids are ASCII). */
const fnv = (text: string): number => {
  let hash = 0x811c9dc5
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i)
    hash = Math.imul(hash, 0x01000193) >>> 0
  }
  return hash >>> 0
}

/** murmur3's 32-bit finalizer: every input bit reaches every output bit. */
const mix = (value: number): number => {
  let h = value >>> 0
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b) >>> 0
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35) >>> 0
  h ^= h >>> 16
  return h >>> 0
}

/** Rendezvous score of a shard for a member (given the member's id hash). */
export const score = (memberHash: number, shard: number): number =>
  mix((memberHash ^ Math.imul(shard + 0x9e3779b9, 0x85ebca6b)) >>> 0)

/** The most shards one member may own. */
export const cap = (shards: number, members: number): number => Math.ceil((1.25 * shards) / members)

/** A plan: the id of each shard's owner, by shard number. */
export type Plan = ReadonlyArray<string>

/** The `k` shards a member scores best, best first. */
const best = (memberHash: number, shards: number, k: number): Array<number> => {
  if (k >= shards) return Array.from({ length: shards }, (_, s) => s)
  // A small sorted window when k is small (the common case: many members), a full sort otherwise.
  const window: Array<[number, number]> = []
  for (let s = 0; s < shards; s++) {
    const value = score(memberHash, s)
    if (window.length === k && value <= window[k - 1]![0]) continue
    let at = window.length === k ? k - 1 : window.length
    if (window.length < k) window.push([value, s])
    while (at > 0 && window[at - 1]![0] < value) {
      window[at] = window[at - 1]!
      at--
    }
    window[at] = [value, s]
  }
  return window.map(([, s]) => s)
}

/** The owners of `shards` shards among `members` (ids; their order does not matter). */
export const plan = (members: ReadonlyArray<string>, shards: number): Plan => {
  const n = members.length
  if (n === 0) return []
  const limit = cap(shards, n)
  const hashes = members.map(fnv)
  const owner = new Int32Array(shards).fill(-1)
  const load = new Int32Array(n)

  // --- 1. Applications: each shard to its best applicant ---
  const top = new Float64Array(shards).fill(-1)
  for (let m = 0; m < n; m++) {
    for (const s of best(hashes[m]!, shards, limit)) {
      const value = score(hashes[m]!, s)
      // Ties (equal scores) go to the member with the smaller id hash, then the smaller id: never to a position.
      if (value > top[s]! || (value === top[s]! && tieBreak(members, hashes, m, owner[s]!) < 0)) {
        top[s] = value
        owner[s] = m
      }
    }
  }
  for (let s = 0; s < shards; s++) if (owner[s]! >= 0) load[owner[s]!]!++

  // --- 2. Shards nobody won: to their best member with room, in hash order ---
  const everyoneHolds = shards >= n
  const unplaced: Array<number> = []
  for (let s = 0; s < shards; s++) if (owner[s]! < 0) unplaced.push(s)
  unplaced.sort((a, b) => mix(a + 1) - mix(b + 1) || a - b)
  for (const s of unplaced) {
    let chosen = -1
    let chosenTier = -1
    let chosenScore = -1
    for (let m = 0; m < n; m++) {
      if (load[m]! >= limit) continue
      const tier = everyoneHolds && load[m] === 0 ? 1 : 0
      const value = score(hashes[m]!, s)
      if (
        tier > chosenTier || (tier === chosenTier && (value > chosenScore ||
          (value === chosenScore && tieBreak(members, hashes, m, chosen) < 0)))
      ) {
        chosen = m
        chosenTier = tier
        chosenScore = value
      }
    }
    owner[s] = chosen
    load[chosen]!++
  }

  // --- 3. Every member holds one (when shards >= members): the empty take from members holding more ---
  if (everyoneHolds) {
    const empty: Array<number> = []
    for (let m = 0; m < n; m++) if (load[m] === 0) empty.push(m)
    empty.sort((a, b) => tieBreak(members, hashes, a, b))
    for (const m of empty) {
      let chosen = -1
      let chosenScore = -1
      for (let s = 0; s < shards; s++) {
        if (load[owner[s]!]! <= 1) continue
        const value = score(hashes[m]!, s)
        if (value > chosenScore) {
          chosen = s
          chosenScore = value
        }
      }
      load[owner[chosen]!]!--
      owner[chosen] = m
      load[m]!++
    }
  }

  return Array.from(owner, (m) => members[m]!)
}

/** Orders two members by id hash, then id: a total order that does not depend on positions in the view. */
const tieBreak = (members: ReadonlyArray<string>, hashes: ReadonlyArray<number>, a: number, b: number): number =>
  b < 0
    ? -1
    : a < 0
    ? 1
    : hashes[a]! - hashes[b]! || (members[a]! < members[b]! ? -1 : members[a]! > members[b]! ? 1 : 0)

/** The shards of `member` in a plan, ascending. */
export const shardsOf = (owners: Plan, member: string): Array<number> => {
  const out: Array<number> = []
  for (let s = 0; s < owners.length; s++) if (owners[s] === member) out.push(s)
  return out
}
