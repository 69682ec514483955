/**
 * The controls watch's drains over the in-memory etcd: a drain key counts only under the lease its member id names,
 * and a drain whose key went stays in effect (its member leaves with it: the view, another watch, may see that later).
 */
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect } from "effect"
import { MemoryEtcd } from "../../src/index.js"
import * as ControlsWatch from "../../src/internal/controlsWatch.js"
import * as Memory from "../../src/internal/etcd/memory.js"
import * as Keys from "../../src/internal/keys.js"
import { settle } from "../support/testClock.js"

describe("ControlsWatch drains", () => {
  it.scoped("a drain key under its member's lease drains it; once the key goes, the member stays drained", () =>
    Effect.gen(function*() {
      const server = Memory.serverOf(yield* MemoryEtcd)
      const api = server.api(server.connect(), Duration.seconds(5))
      const lease = yield* api.grant(10)
      const other = yield* api.grant(10)
      const id = Keys.memberId(lease, 0)
      const watch = yield* ControlsWatch.watch(api, "g")
      const drains = () => [...watch.current().drains]

      // Under another lease than its id names: ignored.
      yield* api.put(Keys.drainKey("g", id), "", other)
      yield* settle
      expect(drains()).toEqual([])
      yield* api.put(Keys.drainKey("g", id), "", lease)
      yield* settle
      expect(drains()).toEqual([id])
      const text = watch.current().text

      // The key goes (the member's leave): still drained, and the plans' key unchanged.
      yield* api.delete(Keys.drainKey("g", id))
      yield* settle
      expect([drains(), [...watch.current().ended], watch.current().text]).toEqual([[id], [id], text])
    }).pipe(Effect.provide(MemoryEtcd.layer)))
})
