/**
 * A member written by a plain etcd client, as this library writes members, with a group-mode handover value that
 * never holds anyone up. A test replaces it in one transaction (one member leaves and one joins in a single view):
 * the members before it then see a new view in which their share is unchanged.
 */
import { Effect, type Scope } from "effect"
import type { Etcd3 } from "etcd3"

export interface ForeignMember {
  /** Replaces the current member by the next one, in one transaction. */
  readonly replace: Effect.Effect<void>
  /** Revokes its lease: the member leaves. */
  readonly remove: Effect.Effect<void>
}

export const foreignMember = (client: Etcd3, group: string): Effect.Effect<ForeignMember, never, Scope.Scope> =>
  Effect.gen(function*() {
    const lease = client.lease(60, { autoKeepAlive: true })
    const remove = Effect.promise(() => lease.revoke().catch(() => undefined))
    yield* Effect.addFinalizer(() => remove)
    const leaseId = yield* Effect.promise(() => lease.grant())
    const hex = BigInt(leaseId).toString(16)
    const keys = (n: number) => ({ member: `${group}/members/${hex}_${n}`, handover: `${group}/handover/${hex}_${n}` })
    const puts = (n: number) => [
      client.put(keys(n).member).value(JSON.stringify({ v: 1, metadata: "foreign" })).lease(leaseId),
      client.put(keys(n).handover).value(String(Number.MAX_SAFE_INTEGER)).lease(leaseId)
    ]
    yield* Effect.promise(() => Promise.all(puts(0).map((p) => p.exec())))
    let n = 0
    return {
      replace: Effect.promise(() =>
        client.if(keys(n).member, "Create", ">", 0)
          .then(client.delete().key(keys(n).member), client.delete().key(keys(n).handover), ...puts(n + 1))
          .commit()
      ).pipe(Effect.zipRight(Effect.sync(() => void n++))),
      remove
    }
  })
