/**
 * An etcd in memory, for tests: etcd's semantics for what effect-etcdseq uses, leases on Effect's `Clock` (so
 * `TestClock.adjust` expires them), and the faults a test needs to inject.
 *
 * @since 0.1.0
 */
import { Context, Duration, Effect, Layer, type Scope } from "effect"
import * as Client from "./internal/client.js"
import type { EtcdClient } from "./internal/client.js"
import * as Memory from "./internal/etcd/memory.js"

/**
 * A key-value as the in-memory etcd holds it.
 *
 * @since 0.1.0
 * @category models
 */
export interface MemoryKeyValue {
  readonly key: string
  readonly value: string
  /** The lease the key is bound to (int64 decimal, as etcd prints it); `"0"` for none. */
  readonly lease: string
  readonly createRevision: number
  readonly modRevision: number
}

/**
 * A live lease of the in-memory etcd.
 *
 * @since 0.1.0
 * @category models
 */
export interface MemoryLease {
  readonly id: string
  readonly ttl: Duration.Duration
  /** Time left before it expires, on the `Clock` the server runs on. */
  readonly remaining: Duration.Duration
}

/**
 * The in-memory etcd: what it holds, and the faults a test can inject.
 *
 * @since 0.1.0
 * @category models
 */
export interface MemoryEtcdService {
  /** etcd's current revision: 1 when empty, one more per write request. */
  readonly revision: Effect.Effect<number>
  /** The live key-values under `prefix` (every key without one), in key order. */
  readonly read: (prefix?: string) => Effect.Effect<ReadonlyArray<MemoryKeyValue>>
  /** The live leases. */
  readonly leases: Effect.Effect<ReadonlyArray<MemoryLease>>
  /** Writes a key, without a lease, as another process would: the revision of the write. */
  readonly put: (key: string, value: string) => Effect.Effect<number>
  /** Deletes a key, as another process would: the revision after it. */
  readonly delete: (key: string) => Effect.Effect<number>
  /**
   * An outage: the clients given (all by default) cannot reach etcd until `recover`. Their requests fail at once
   * (`"unreachable"`, the default, like a refused connection) or wait for their deadline (`"hang"`, like a silent
   * network), their keepalives fail, their watches end. etcd itself runs on: leases not kept alive expire.
   */
  readonly outage: (
    options?: { readonly mode?: "unreachable" | "hang"; readonly clients?: ReadonlyArray<EtcdClient> }
  ) => Effect.Effect<void>
  /** Ends the outage: clients reach etcd again. */
  readonly recover: Effect.Effect<void>
  /**
   * The client's next `count` writes (puts, deletes, transactions; 1 by default) land at etcd, but their answers
   * never reach the client: each fails with `EtcdUnavailable` at its deadline, as when the network goes silent right
   * after a request went out. The client cannot tell whether they landed.
   */
  readonly loseAnswers: (client: EtcdClient, count?: number) => Effect.Effect<void>
  /**
   * The client dies as a crashed process does: its requests fail from now on, its watches end, its leases are not
   * kept alive and expire after their TTL (taking its members' keys with them), and closing it revokes nothing.
   */
  readonly crash: (client: EtcdClient) => Effect.Effect<void>
  /** Revokes a lease from outside (`etcdctl lease revoke`): its keys go. False when no such lease lives. */
  readonly revoke: (lease: string) => Effect.Effect<boolean>
  /**
   * Compacts history below `revision` (the current one by default): a watch or a read from an older revision then
   * fails as etcd's do, and the library re-reads.
   */
  readonly compact: (revision?: number) => Effect.Effect<void>
  /** The server behind the service, for `Etcd.layerMemory`; absent on a service value this library did not make. */
  readonly [Memory.TypeId]?: Memory.Server | undefined
}

