import { describe, expect, it, layer } from "@effect/vitest"
import { Cause, Clock, ConfigProvider, Effect, Exit, Layer, Option, Redacted, Stream } from "effect"
import * as net from "node:net"
import type { EtcdClient } from "../src/Etcd.js"
import { Etcd, EtcdSeq, EtcdSeqLive, type EtcdSeqOptions } from "../src/index.js"
import { watchStream } from "../src/internal/prefixCache.js"
import { EtcdEndpoints } from "./support/etcd.js"
import { forward, GrpcCode, startGrpcProxy } from "./support/grpcProxy.js"
import { client, clientBehindProxy, ic, record, sharedOf, strip, throwsOnUse, uniqueGroup } from "./support/members.js"

/** A loopback port that nothing listens on (bound, then released). */
const closedPort = Effect.async<number>((resume) => {
  const server = net.createServer()
  server.listen(0, "127.0.0.1", () => {
    const { port } = server.address() as net.AddressInfo
    server.close(() => resume(Effect.succeed(port)))
  })
})

/** A loopback server that accepts connections and never answers: a hung etcd, not a refused one. */
const blackhole = Effect.acquireRelease(
  Effect.async<{ server: net.Server; sockets: Set<net.Socket>; port: number }>((resume) => {
    const sockets = new Set<net.Socket>()
    const server = net.createServer((socket) => {
      sockets.add(socket)
      socket.on("close", () => sockets.delete(socket))
    })
    server.listen(
      0,
      "127.0.0.1",
      () => resume(Effect.succeed({ server, sockets, port: (server.address() as net.AddressInfo).port }))
    )
  }),
  ({ server, sockets }) =>
    Effect.async<void>((resume) => {
      for (const socket of sockets) socket.destroy()
      server.close(() => resume(Effect.void))
    })
)

const timed = <A, E, R>(self: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const start = yield* Clock.currentTimeMillis
    const exit = yield* Effect.exit(self)
    return { exit, millis: (yield* Clock.currentTimeMillis) - start }
  })

const failureTag = <A, E extends { _tag: string }>(exit: Exit.Exit<A, E>) =>
  Exit.match(exit, {
    onFailure: (cause) => cause._tag === "Fail" ? cause.error._tag : `defect: ${String(cause)}`,
    onSuccess: () => "success"
  })

