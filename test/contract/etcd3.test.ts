/**
 * The seam's contract against a real etcd (the `etcd3` implementation).
 */
import { layer } from "@effect/vitest"
import { Clock, Effect } from "effect"
import { EtcdEndpoints } from "../support/etcd.js"
import { client, sharedOf, uniqueGroup } from "../support/members.js"
import { admin } from "../support/reliability.js"
import { contract } from "./seam.js"

layer(EtcdEndpoints.layer, { timeout: "60 seconds", excludeTestServices: true })("seam contract: etcd", (it) => {
  contract<EtcdEndpoints>((name, body) => it.scoped(name, body, 30_000), {
    client: Effect.map(client, (etcd) => sharedOf(etcd).api),
    advance: (duration) => Effect.sleep(duration),
    until: (check, what) =>
      Effect.gen(function*() {
        // etcd looks for expired leases every 500 ms; a second is plenty on top of the TTL.
        const deadline = (yield* Clock.currentTimeMillis) + 3_000
        while (!(yield* check)) {
          if ((yield* Clock.currentTimeMillis) > deadline) return yield* Effect.dieMessage(`not within 3 s: ${what}`)
          yield* Effect.sleep("50 millis")
        }
      }),
    compact: (revision) =>
      Effect.scoped(Effect.gen(function*() {
        const { endpoints } = yield* EtcdEndpoints
        const etcd = yield* admin(endpoints)
        yield* Effect.promise(() => etcd.kv.compact({ revision: String(revision), physical: true }))
      })),
    prefix: (name) => `${uniqueGroup(name)}/`
  })
})
