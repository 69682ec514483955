/**
 * The operator's writes to a group's shard plan (`etcdseq shards ...`, `etcdseq drain`): plain etcd writes under
 * `<group>/shards/` (keys.ts), which every member's controls watch (controlsWatch.ts) reads. Pins, pauses and the
 * freeze are written without a lease (they stay until lifted); a drain is written under the drained member's lease,
 * so it goes with the member.
 */
import { Effect } from "effect"
import { encodeFrozen } from "./controlsWatch.js"
import type * as Api from "./etcd/api.js"
import * as Keys from "./keys.js"
import type { ControlledPlan } from "./shardPlan.js"
import * as View from "./view.js"

/** Shard `shard` to run at the member with instance (or name) `to`, while it is live and not draining. */
export const pin = (api: Api.EtcdApi, group: string, shard: number, to: string) =>
  Effect.asVoid(api.put(Keys.pinKey(group, shard), to))

export const unpin = (api: Api.EtcdApi, group: string, shard: number) =>
  Effect.asVoid(api.delete(Keys.pinKey(group, shard)))

/** Nobody runs `shard` (its running work stops) until it is resumed. */
export const pause = (api: Api.EtcdApi, group: string, shard: number) =>
  Effect.asVoid(api.put(Keys.pausedKey(group, shard), ""))

export const resume = (api: Api.EtcdApi, group: string, shard: number) =>
  Effect.asVoid(api.delete(Keys.pausedKey(group, shard)))

/** No planned moves from now on: each shard stays with `owners[shard]` (by member name) while it is live. */
export const freeze = (api: Api.EtcdApi, group: string, owners: ControlledPlan) =>
  Effect.asVoid(api.put(Keys.frozenKey(group), encodeFrozen(owners)))

export const thaw = (api: Api.EtcdApi, group: string) => Effect.asVoid(api.delete(Keys.frozenKey(group)))

/** A member as `drain` finds it: its id and the lease its keys are bound to. */
export interface Found {
  readonly id: string
  readonly lease: string
}

/**
 * The live member with instance `instance` (its key `@<instance>`), or with id `id`, read from its key: the lease
 * its record is bound to. `undefined` when there is none (or its key is not a member's).
 */
export const findMember = (
  api: Api.EtcdApi,
  group: string,
  target: { readonly instance: string } | { readonly id: string }
): Effect.Effect<Found | undefined, Api.RequestError> =>
  Effect.gen(function*() {
    const prefix = Keys.membersPrefix(group)
    if ("instance" in target) {
      const [kv] = (yield* api.range({ target: { key: prefix + Keys.instanceName(target.instance) } })).kvs
      const decoded = kv === undefined ? undefined : View.decode(prefix, kv)
      return decoded?._tag === "Member" && decoded.entry.parked !== true
        ? { id: decoded.entry.id, lease: kv!.lease }
        : undefined
    }
    // A member without an instance has its id as key; one with an instance names its id in its record.
    const { kvs } = yield* api.range({ target: { prefix } })
    for (const kv of kvs) {
      const decoded = View.decode(prefix, kv)
      if (decoded._tag === "Member" && decoded.entry.id === target.id && decoded.entry.parked !== true) {
        return { id: decoded.entry.id, lease: kv.lease }
      }
    }
    return undefined
  })

/** Asks `member` to drain: its drain key under its own lease (gone with the member, deleted by its leave). */
export const drain = (api: Api.EtcdApi, group: string, member: Found) =>
  Effect.asVoid(api.put(Keys.drainKey(group, member.id), "", member.lease))
