/**
 * A member's registration: its key under the client's shared lease, for the life of a scope (Curator's
 * `PersistentNode`). It writes the key, tells the member its Info from every view its key is in, notices when the
 * membership is lost (the lease lost, or the key gone from the view), registers again with the member's schedule,
 * and deletes its keys when it ends.
 *
 * Sections: the lease (`begin`); the standing (`dispatch`, `follow`: events through standing.ts); writes while the
 * key is the registration's own (`ownWrite`, `recordOf`); the key (`writeKey`, `createKey`, `removeKey`); visible
 * (`reachVisible`); the registration as the member sees it (`registrationOf`); an instance key's takeover
 * (`retryUnanswered`, `writeInstanceKey`); and `keepRegistered`, which registers again after a loss.
 */
import {
  Deferred,
  Duration,
  Effect,
  ExecutionStrategy,
  Exit,
  Fiber,
  Metric,
  Runtime,
  Schedule,
  Scope,
  SubscriptionRef
} from "effect"
import { EtcdUnavailable, InstanceTaken } from "../EtcdSeqError.js"
import type { EtcdSeqError } from "../EtcdSeqError.js"
import { Info } from "../Info.js"
import type { Shared } from "./client.js"
import * as Api from "./etcd/api.js"
import type { GroupWatch } from "./groupWatch.js"
import * as Keys from "./keys.js"
import type * as Lease from "./lease.js"
import * as LeaseTiming from "./leaseTiming.js"
import * as Metrics from "./metrics.js"
import * as OwnedKeys from "./ownedKeys.js"
import { backoff } from "./retry.js"
import type { Holder } from "./source.js"
import * as Standing from "./standing.js"
import * as View from "./view.js"

/** A membership's options, validated. */
export interface Settings {
  readonly key: string
  readonly ttl: Duration.Duration
  readonly metadata: string
  /** The member's stable name (static membership); its key is `@<instance>`, kept across incarnations. */
  readonly instance: string | undefined
  /** A leave parks the instance key for the TTL instead of deleting it: the next incarnation takes the place. */
  readonly keepPlaceOnLeave: boolean
  /** The member's weight in the shard plan (1: the default, not written in its record). */
  readonly weight: number
  readonly reregister: Schedule.Schedule<unknown, EtcdSeqError>
}

/** How a registration ended: its membership lost (the member registers again), or its key taken over (it does not). */
type Ended = Standing.Ended

export interface Registration {
  readonly holder: Holder
  readonly scope: Scope.CloseableScope
  /**
   * Calls `f` once with how the membership ended (its lease lost, its key gone from the view, or taken over), at once
   * if it already has. A callback, not a fiber waiting per member: members of a process can be many.
   */
  readonly whenEnded: (f: (ended: Ended) => void) => void
  /** Stops this registration from setting the member's Info (leaving, or lost). */
  readonly retire: Effect.Effect<void>
  /**
   * Rewrites the member's record with `shards` (and the move policy), as long as the key is still this
   * registration's: false when it is not (gone, or another incarnation's).
   */
  readonly rewrite: (shards: View.Declaration | undefined) => Effect.Effect<boolean, Api.RequestError>
  /** The shards (and move policy) the member's record declares, as this registration last wrote it. */
  readonly declared: () => View.Declaration | undefined
}

export interface Deps {
  readonly shared: Shared
  readonly settings: Settings
  readonly watch: GroupWatch
  /** Every registration's scope is a child of this one. */
  readonly parent: Scope.Scope
  /** Told of the member's Info in every view its key is in. Synchronous: it runs for every member on every view. */
  readonly setInfo: (info: Info, holder?: Holder) => void
  /** True once the member leaves (its scope closes), as opposed to a registration lost or taken over. */
  readonly leaving: () => boolean
  /** The shards the member declared (runShards), written in the record of every registration made later. */
  readonly shards: () => View.Declaration | undefined
}