describe("Etcd", () => {
  it.live("an endpoint that refuses connections fails the layer with EtcdUnavailable within the timeout", () =>
    Effect.gen(function*() {
      const port = yield* closedPort
      const { exit, millis } = yield* timed(
        Effect.scoped(Etcd.make({ endpoints: [`http://127.0.0.1:${port}`], connectTimeout: "1 second" }))
      )
      expect(failureTag(exit)).toBe("EtcdUnavailable")
      expect(millis).toBeLessThan(2_000)
    }))

  it.live("an endpoint that never answers fails with EtcdUnavailable after the connect timeout, not a hang", () =>
    Effect.gen(function*() {
      const { port } = yield* blackhole
      const { exit, millis } = yield* timed(
        Effect.scoped(Etcd.make({ endpoints: [`http://127.0.0.1:${port}`], connectTimeout: "1 second" }))
      )
      expect(failureTag(exit)).toBe("EtcdUnavailable")
      expect(millis).toBeGreaterThanOrEqual(900)
      expect(millis).toBeLessThan(2_500)
    }).pipe(Effect.scoped))

  it.live("EtcdSeqLive with an unreachable ETCD_ENDPOINTS fails with EtcdUnavailable", () =>
    Effect.gen(function*() {
      const port = yield* closedPort
      const { exit, millis } = yield* timed(
        EtcdSeq.current.pipe(
          Effect.provide(EtcdSeqLive),
          Effect.withConfigProvider(ConfigProvider.fromMap(
            new Map([
              ["ETCDSEQ_KEY", "unreachable"],
              ["ETCD_ENDPOINTS", `http://127.0.0.1:${port}`],
              ["ETCD_CONNECT_TIMEOUT", "1 second"]
            ])
          ))
        )
      )
      expect(failureTag(exit)).toBe("EtcdUnavailable")
      expect(millis).toBeLessThan(2_000)
    }))

  it.live("EtcdSeqLive with a bad ETCDSEQ_KEY fails with InvalidOptions before any I/O", () =>
    Effect.gen(function*() {
      const port = yield* closedPort
      const { exit, millis } = yield* timed(
        EtcdSeq.current.pipe(
          Effect.provide(EtcdSeqLive),
          Effect.withConfigProvider(ConfigProvider.fromMap(
            new Map([["ETCDSEQ_KEY", "a/members"], ["ETCD_ENDPOINTS", `http://127.0.0.1:${port}`]])
          ))
        )
      )
      expect(Exit.isFailure(exit) && Option.getOrUndefined(Cause.failureOption(exit.cause))).toMatchObject({
        _tag: "InvalidOptions",
        field: "key"
      })
      // Not after the connect timeout (5 s): no connection was tried.
      expect(millis).toBeLessThan(1_000)
    }))

  it.live("EtcdSeqLive without ETCDSEQ_KEY fails with a ConfigError", () =>
    Effect.gen(function*() {
      const exit = yield* EtcdSeq.current.pipe(
        Effect.provide(EtcdSeqLive),
        Effect.withConfigProvider(ConfigProvider.fromMap(new Map())),
        Effect.exit
      )
      expect(Exit.isFailure(exit) && String(exit.cause)).toContain("ETCDSEQ_KEY")
    }))

  it.effect.each(
    [
      [{ endpoints: [] }, "endpoints"],
      [{ endpoints: ["127.0.0.1:2379"] }, "endpoints"],
      [{ endpoints: ["ftp://127.0.0.1:2379"] }, "endpoints"],
      [{ endpoints: ["http://127.0.0.1"] }, "endpoints"],
      [{ endpoints: ["http://127.0.0.1:2379/v3"] }, "endpoints"],
      [{ endpoints: ["not a url"] }, "endpoints"],
      [{ endpoints: ["http://127.0.0.1:2379"], connectTimeout: 0 }, "connectTimeout"],
      [{ endpoints: ["http://127.0.0.1:2379"], connectTimeout: "forever" }, "connectTimeout"],
      [{ endpoints: ["http://127.0.0.1:2379"], requestTimeout: "-1 seconds" }, "requestTimeout"],
      [{ endpoints: ["http://127.0.0.1:2379"], requestTimeout: Infinity }, "requestTimeout"],
      // Past Node's timer limit (24.8 days) every keepalive would fail at once.
      [{ endpoints: ["http://127.0.0.1:2379"], requestTimeout: "25 days" }, "requestTimeout"],
      [{ endpoints: ["http://127.0.0.1:2379"], connectTimeout: "2 hours" }, "connectTimeout"],
      [{ endpoints: ["http://127.0.0.1:2379", "https://127.0.0.1:2380"] }, "endpoints"],
      [{ endpoints: ["http://:secret@127.0.0.1:2379"] }, "endpoints"],
      [{ endpoints: ["http://user:secret@127.0.0.1:2379"] }, "endpoints"],
      [{ endpoints: ["https://127.0.0.1:2379"], tls: { rootCertificate: "PEM" } }, "tls.rootCertificate"],
      [
        { endpoints: ["https://127.0.0.1:2379"], tls: { rootCertificate: Buffer.from("not a certificate") } },
        "tls.rootCertificate"
      ],
      [
        { endpoints: ["https://127.0.0.1:2379"], tls: { privateKey: Redacted.make(Buffer.from("k")) } },
        "tls.certChain"
      ],
      [
        {
          endpoints: ["https://127.0.0.1:2379"],
          tls: { privateKey: Redacted.make(Buffer.from("k")), certChain: Buffer.from("c") }
        },
        "tls.certChain"
      ],
      [{ endpoints: ["http://127.0.0.1:2379"], tls: { rootCertificate: Buffer.from("") } }, "tls"],
      [{ endpoints: ["http://127.0.0.1:2379"], auth: { username: "u", password: "secret" } }, "auth.password"],
      [
        { endpoints: ["http://127.0.0.1:2379"], auth: { username: "", password: Redacted.make("secret") } },
        "auth.username"
      ],
      [undefined, "options"]
    ] as const
  )("bad client option %# gets InvalidOptions naming the field", ([options, field]) =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Effect.scoped(Etcd.make(options as never)))
      expect(error).toMatchObject({ _tag: "InvalidOptions", field })
      expect(error.message).toContain(field)
      // A secret given where it does not belong is never printed.
      expect(error.message).not.toContain("secret")
      expect(JSON.stringify(error)).not.toContain("secret")
    }))

  it.live.each(["http://127.0.0.1:80", "https://127.0.0.1:443"])(
    "an endpoint on its scheme's default port (%s) is accepted",
    (endpoint) =>
      Effect.gen(function*() {
        const exit = yield* Effect.exit(
          Effect.scoped(Etcd.make({ endpoints: [endpoint], connectTimeout: "300 millis" }))
        )
        // Nothing answers there: the options were accepted and the connection attempt failed.
        expect(failureTag(exit)).toBe("EtcdUnavailable")
      })
  )
})

