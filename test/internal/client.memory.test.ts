/**
 * What a client value and a MemoryEtcd service carry under their unexported symbols: found by the library's
 * accessors, invisible to users (not printed, compared or spread), and never read off a stand-in value.
 */
import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import { Etcd, type EtcdClient, MemoryEtcd } from "../../src/index.js"
import * as Client from "../../src/internal/client.js"
import * as Memory from "../../src/internal/etcd/memory.js"
import { throwsOnUse } from "../support/members.js"

describe("internals on service values", () => {
  it.scoped("a client of MemoryEtcd carries what its members share, and shows only its public members", () =>
    Effect.gen(function*() {
      const client = Context.get(yield* Layer.build(Etcd.layerMemory), Etcd)
      const shared = Client.of(client)
      expect(shared).toBeDefined()
      expect(Object.keys(client).sort()).toEqual(["connectTimeout", "endpoints", "requestTimeout"])
      expect(Client.of({ ...client })).toBeUndefined()
      expect(Memory.serverOf(yield* MemoryEtcd).clientOf(shared!.api)).toBe(1)
    }).pipe(Effect.provide(MemoryEtcd.layer)))

  it("a value the library did not make has no internals, and a stand-in is not read", () => {
    expect(Client.of({ endpoints: [], connectTimeout: 0, requestTimeout: 0 } as unknown as EtcdClient)).toBeUndefined()
    expect(Client.of(throwsOnUse<EtcdClient>())).toBeUndefined()
    expect(() => Memory.serverOf({})).toThrow("not a MemoryEtcd made by MemoryEtcd.make or MemoryEtcd.layer")
  })

  it.scoped("a server's faults reach its own clients only, not another server's", () =>
    Effect.gen(function*() {
      const other = yield* MemoryEtcd.make
      const memory = yield* MemoryEtcd
      const client = Context.get(yield* Layer.build(Etcd.layerMemory), Etcd)
      const api = Client.of(client)!.api
      expect(Memory.serverOf(other).clientOf(api)).toBeUndefined()
      yield* other.crash(client)
      yield* api.put("k", "v")
      yield* memory.crash(client)
      const refused = yield* Effect.flip(api.put("k", "w"))
      expect(refused._tag).toBe("EtcdUnavailable")
      expect(yield* memory.read("k")).toMatchObject([{ key: "k", value: "v" }])
    }).pipe(Effect.provide(MemoryEtcd.layer)))
})