/**
 * One registration: returns once the shared view holds the member's key. `earlier`: the ids of the member's earlier
 * registrations and attempts, empty for its first. A first registration with an instance takes the instance's key
 * over, whoever holds it (a newer incarnation wins); a later one writes it only while it is free or still held by
 * one of `earlier`, and fails with `InstanceTaken` otherwise. Each attempt adds its own id to `earlier` before it
 * writes: an attempt whose write landed but whose answer was lost must not read as another incarnation's.
 */
const register = (
  deps: Deps,
  earlier: Array<string>
): Effect.Effect<Registration, Api.RequestError | InstanceTaken> =>
  Effect.gen(function*() {
    const scope = yield* Scope.fork(deps.parent, ExecutionStrategy.sequential)
    return yield* Effect.gen(function*() {
      const reg = yield* begin(deps, earlier, scope)
      yield* follow(reg)
      const written = yield* writeKey(reg)
      yield* reachVisible(reg, written)
      return registrationOf(reg)
    }).pipe(
      Scope.extend(scope),
      Effect.onExit((exit) => Exit.isFailure(exit) ? Scope.close(scope, exit) : Effect.void),
      Effect.withSpan("EtcdSeq.register", { attributes: { group: deps.settings.key }, captureStackTrace: false })
    )
  })

/** One registration as its steps share it; `standing`, `declared` and `onEnded` are its only mutable parts. */
interface Reg {
  readonly deps: Deps
  readonly api: Api.EtcdApi
  readonly scope: Scope.CloseableScope
  readonly lease: Lease.LeaseSession
  readonly id: string
  readonly name: string
  readonly prefix: string
  readonly memberKey: string
  readonly handoverKey: string
  /** The first registration of the member: with an instance, it takes the instance's key over whoever holds it. */
  readonly takeOver: boolean
  readonly earlier: ReadonlyArray<string>
  /** Completed once the view has applied the member's write; failed when it did not in time. */
  readonly visible: Deferred.Deferred<void, EtcdUnavailable>
  /** Changed by `dispatch` only. */
  standing: Standing.Standing
  /**
   * The shards the record declares: the member's own once it runs runShards; until then, a new incarnation takes
   * its predecessor's over (see writeInstanceKey), so that a restart moves no shard of anyone's.
   */
  declared: View.Declaration | undefined
  onEnded: ((ended: Ended) => void) | undefined
}

// --- The lease, shared with the client's other members: the member itself is a key under it ---

const begin = (deps: Deps, earlier: Array<string>, scope: Scope.CloseableScope) =>
  Effect.gen(function*() {
    const { settings, shared } = deps
    const lease = yield* shared.leases.hold(settings.ttl)
    const id = Keys.memberId(lease.id, yield* shared.leases.unique)
    const takeOver = earlier.length === 0
    earlier.push(id)
    const name = settings.instance === undefined ? id : Keys.instanceName(settings.instance)
    const prefix = Keys.membersPrefix(settings.key)
    const reg: Reg = {
      deps,
      api: shared.api,
      scope,
      lease,
      id,
      name,
      prefix,
      memberKey: prefix + name,
      handoverKey: Keys.handoverKey(settings.key, id),
      takeOver,
      earlier,
      visible: yield* Deferred.make<void, EtcdUnavailable>(),
      standing: Standing.initial({ id, name }),
      declared: deps.shards(),
      onEnded: undefined
    }
    return reg
  })

// --- The standing: every event through the pure reducer (standing.ts), its outputs applied here ---

const dispatch = (reg: Reg, event: Standing.Event): void => {
  const [next, outputs] = Standing.step(reg.standing, event)
  reg.standing = next
  for (const output of outputs) {
    switch (output._tag) {
      case "Info":
        reg.deps.setInfo(output.info, output.holder)
        break
      case "Invalid":
        reg.deps.setInfo(Info.invalid)
        break
      case "Visible":
        Deferred.unsafeDone(reg.visible, Exit.void)
        break
      case "Ended":
        reg.onEnded?.(output.ended)
        break
    }
  }
}

/** The member's Info while its key is its own in the view, and the end once it is not, or once the lease is lost. */
const follow = (reg: Reg) =>
  Effect.gen(function*() {
    yield* reg.lease.onLost((reason) => dispatch(reg, { _tag: "LeaseLost", reason }))
    yield* reg.deps.watch.listen((view) => dispatch(reg, { _tag: "View", view }))
    yield* reg.lease.onFence((fenced) => dispatch(reg, { _tag: "Fenced", fenced }))
  })