describe("EtcdSeq options", () => {
  // A client that throws on any use: InvalidOptions must come before any I/O.
  const noIo = Layer.succeed(Etcd, throwsOnUse<EtcdClient>())
  const big = "x".repeat(1024 * 1024)
  it.effect.each(
    [
      [{ key: "" }, "key"],
      [{ key: "   " }, "key"],
      [{ key: "/a" }, "key"],
      [{ key: "a/" }, "key"],
      [{ key: "a//b" }, "key"],
      [{ key: "a b" }, "key"],
      [{ key: "a/members" }, "key"],
      [{ key: "a/handover" }, "key"],
      [{ key: "a/claims/b" }, "key"],
      [{ key: "locks/a" }, "key"],
      [{ key: "a/../b" }, "key"],
      [{ key: "k".repeat(513) }, "key"],
      [{ key: "ok", ttl: 0 }, "ttl"],
      [{ key: "ok", ttl: "-5 seconds" }, "ttl"],
      [{ key: "ok", ttl: "500 millis" }, "ttl"],
      [{ key: "ok", ttl: "25 hours" }, "ttl"],
      [{ key: "ok", ttl: Infinity }, "ttl"],
      [{ key: "ok", ttl: "soon" }, "ttl"],
      [{ key: "ok", metadata: big }, "metadata"],
      [{ key: "ok", metadata: 5 }, "metadata"],
      [undefined, "options"]
    ] as const
  )("bad membership option %# gets InvalidOptions naming the field", ([options, field]) =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(Effect.scoped(EtcdSeq.make(options as EtcdSeqOptions)))
      expect(error).toMatchObject({ _tag: "InvalidOptions", field })
    }).pipe(Effect.provide(noIo)))
})

describe("runAssigned options", () => {
  it.effect("an unknown exclusive mode gets InvalidOptions before anything runs", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(
        EtcdSeq.runAssigned(() => Effect.void, { exclusive: "all" as never }).pipe(
          Effect.provideService(EtcdSeq, throwsOnUse())
        )
      )
      expect(error).toMatchObject({ _tag: "InvalidOptions", field: "exclusive" })
    }))
})

layer(EtcdEndpoints.layer, { timeout: "60 seconds", excludeTestServices: true })("connection proof", (it) => {
  it.scoped("a client connects where etcd refuses Maintenance/Status to its user (etcd >= 3.5.28 with auth)", () =>
    Effect.gen(function*() {
      const { endpoints } = yield* EtcdEndpoints
      const proxy = yield* startGrpcProxy(endpoints[0]!)
      yield* proxy.setRule(({ method }) =>
        method === "/etcdserverpb.Maintenance/Status"
          ? { _tag: "Refuse", code: GrpcCode.PermissionDenied, message: "etcdserver: permission denied" }
          : forward
      )
      const etcd = yield* Etcd.make({ endpoints: [proxy.endpoint], connectTimeout: "3 seconds" })
      const seq = yield* EtcdSeq.make({ key: uniqueGroup("no-status") }).pipe(Effect.provideService(Etcd, etcd))
      expect(String(yield* seq.current)).toMatch(/^0\/1@/)
    }))

  it.scoped("a client of several endpoints connects while the cluster elects a leader, one member down", () =>
    Effect.gen(function*() {
      const { endpoints } = yield* EtcdEndpoints
      const proxy = yield* startGrpcProxy(endpoints[0]!)
      // A member without a leader fails a linearizable read: the proof's first attempts all fail, on both hosts.
      let refused = 0
      yield* proxy.setRule(({ method }) =>
        method === "/etcdserverpb.KV/Range" && refused++ < 2
          ? { _tag: "Refuse", code: GrpcCode.Unavailable, message: "etcdserver: no leader" }
          : forward
      )
      const down = `http://127.0.0.1:${yield* closedPort}`
      const etcd = yield* Etcd.make({ endpoints: [down, proxy.endpoint], connectTimeout: "5 seconds" })
      const seq = yield* EtcdSeq.make({ key: uniqueGroup("election") }).pipe(Effect.provideService(Etcd, etcd))
      expect(String(yield* seq.current)).toMatch(/^0\/1@/)
    }))

  it.scoped("a client whose every request etcd refuses (bad credentials) fails with EtcdRequestFailed", () =>
    Effect.gen(function*() {
      const { endpoints } = yield* EtcdEndpoints
      const proxy = yield* startGrpcProxy(endpoints[0]!)
      yield* proxy.setRule(() => ({
        _tag: "Refuse",
        code: 16,
        message: "etcdserver: authentication failed, invalid user ID or password"
      }))
      const exit = yield* Effect.exit(Etcd.make({ endpoints: [proxy.endpoint], connectTimeout: "3 seconds" }))
      expect(failureTag(exit)).toBe("EtcdRequestFailed")
    }))
})

