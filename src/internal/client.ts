/**
 * The client's shape (`Etcd.EtcdClient` is this interface) and what the members of one client share: the seam to its
 * etcd, one watch of each group, of each group's handover values, shard claims, shard controls and index locks, one lease per TTL,
 * and the registry of the keys it holds under its leases. The client value carries them under `TypeId`, a symbol the
 * package does not export, so users see only its public members. The shape lives here, not in `Etcd.ts`, so that
 * `Etcd.ts` and `MemoryEtcd.ts` both use it without importing each other.
 *
 * A watch, once opened, stays open for the client's life: each also sweeps the keys a write of this client's landed
 * late under its leases (ownedKeys.ts), which can happen any time its leases live.
 */
import { Duration, Effect, RcMap, type Scope } from "effect"
import { InvalidOptions } from "../EtcdSeqError.js"
import * as Claims from "./claims.js"
import * as ControlsWatch from "./controlsWatch.js"
import type * as Api from "./etcd/api.js"
import type { Etcd3 } from "./etcd/etcd3.js"
import * as GroupWatch from "./groupWatch.js"
import * as Handover from "./handover.js"
import * as LeasePool from "./leasePool.js"
import * as Lock from "./lock.js"
import * as MemberWrites from "./memberWrites.js"
import * as OwnedKeys from "./ownedKeys.js"

/** The key of a client's internals on the client value; not exported by the package. */
export const TypeId: unique symbol = Symbol.for("effect-etcdseq/EtcdClient")
export type TypeId = typeof TypeId

/**
 * The service: a client of one etcd, connected and proven. The members of a group that share one client share its
 * watch of the group and its lease (one per TTL).
 */
export interface EtcdClient {
  /** Where its requests go: the endpoints it was given, or `memory://client-<n>` for a client of `MemoryEtcd`. */
  readonly endpoints: ReadonlyArray<string>
  readonly connectTimeout: Duration.Duration
  readonly requestTimeout: Duration.Duration
  /** The `etcd3` client behind it, for requests of your own; absent on a client of `MemoryEtcd`. */
  readonly client?: Etcd3 | undefined
  /** What its members share; absent on a client value this library did not make. */
  readonly [TypeId]?: Shared | undefined
}

export interface Shared {
  readonly api: Api.EtcdApi
  /** One shared watch per group, held while any member of the group on this client holds it. */
  readonly groups: RcMap.RcMap<string, GroupWatch.GroupWatch, Api.RequestError>
  /** One shared watch of each group's handover keys (`runAssigned` with `exclusive: "group"`). */
  readonly handovers: RcMap.RcMap<string, Handover.HandoverWatch, Api.RequestError>
  /** One shared watch of each group's shard claims (`runShards`). */
  readonly claims: RcMap.RcMap<string, Claims.ClaimsWatch, Api.RequestError>
  /** One shared watch of each group's shard controls and drains (`<group>/shards/`: runShards, drain, observe). */
  readonly controls: RcMap.RcMap<string, ControlsWatch.ControlsWatch, Api.RequestError>
  /** One shared watch of each group's index locks (`"index"` mode, `observe`). */
  readonly locks: RcMap.RcMap<string, Lock.LocksWatch, Api.RequestError>
  /** The keys this client means to hold under its leases; its watches sweep the others. */
  readonly owned: OwnedKeys.Registry
  /** The client's leases, one per TTL, shared by its members. */
  readonly leases: LeasePool.LeasePool
  /** Its members' keys, created a batch at a time (see memberWrites.ts). */
  readonly memberWrites: MemberWrites.MemberWrites
  /**
   * The budget of instance key writes in flight on this client, retries included: five hundred members of one
   * process joining at once write in waves, so the answers (and the keepalive's among them) are read as they come
   * rather than behind hundreds of others on a starved event loop, and a slow moment is not met by hundreds of retries.
   */
  readonly registrationWrites: Effect.Semaphore
}

/** Instance key writes in flight per client (see `Shared.registrationWrites`). */
const registrationWritesInFlight = 32

/**
 * `pacing`: how group views reach members in a burst of changes (see `GroupWatch.Pacing`); none, every view at once.
 */
export const make = (
  api: Api.EtcdApi,
  pacing?: GroupWatch.Pacing | undefined
): Effect.Effect<Shared, never, Scope.Scope> =>
  Effect.gen(function*() {
    const leases = yield* LeasePool.makePool(api)
    const owned = yield* OwnedKeys.makeRegistry(api, leases.granted)
    const sweep = owned.sweep
    const forLife = { idleTimeToLive: Duration.infinity }
    const groups = yield* RcMap.make({
      lookup: (group: string) => GroupWatch.make(api, group, pacing, sweep),
      ...forLife
    })
    const handovers = yield* RcMap.make({ lookup: (group: string) => Handover.watch(api, group, sweep), ...forLife })
    const claims = yield* RcMap.make({ lookup: (group: string) => Claims.watch(api, group, sweep), ...forLife })
    const controls = yield* RcMap.make({ lookup: (group: string) => ControlsWatch.watch(api, group), ...forLife })
    // Followed while observed only (members do not: see lock.ts); a late lock write is swept as a suspect.
    const locks = yield* RcMap.make({ lookup: (group: string) => Lock.watch(api, group, sweep) })
    const memberWrites = yield* MemberWrites.make(api)
    const registrationWrites = yield* Effect.makeSemaphore(registrationWritesInFlight)
    return { api, groups, handovers, claims, controls, locks, owned, leases, memberWrites, registrationWrites }
  })

// --- The internals on the client value ---

/**
 * The client value, carrying what its members share. The property is neither enumerable nor writable: the client
 * prints, compares and spreads as its public members alone.
 */
export const attach = <A extends EtcdClient>(client: Omit<A, TypeId>, shared: Shared): A =>
  Object.defineProperty(client, TypeId, { value: shared, enumerable: false, writable: false, configurable: false }) as A

/**
 * What a client value shares, when this library made it. Asked with `in` first: a stand-in client (a Proxy in tests)
 * is not read.
 */
export const of = (client: EtcdClient): Shared | undefined =>
  typeof client === "object" && client !== null && TypeId in client ? client[TypeId] : undefined

/** The shared internals of the client in context, or `InvalidOptions` for a client this library did not make. */
export const required = (client: EtcdClient): Effect.Effect<Shared, InvalidOptions> => {
  const shared = of(client)
  return shared === undefined
    ? Effect.fail(
      new InvalidOptions({
        field: "Etcd",
        reason: "the Etcd service in context was not made by Etcd.make, Etcd.layer or Etcd.layerMemory"
      })
    )
    : Effect.succeed(shared)
}