// --- Writes to the member key while it is this registration's own (an instance key may become another's) ---

/**
 * Compared on the mod revision the registration last wrote; a compare that fails reads the key once, since a write
 * of its own whose answer was lost (the first put, say) moved it. Nothing written yet: compared on the key's
 * absence, so a delete after a put that never landed deletes nothing and one that did finds it.
 */
const ownWrite = (reg: Reg, ops: ReadonlyArray<Api.Op>) =>
  Effect.gen(function*() {
    const { memberKey } = reg
    let modRevision = reg.standing.written?.modRevision ?? 0
    for (let attempt = 0; attempt < 3; attempt++) {
      const result = yield* reg.api.txn({
        compare: [{ key: memberKey, target: "mod", result: "equal", value: modRevision }],
        success: ops,
        failure: [{ _tag: "Range", range: { target: { key: memberKey } } }]
      })
      if (result.succeeded) {
        dispatch(reg, { _tag: "Rewritten", modRevision: result.revision })
        return true
      }
      const kv = Api.rangeKv(result.results[0])
      const decoded = kv === undefined ? undefined : View.decode(reg.prefix, kv)
      if (decoded?._tag !== "Member" || decoded.entry.id !== reg.id) return false
      modRevision = kv!.modRevision
    }
    return false
  })

const recordOf = (reg: Reg, shards: View.Declaration | undefined) =>
  View.encodeValue(reg.deps.settings.metadata, {
    id: reg.deps.settings.instance === undefined ? undefined : reg.id,
    shards,
    weight: reg.deps.settings.weight
  })

// --- The key: its delete registered first; a leave deletes it with the member's handover key ---

const writeKey = (reg: Reg) =>
  Effect.gen(function*() {
    const { api, deps, lease, memberKey, handoverKey } = reg
    const { settings, shared } = deps
    const written = yield* OwnedKeys.hold(
      {
        api,
        keys: [memberKey, handoverKey],
        retryInBackground: shared.leases.retryInBackground,
        registry: shared.owned,
        leaseLost: lease.lost,
        deleteWithin: Duration.min(settings.ttl, api.requestTimeout),
        // A lost lease took the keys with it (or will within the TTL).
        gone: () => reg.standing.leaseLost,
        remove: () => removeKey(reg)
      },
      retryUnanswered(settings.ttl, createKey(reg))
    ).pipe(
      // The shared lease was revoked or expired and its keepalive has not noticed yet: drop it now, so the retry
      // gets a fresh one instead of failing against the dead one for a third of a TTL.
      Effect.tapError((e) => e._tag !== "InstanceTaken" && Api.isLeaseNotFound(e) ? lease.rejected : Effect.void)
    )
    const holder: Holder = {
      id: reg.id,
      name: reg.name,
      leaseId: lease.id,
      createRevision: written.createRevision,
      leaseLost: lease.lost
    }
    dispatch(reg, { _tag: "Written", written, holder })
    if (written.createRevision !== written.writtenAt) {
      yield* Effect.logInfo(
        `instance "${settings.instance}" takes its place back (joined at revision ${written.createRevision}) as ${reg.id}`
      )
    }
    // Runs before the delete: the member's own delete must not read as "key deleted, register again".
    yield* Scope.addFinalizer(reg.scope, Effect.sync(() => dispatch(reg, { _tag: "Retired" })))
    return written
  })

/** The first write: with the client's other joining members, or an instance's key taken over or back. */
const createKey = (reg: Reg): Effect.Effect<Standing.Written, Api.RequestError | InstanceTaken> => {
  const { deps, lease, memberKey } = reg
  const { settings, shared } = deps
  return settings.instance === undefined
    ? Effect.map(
      shared.memberWrites.create(memberKey, recordOf(reg, reg.declared), lease.id),
      (created): Standing.Written => ({ ...created, writtenAt: created.modRevision })
    )
    : shared.registrationWrites.withPermits(1)(writeInstanceKey({
      api: reg.api,
      group: settings.key,
      instance: settings.instance,
      key: memberKey,
      value: (inherited) => {
        reg.declared = deps.shards() ?? inherited
        return recordOf(reg, reg.declared)
      },
      leaseId: lease.id,
      earlier: reg.takeOver ? undefined : reg.earlier,
      background: shared.leases.retryInBackground
    }))
}