/** A member of a new group (TTL 10 s) on `etcd`, once it holds its first Info, and the Infos it records. */
const recordedMember = (etcd: EtcdClient, name: string) =>
  Effect.gen(function*() {
    const seq = yield* EtcdSeq.make({ key: uniqueGroup(name), ttl: "10 seconds" }).pipe(
      Effect.provideService(Etcd, etcd)
    )
    const infos = yield* record(seq)
    yield* infos.atLeast(1)
    return infos
  })

layer(EtcdEndpoints.layer, { timeout: "60 seconds", excludeTestServices: true })("the client's connection", (it) => {
  it.scoped("keepalives given up past their timeout leave the client's connection open", () =>
    Effect.gen(function*() {
      const { etcd, proxy } = yield* clientBehindProxy({ requestTimeout: "1 second" })
      const infos = yield* recordedMember(etcd, "abandoned")
      // etcd's answers are held for 4 s (time must pass): the keepalive due 1.7 s after the grant, and those started
      // every second after it, time out and are given up.
      yield* proxy.holdDown
      yield* Effect.sleep("4 seconds")
      yield* proxy.releaseDown(() => {})
      // A request after: over the same connection, or over a new one if giving a keepalive up closed it.
      yield* Effect.promise(() => etcd.client.get("any").string())
      expect(yield* proxy.connections).toBe(1)
      expect(strip(yield* infos.infos)).toEqual(["0/1"])
    }))

  it.scoped("requests past their deadline leave the client's connection open", () =>
    Effect.gen(function*() {
      const { etcd, proxy } = yield* clientBehindProxy({ requestTimeout: "1 second" })
      const read = Effect.tryPromise(() => etcd.client.get("any").string())
      // etcd's answers are held past the deadlines of a read's three attempts (time must pass)...
      yield* proxy.holdDown
      expect((yield* Effect.either(read))._tag).toBe("Left")
      yield* proxy.releaseDown(() => {})
      // ...and the next read goes over the same connection.
      yield* read
      expect(yield* proxy.connections).toBe(1)
    }))

  it.scoped("the last member of a client leaving leaves the client's connection open", () =>
    Effect.gen(function*() {
      const { etcd, proxy } = yield* clientBehindProxy()
      const group = uniqueGroup("last")
      // Its leave ends the client's last watch, and etcd3 then cancels the client's watch stream.
      yield* Effect.scoped(EtcdSeq.make({ key: group }).pipe(Effect.provideService(Etcd, etcd)))
      const next = yield* EtcdSeq.make({ key: group }).pipe(Effect.provideService(Etcd, etcd))
      expect(ic(yield* next.current)).toBe("0/1")
      expect(yield* proxy.connections).toBe(1)
    }))

  it.scoped("an event loop stalled 1.5 s at a time keeps its connection, and its member its Info", () =>
    Effect.gen(function*() {
      const { etcd, proxy } = yield* clientBehindProxy()
      const infos = yield* recordedMember(etcd, "starved")
      // Starved: every turn of the event loop runs 1.5 s of other work first, for 12 s. gRPC pings every 5 s and
      // judges the answer on a timer, which comes due while the answer waits in the socket behind the next stall.
      yield* Effect.async<void>((resume) => {
        const until = performance.now() + 12_000
        const stall = () => {
          const end = Math.min(until, performance.now() + 1_500)
          while (performance.now() < end) {
            // busy: the event loop is stalled
          }
          if (performance.now() >= until) resume(Effect.void)
          else setTimeout(stall, 0)
        }
        setTimeout(stall, 0)
      })
      // A request after the stalls: over the same connection, or over a new one if the ping closed it.
      yield* Effect.promise(() => etcd.client.get("any").string())
      expect(yield* proxy.connections).toBe(1)
      expect(strip(yield* infos.infos)).toEqual(["0/1"])
    }))
})