/**
 * The in-memory etcd: a `Context.Tag` whose `layer` makes a fresh server. `Etcd.layerMemory` is a client of the
 * server in context; build it once per simulated process.
 *
 * Errors: none; a request of a crashed or cut-off client fails with `EtcdUnavailable`, as against a real etcd.
 *
 * @example
 * ```ts
 * import { it } from "@effect/vitest"
 * import { Context, Effect, Layer, Stream, TestClock } from "effect"
 * import { Etcd, EtcdSeq, MemoryEtcd } from "effect-etcdseq"
 *
 * it.scoped("a crashed member leaves after its TTL", () =>
 *   Effect.gen(function*() {
 *     const memory = yield* MemoryEtcd
 *     // Each build of Etcd.layerMemory is one more process, with a lease of its own.
 *     const a = yield* Layer.build(Etcd.layerMemory)
 *     const b = yield* Layer.build(Etcd.layerMemory)
 *     const seq = yield* EtcdSeq.make({ key: "g", ttl: "5 seconds" }).pipe(Effect.provide(a))
 *     yield* EtcdSeq.make({ key: "g", ttl: "5 seconds" }).pipe(Effect.provide(b))
 *     yield* memory.crash(Context.get(b, Etcd))
 *     yield* TestClock.adjust("5 seconds")
 *     // Nothing revoked b's lease: it expired, and a is alone.
 *     yield* seq.changes.pipe(Stream.takeUntil((info) => info.count === 1), Stream.runDrain)
 *   }).pipe(Effect.provide(MemoryEtcd.layer)))
 * ```
 * @since 0.1.0
 * @category tags
 */
export class MemoryEtcd extends Context.Tag("effect-etcdseq/MemoryEtcd")<MemoryEtcd, MemoryEtcdService>() {
  /**
   * A fresh server for the life of the scope. Its leases expire on the `Clock` in context.
   *
   * @since 0.1.0
   * @category constructors
   */
  static readonly make: Effect.Effect<MemoryEtcdService, never, Scope.Scope> = Effect.gen(function*() {
    const server = yield* Memory.makeServer
    const clock = yield* Effect.clock
    const clientOf = (client: EtcdClient): number | undefined => {
      const api = Client.of(client)?.api
      return api === undefined ? undefined : server.clientOf(api)
    }
    const service: Omit<MemoryEtcdService, Memory.TypeId> = {
      revision: Effect.sync(server.revision),
      read: (prefix = "") => Effect.sync(() => server.read(prefix)),
      leases: Effect.sync(() => {
        const now = clock.unsafeCurrentTimeMillis()
        return server.leases().map((lease) => ({
          id: lease.id,
          ttl: Duration.seconds(lease.ttlSeconds),
          remaining: Duration.millis(Math.max(0, lease.expiresAt - now))
        }))
      }),
      put: (key, value) => Effect.sync(() => server.put(key, value)),
      delete: (key) => Effect.sync(() => server.delete(key)),
      outage: (options) =>
        Effect.sync(() =>
          server.outage(
            options?.mode ?? "unreachable",
            options?.clients?.map(clientOf).filter((c): c is number => c !== undefined)
          )
        ),
      recover: Effect.sync(server.recover),
      loseAnswers: (client, count = 1) =>
        Effect.sync(() => {
          const id = clientOf(client)
          if (id !== undefined) server.loseAnswers(id, count)
        }),
      crash: (client) =>
        Effect.sync(() => {
          const id = clientOf(client)
          if (id !== undefined) server.crash(id)
        }),
      revoke: (lease) => Effect.sync(() => server.revokeFromOutside(lease)),
      compact: (revision) => Effect.sync(() => server.compact(revision ?? server.revision()))
    }
    return Memory.attach<MemoryEtcdService>(service, server)
  })

  /**
   * A fresh server, as a layer.
   *
   * @since 0.1.0
   * @category layers
   */
  static readonly layer: Layer.Layer<MemoryEtcd> = Layer.scoped(MemoryEtcd, MemoryEtcd.make)
}