/**
 * With the client's other leaving members, in one transaction (see memberWrites.ts). An instance key is deleted (or
 * parked) only while it is still this registration's: a newer incarnation may hold it.
 */
const removeKey = (reg: Reg) => {
  const { api, deps, handoverKey, memberKey } = reg
  const { settings } = deps
  // A drain is the registration's: it goes with it (nothing if it never drained).
  const drainKey = Keys.drainKey(settings.key, reg.id)
  if (settings.instance === undefined) return deps.shared.memberWrites.remove([memberKey, handoverKey, drainKey])
  const release = settings.keepPlaceOnLeave && deps.leaving()
    ? Effect.flatMap(
      api.grant(LeaseTiming.ttlSeconds(settings.ttl)),
      (parking) =>
        ownWrite(reg, [
          {
            _tag: "Put",
            key: memberKey,
            // The place keeps its declaration: its shards wait for the next incarnation, as its index does.
            value: View.encodeValue(settings.metadata, {
              id: Keys.memberId(parking, 0),
              parked: true,
              shards: reg.declared,
              weight: settings.weight
            }),
            lease: parking
          },
          { _tag: "Delete", key: handoverKey },
          { _tag: "Delete", key: drainKey }
        ]).pipe(
          // Not parked (the key is another's): the parking lease holds nothing.
          Effect.tap((parked) => parked ? Effect.void : Effect.ignore(api.revoke(parking))),
          Effect.tapErrorCause(() => Effect.ignore(api.revoke(parking)))
        )
    )
    : ownWrite(reg, [{ _tag: "Delete", key: memberKey }, { _tag: "Delete", key: handoverKey }, {
      _tag: "Delete",
      key: drainKey
    }])
  return Effect.flatMap(
    release,
    (done) => done ? Effect.void : Effect.zipRight(api.delete(handoverKey), Effect.asVoid(api.delete(drainKey)))
  )
}

// --- Visible: registered once the shared view has applied the member's own join (it may have already) ---

/**
 * The put landed, so the wait is bounded by the TTL, not the request timeout: a watch that is slow to attach (its
 * stream reset off a silent etcd member) must not turn a join that worked into a failure and a second put.
 */
const reachVisible = (reg: Reg, written: Standing.Written) =>
  Effect.gen(function*() {
    const { api, deps } = reg
    dispatch(reg, { _tag: "View", view: yield* SubscriptionRef.get(deps.watch.view) })
    if (yield* Deferred.isDone(reg.visible)) return
    // Past the request timeout the wait says what it waits for: an overloaded process or watch, not etcd's answer.
    // One fiber keeps the time, not a race per member: five hundred members of a process join at once.
    const seeWithin = Duration.max(deps.settings.ttl, api.requestTimeout)
    const deadline = yield* Effect.gen(function*() {
      yield* Effect.sleep(api.requestTimeout)
      const view = yield* SubscriptionRef.get(deps.watch.view)
      yield* Effect.logWarning(
        `registered as ${reg.id} at revision ${written.writtenAt}; the group's view has applied revision ` +
          `${view.seen} so far; waiting up to ${Duration.format(seeWithin)} for it to show this member`
      )
      yield* Effect.sleep(Duration.subtract(seeWithin, api.requestTimeout))
      yield* Deferred.fail(reg.visible, new EtcdUnavailable({ endpoints: api.endpoints, timeout: seeWithin }))
    }).pipe(Effect.forkIn(reg.scope))
    yield* Deferred.await(reg.visible).pipe(Effect.ensuring(Fiber.interrupt(deadline)))
  })

// --- The registration as the member sees it ---