layer(EtcdEndpoints.layer, { timeout: "60 seconds", excludeTestServices: true })("watch boundary", (it) => {
  it.scoped("a watch from a compacted revision is cancelled, which the group watch answers with a re-read", () =>
    Effect.gen(function*() {
      const etcd = yield* client
      const prefix = `${uniqueGroup("compacted")}/members/`
      yield* Effect.promise(() => etcd.client.put(`${prefix}x`).value("1").exec())
      const put = yield* Effect.promise(() => etcd.client.put(`${prefix}x`).value("2").exec())
      yield* Effect.promise(() => etcd.client.kv.compact({ revision: put.header.revision, physical: true }))
      const ended = yield* watchStream(sharedOf(etcd).api, { prefix }, 1).pipe(
        Stream.runDrain,
        Effect.flip,
        Effect.timeout("5 seconds")
      )
      expect(ended).toMatchObject({ _tag: "WatchEnded", compacted: true })
      yield* Effect.promise(() => etcd.client.delete().prefix(prefix).exec())
    }))

  it.scoped("a watch delivers every change from its start revision, and its scope cancels it", () =>
    Effect.gen(function*() {
      const etcd = yield* client
      const prefix = `${uniqueGroup("from")}/members/`
      const first = yield* Effect.promise(() => etcd.client.put(`${prefix}a`).value("1").exec())
      yield* Effect.promise(() => etcd.client.put(`${prefix}b`).value("1").exec())
      yield* Effect.promise(() => etcd.client.delete().key(`${prefix}a`).exec())
      const events = yield* watchStream(sharedOf(etcd).api, { prefix }, Number(first.header.revision)).pipe(
        Stream.flatMap((response) => Stream.fromIterable(response.events)),
        Stream.map((e) => `${e._tag} ${(e._tag === "Put" ? e.kv.key : e.key).slice(prefix.length)}`),
        Stream.take(3),
        Stream.runCollect,
        Effect.timeout("5 seconds")
      )
      expect([...events]).toEqual(["Put a", "Put b", "Delete a"])
      yield* Effect.promise(() => etcd.client.delete().prefix(prefix).exec())
    }))

  it.scoped("a member's key rewritten by someone else (foreign value, no lease) makes it register anew", () =>
    Effect.gen(function*() {
      const etcd = yield* client
      const group = uniqueGroup("hijack")
      const seq = yield* EtcdSeq.make({ key: group }).pipe(Effect.provideService(Etcd, etcd))
      const [before] = yield* seq.members
      yield* Effect.promise(() => etcd.client.put(`${group}/members/${before!.id}`).value("garbage").exec())
      // The member notices, registers with a fresh lease, and the stray key stays ignored.
      const after = yield* seq.changes.pipe(
        Stream.filter((info) => info.revision > before!.joinRevision + 1),
        Stream.runHead,
        Effect.timeout("5 seconds")
      )
      const info = Option.getOrUndefined(after)
      expect([info?.index, info?.count]).toEqual([0, 1])
      const members = yield* seq.members
      expect(members).toHaveLength(1)
      expect(members[0]!.id).not.toBe(before!.id)
      yield* Effect.promise(() => etcd.client.delete().prefix(`${group}/`).exec())
    }))

  it.scoped("unexpected keys under the members prefix are ignored: a stray key never takes an index", () =>
    Effect.gen(function*() {
      const etcd = yield* client
      const group = uniqueGroup("stray")
      yield* Effect.promise(() => etcd.client.put(`${group}/members/abc`).value("hello").exec())
      yield* Effect.promise(() => etcd.client.put(`${group}/members/nested/key`).value("{}").exec())
      const seq = yield* EtcdSeq.make({ key: group }).pipe(Effect.provideService(Etcd, etcd))
      expect(String(yield* seq.current).split("@")[0]).toBe("0/1")
      yield* Effect.promise(() => etcd.client.put(`${group}/members/def`).value("{\"v\":1,\"metadata\":\"\"}").exec())
      const members = yield* seq.members
      expect(members).toHaveLength(1)
      yield* Effect.promise(() => etcd.client.delete().prefix(`${group}/`).exec())
    }))
})
