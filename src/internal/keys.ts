/**
 * The key schema: every key the library writes under a group, and what it accepts when it reads one back.
 *
 * ```text
 * <group>/members/<member id>              a member, under its lease; value: the member record
 * <group>/members/@<instance>              a member with an instance, under its lease; the record names its id
 * <group>/members/~rename                  written and deleted at once to rename a view after a re-read (view.ts)
 * <group>/handover/<member id>             group mode: the newest view the member holds work of, under its lease
 * <group>/locks/<index>/<member id>.<run>  index mode: a contender for the index lock, under the member's lease
 * <group>/claims/<shard>/<member id>.<run>  runShards: a claim on a shard, under the member's lease
 * <group>/shards/drains/<member id>        a drain of the member (the plan gives it no shard), under its lease
 * <group>/shards/pins/<shard>              the operator's pin of a shard; value: an instance (or a member's name)
 * <group>/shards/paused/<shard>            the operator's pause of a shard: nobody runs it
 * <group>/shards/frozen                    the operator's freeze; value: the owners (by name) when it was set
 * ```
 *
 * A member id is `<lease id in hex>_<n>`: the lease its keys are bound to (shared by the members of one client) and
 * a number unique among that client's members. A key read back counts only when it is bound to the lease its name
 * gives, so that nothing without a lease (a key written by hand, or by a co-tenant) can take an index, hold a lock
 * or speak for a member: such a key would never go away by itself.
 *
 * A member with an instance (static membership) keeps its member key, `@<instance>`, across its incarnations: a new
 * one puts the key again under its own lease, which keeps the key's create revision (its place in join order). Its
 * record names the incarnation's member id, which must be bound to the key's lease; locks, claims and handover keys
 * are the incarnation's, so a new incarnation waits for its predecessor's as any successor does.
 */

/**
 * Segments a group key may not contain: the ones the library writes under a group (and will: shard claims), so no
 * group's keys nest in another's, plus `.` and `..`.
 */
const reservedSegments: ReadonlySet<string> = new Set([
  "members",
  "locks",
  "handover",
  "claims",
  "shards",
  ".",
  ".."
])

const groupPattern = /^[A-Za-z0-9._-]+(\/[A-Za-z0-9._-]+)*$/

/** Why `group` cannot be a group key, or `undefined` when it can. */
export const invalidGroup = (group: unknown): string | undefined => {
  if (typeof group !== "string" || group.trim() === "") return "must not be empty"
  if (group.length > 512) return "must be at most 512 characters"
  if (!groupPattern.test(group)) {
    return `"${group}" must be /-separated segments of letters, digits, ".", "_" and "-", without a leading or trailing /`
  }
  const reserved = group.split("/").find((segment) => reservedSegments.has(segment))
  return reserved === undefined
    ? undefined
    : `"${reserved}" is a reserved segment (the library writes it under a group; it would nest in another's keys)`
}

// --- Member ids -------------------------------------------------------------------------------------------------

/** Lease ids are int64 decimals on the wire; keys carry them in hex, as etcd's own tools print them. */
const leaseIdToHex = (leaseId: string): string => {
  let hex = hexOfLease.get(leaseId)
  if (hex === undefined) {
    // Bounded: a process sees a few leases per client it hears from, and a forgotten one is only computed again.
    if (hexOfLease.size >= 4_096) hexOfLease.clear()
    hex = BigInt(leaseId).toString(16)
    hexOfLease.set(leaseId, hex)
  }
  return hex
}

/** Every decoded key names its lease: a storm of N joins would make N BigInts in every process, one per key. */
const hexOfLease = new Map<string, string>()

/** The id of a member bound to `leaseId`, numbered `n` among the members of its client. */
export const memberId = (leaseId: string, n: number): string => `${leaseIdToHex(leaseId)}_${n}`

const memberIdPattern = /^([0-9a-f]{1,16})_(0|[1-9][0-9]{0,15})$/

/** True when `id` is a member id bound to `lease` (the lease a key carries, as etcd reports it: int64 decimal). */
export const isBoundTo = (id: string, lease: string): boolean => {
  const match = memberIdPattern.exec(id)
  return match !== null && lease !== "0" && leaseIdToHex(lease) === match[1]
}

/** True when `id` is a member id (bound to some lease). */
const isMemberId = (id: string): boolean => memberIdPattern.test(id)

// --- Instances --------------------------------------------------------------------------------------------------

const instancePattern = /^[A-Za-z0-9._-]{1,253}$/

/** Why `instance` cannot be an instance name, or `undefined` when it can. */
export const invalidInstance = (instance: unknown): string | undefined =>
  typeof instance !== "string"
    ? "must be a string"
    : instance.length === 0 || instance.length > 253
    ? "must be 1 to 253 characters"
    : !instancePattern.test(instance)
    ? `"${instance}" must be letters, digits, ".", "_" and "-"`
    : undefined

/** The last segment of the member key of a member with this instance: never a member id, nor the rename key. */
export const instanceName = (instance: string): string => `@${instance}`

/** The instance a member key's last segment names, when it is `@<instance>`. */
export const instanceOfName = (name: string): string | undefined =>
  name.startsWith("@") && invalidInstance(name.slice(1)) === undefined ? name.slice(1) : undefined

// --- Members ----------------------------------------------------------------------------------------------------

/** The prefix under which a group's member keys live. */
export const membersPrefix = (group: string): string => `${group}/members/`

/**
 * The member a key stands for, by the last segment of its key (its name), when it is exactly
 * `<members prefix><member id>` or `<members prefix>@<instance>`.
 */