const registrationOf = (reg: Reg): Registration => ({
  holder: reg.standing.holder!,
  scope: reg.scope,
  whenEnded: (f) => {
    reg.onEnded = f
    if (reg.standing.ended !== undefined) f(reg.standing.ended)
  },
  retire: Effect.sync(() => dispatch(reg, { _tag: "Retired" })),
  rewrite: (shards) =>
    ownWrite(reg, [{ _tag: "Put", key: reg.memberKey, value: recordOf(reg, shards), lease: reg.lease.id }]).pipe(
      Effect.tap((written) => Effect.sync(() => written && void (reg.declared = shards)))
    ),
  declared: () => reg.declared
})

/**
 * A write of the member's key whose answer did not come may have landed: it is written again (both writes are
 * idempotent for the registration that makes them) with the library's backoff, for up to a TTL after the first
 * unanswered one, rather than failing the join. A failed join would be retried by the caller with a new key, and under
 * load (a join storm on a starved machine) those retries were the load: every process sees every extra join and leave.
 */
const retryUnanswered = <A, E extends Api.RequestError | InstanceTaken>(
  ttl: Duration.Duration,
  write: Effect.Effect<A, E>
): Effect.Effect<A, E> =>
  write.pipe(
    Effect.tapError((e) =>
      e._tag === "EtcdUnavailable" ? Effect.logInfo("member key write not answered; writing again", e) : Effect.void
    ),
    Effect.retry({
      schedule: backoff.pipe(Schedule.upTo(ttl)),
      while: (e) => e._tag === "EtcdUnavailable"
    })
  )

/**
 * Writes an instance's member key under this incarnation's lease. A put keeps the key's create revision, so a new
 * incarnation takes its predecessor's place; read back in the same transaction, since the place is the key's, not
 * the write's. Without `earlier` (a first registration) it takes the key whoever holds it; with, only while the key
 * is free, not a member's, or held by one of `earlier`: otherwise a newer incarnation holds it, `InstanceTaken`.
 * `value` makes the record from the shards the record found there declares (a parked place's, a crashed
 * predecessor's): the place keeps its declaration. Compared on what was read, so the two never disagree.
 */
const writeInstanceKey = (options: {
  readonly api: Api.EtcdApi
  readonly group: string
  readonly instance: string
  readonly key: string
  readonly value: (inherited: View.Declaration | undefined) => string
  readonly leaseId: string
  readonly earlier: ReadonlyArray<string> | undefined
  /** Runs an effect retried in the background, for the life of the client. */
  readonly background: (effect: Effect.Effect<unknown, unknown>) => Effect.Effect<void>
}): Effect.Effect<Standing.Written, Api.RequestError | InstanceTaken> =>
  Effect.gen(function*() {
    const { api, key } = options
    const prefix = Keys.membersPrefix(options.group)
    const read: Api.Op = { _tag: "Range", range: { target: { key } } }
    // Absent at first (a first start): one request. Present: it is read, and written again compared on that read.
    let compare: ReadonlyArray<Api.Compare> = [{ key, target: "create", result: "equal", value: 0 }]
    let inherited: View.Declaration | undefined
    // Each retry follows a write by someone else: a few in a row mean another incarnation is writing it.
    const attempts = 4
    for (let attempt = 0; attempt < attempts; attempt++) {
      const result = yield* api.txn({
        compare,
        success: [read, { _tag: "Put", key, value: options.value(inherited), lease: options.leaseId }, read],
        failure: [read]
      })
      if (result.succeeded) {
        // A place parked by a leave: its lease holds nothing more, it goes now rather than with its TTL.
        const before = Api.rangeKv(result.results[0])
        const parked = before === undefined ? undefined : View.decode(prefix, before)
        if (parked?._tag === "Member" && parked.entry.parked === true) {
          yield* options.background(Effect.ignore(api.revoke(before!.lease)))
        }
        const createRevision = Api.rangeKv(result.results[2])?.createRevision ?? result.revision
        return { createRevision, modRevision: result.revision, writtenAt: result.revision }
      }
      const kv = Api.rangeKv(result.results[0])
      const decoded = kv === undefined ? undefined : View.decode(prefix, kv)
      if (
        options.earlier !== undefined && decoded?._tag === "Member" && decoded.entry.parked !== true &&
        !options.earlier.includes(decoded.entry.id)
      ) {
        break
      }
      inherited = decoded?._tag === "Member" ? View.declarationOf(decoded.entry) : undefined
      // A first registration takes the key whoever holds it: its last try writes whatever the key holds by then.
      compare = kv === undefined
        ? [{ key, target: "create", result: "equal", value: 0 }]
        : options.earlier === undefined && attempt === attempts - 2
        ? []
        : [{ key, target: "mod", result: "equal", value: kv.modRevision }]
    }
    return yield* new InstanceTaken({ group: options.group, instance: options.instance })
  })