export const memberOfKey = (prefix: string, key: string): string | undefined => {
  if (!key.startsWith(prefix)) return undefined
  const name = key.slice(prefix.length)
  return isMemberId(name) || instanceOfName(name) !== undefined ? name : undefined
}

/** The last segment of the key whose put renames the group's view (see view.ts): never a member id. */
export const renameSegment = "~rename"

/** The key whose put renames the group's view: under the members prefix, so every client's group watch sees it. */
export const renameKey = (group: string): string => membersPrefix(group) + renameSegment

// --- Handover ---------------------------------------------------------------------------------------------------

export const handoverPrefix = (group: string): string => `${group}/handover/`

export const handoverKey = (group: string, id: string): string => handoverPrefix(group) + id

/**
 * A handover entry as read back: the member it speaks for and the revision it published, when the key is a member
 * id bound to its own lease and the value a revision; otherwise `undefined` (ignored: nobody may speak for another).
 */
export const decodeHandover = (
  prefix: string,
  kv: { readonly key: string; readonly value: string; readonly lease: string }
): { readonly id: string; readonly revision: number } | undefined => {
  const id = memberOfKey(prefix, kv.key)
  if (id === undefined || !isBoundTo(id, kv.lease) || !/^[1-9][0-9]{0,15}$/.test(kv.value)) return undefined
  return { id, revision: Number(kv.value) }
}

// --- Index locks ------------------------------------------------------------------------------------------------

/** The prefix under which every index lock of a group lives. */
export const locksPrefix = (group: string): string => `${group}/locks/`

export const lockPrefix = (group: string, index: number): string => `${locksPrefix(group)}${index}/`

export const lockKey = (prefix: string, owner: string, run: number): string => `${prefix}${owner}.${run}`

/**
 * The owner of a lock key as read back, when its name is `<member id>.<run>` and it is bound to that member's lease;
 * otherwise `undefined`: a key no lease holds would block the index forever.
 */
export const lockOwnerOfKey = (prefix: string, key: string, lease: string): string | undefined => {
  if (!key.startsWith(prefix)) return undefined
  const name = key.slice(prefix.length)
  const dot = name.lastIndexOf(".")
  const owner = name.slice(0, dot)
  return dot > 0 && /^(0|[1-9][0-9]{0,15})$/.test(name.slice(dot + 1)) && isBoundTo(owner, lease) ? owner : undefined
}

// --- Shard claims -----------------------------------------------------------------------------------------------

export const claimsPrefix = (group: string): string => `${group}/claims/`

export const claimKey = (group: string, shard: number, owner: string, run: number): string =>
  `${claimsPrefix(group)}${shard}/${owner}.${run}`

/**
 * A claim as read back: its shard and owner, when the key is `<shard>/<member id>.<run>` and bound to that member's
 * lease; otherwise `undefined` (a key no lease holds would block its shard forever).
 */
export const decodeClaim = (
  prefix: string,
  kv: { readonly key: string; readonly lease: string }
): { readonly shard: number; readonly owner: string } | undefined => {
  if (!kv.key.startsWith(prefix)) return undefined
  const rest = kv.key.slice(prefix.length)
  const slash = rest.indexOf("/")
  if (slash <= 0 || !/^(0|[1-9][0-9]{0,5})$/.test(rest.slice(0, slash))) return undefined
  const owner = lockOwnerOfKey(prefix + rest.slice(0, slash + 1), kv.key, kv.lease)
  return owner === undefined ? undefined : { shard: Number(rest.slice(0, slash)), owner }
}

// --- Operator controls of the shard plan ----------------------------------------------------------------------

/** The prefix under which a group's shard controls and drains live (one watch per client follows it). */
export const shardsPrefix = (group: string): string => `${group}/shards/`

export const drainKey = (group: string, id: string): string => `${shardsPrefix(group)}drains/${id}`

export const pinKey = (group: string, shard: number): string => `${shardsPrefix(group)}pins/${shard}`

export const pausedKey = (group: string, shard: number): string => `${shardsPrefix(group)}paused/${shard}`

export const frozenKey = (group: string): string => `${shardsPrefix(group)}frozen`

/** What a key under the shards prefix is, by its name alone (its value is decoded by its reader). */
export type ShardsKey =
  | { readonly _tag: "Drain"; readonly id: string }
  | { readonly _tag: "Pin"; readonly shard: number }
  | { readonly _tag: "Paused"; readonly shard: number }
  | { readonly _tag: "Frozen" }

/** The key's meaning, or why it has none (a malformed key is ignored by every member alike). */
export const shardsKeyOf = (
  prefix: string,
  key: string
): ShardsKey | { readonly _tag: "Malformed"; readonly reason: string } => {
  if (!key.startsWith(prefix)) return { _tag: "Malformed", reason: "not under the shards prefix" }
  const rest = key.slice(prefix.length)
  if (rest === "frozen") return { _tag: "Frozen" }
  const slash = rest.indexOf("/")
  const kind = rest.slice(0, slash)
  const name = rest.slice(slash + 1)
  if (slash > 0 && kind === "drains" && isMemberId(name)) return { _tag: "Drain", id: name }
  if (slash > 0 && (kind === "pins" || kind === "paused") && /^(0|[1-9][0-9]{0,5})$/.test(name)) {
    return { _tag: kind === "pins" ? "Pin" : "Paused", shard: Number(name) }
  }
  return { _tag: "Malformed", reason: "not drains/<member id>, pins/<shard>, paused/<shard> or frozen" }
}