/**
 * Registers, then keeps the member registered for the life of `deps.parent`'s owner scope: when the membership is
 * lost, `lost` runs (the member goes invalid and its work stops), the lost registration closes (its keys deleted),
 * and a new one is made with the member's schedule. `gaveUp` runs when the schedule gives up, or at once when a newer
 * incarnation took the member's instance over: that one is never fought for (no flapping between the two).
 * `registered` is told of every registration.
 */
export const keepRegistered = (
  deps: Deps,
  memberScope: Scope.Scope,
  hooks: {
    readonly registered: (registration: Registration) => void
    readonly lost: (reason: string) => Effect.Effect<void>
    /** Waits, after `gaveUp` with `InstanceTaken`, until the member's work stopped. */
    readonly taken: Effect.Effect<void>
    readonly gaveUp: (error: EtcdSeqError) => Effect.Effect<void>
  }
): Effect.Effect<void, Api.RequestError | InstanceTaken> =>
  Effect.gen(function*() {
    // Re-registration runs in a fiber forked when the membership is lost, not in one per member waiting all along.
    const runtime = yield* Effect.runtime<never>()
    const earlier: Array<string> = []
    const follow = (registration: Registration): void => {
      hooks.registered(registration)
      registration.whenEnded((ended) =>
        Runtime.runFork(runtime)(
          Effect.forkIn(
            ended._tag === "Taken" ? yieldTo(registration, ended.by) : reregister(registration, ended.reason),
            memberScope
          )
        )
      )
    }
    const yieldTo = (taken: Registration, by: string) =>
      Effect.gen(function*() {
        yield* taken.retire
        yield* Effect.logWarning(`instance taken over by member ${by}; this member stops and does not register again`)
        // Failed first, so that work stops for the error, not for an invalid Info it could wait out.
        yield* hooks.gaveUp(new InstanceTaken({ group: deps.settings.key, instance: deps.settings.instance ?? "" }))
        yield* hooks.taken
        yield* Scope.close(taken.scope, Exit.void)
      })
    const reregister = (lost: Registration, reason: string) =>
      Effect.gen(function*() {
        // Retired first, so no view update can hand the lost registration an Info again.
        yield* lost.retire
        yield* Metric.increment(Metrics.leaseLosses)
        yield* Effect.logWarning(`membership lost: ${reason}; registering again`)
        yield* hooks.lost(reason)
        yield* Scope.close(lost.scope, Exit.void)
        const next = yield* register(deps, earlier).pipe(
          Effect.tapError((e) => Effect.logWarning("registration failed; retrying", e)),
          Effect.retry({ schedule: deps.settings.reregister, while: (e) => e._tag !== "InstanceTaken" })
        )
        yield* Metric.increment(Metrics.reregistrations)
        follow(next)
      }).pipe(
        Effect.catchAll((error) =>
          Effect.logError("re-registration gave up", error).pipe(Effect.zipRight(hooks.gaveUp(error)))
        )
      )
    // A first registration whose write found the client's shared lease gone (fenced and expired while the write
    // waited its turn, under load) joins under a fresh lease rather than failing: the failure is the lease's, not
    // the member's.
    follow(
      yield* register(deps, earlier).pipe(
        Effect.retry({
          schedule: backoff,
          times: 3,
          while: (e) => e._tag !== "InstanceTaken" && Api.isLeaseNotFound(e)
        })
      )
    )
  })
