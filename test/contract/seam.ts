/**
 * The seam's contract: what the library relies on of etcd, as tests that run against a real etcd
 * (`etcd3.test.ts`) and against the in-memory etcd (`memory.test.ts`), so that the twin cannot drift.
 */
import { expect } from "@effect/vitest"
import { Chunk, Duration, Effect, Option, type Scope, Stream } from "effect"
import * as Api from "../../src/internal/etcd/api.js"
import { readPrefix, watchStream } from "../../src/internal/prefixCache.js"

/** What a contract test needs of an etcd. */
export interface Harness<R> {
  /** A new client of the etcd, closed with the scope. */
  readonly client: Effect.Effect<Api.EtcdApi, unknown, Scope.Scope | R>
  /** Lets time pass for leases: `TestClock.adjust` in memory, real time against etcd. */
  readonly advance: (duration: Duration.DurationInput) => Effect.Effect<void>
  /** Waits (bounded) until `check` holds; etcd expires leases on a timer of its own, so this may take a moment. */
  readonly until: (check: Effect.Effect<boolean, unknown>, what: string) => Effect.Effect<void, unknown>
  /** Compacts the history below `revision`. */
  readonly compact: (revision: number) => Effect.Effect<void, never, R>
  /** A fresh prefix per test. */
  readonly prefix: (name: string) => string
}

type Test<R> = (name: string, body: () => Effect.Effect<void, unknown, Scope.Scope | R>) => void

const keysOf = (result: Api.RangeResult) => result.kvs.map((kv) => kv.key)

const collect = (api: Api.EtcdApi, target: Api.Target, from: number, n: number) =>
  watchStream(api, target, from).pipe(
    Stream.flatMap((response) => Stream.fromIterable(response.events)),
    Stream.map((e) =>
      e._tag === "Put" ? `put ${e.kv.key}=${e.kv.value}@${e.kv.modRevision}` : `delete ${e.key}@${e.modRevision}`
    ),
    Stream.take(n),
    Stream.runCollect,
    Effect.map(Chunk.toReadonlyArray),
    Effect.timeout("5 seconds")
  )

export const contract = <R>(test: Test<R>, harness: Harness<R>): void => {
  test("a put makes one new revision; a put to an existing key keeps its create revision", () =>
    Effect.gen(function*() {
      const api = yield* harness.client
      const p = harness.prefix("put")
      const first = yield* api.put(`${p}a`, "1")
      const second = yield* api.put(`${p}a`, "2")
      expect(second.revision).toBe(first.revision + 1)
      const read = yield* api.range({ target: { key: `${p}a` } })
      expect(read.kvs).toEqual([{
        key: `${p}a`,
        value: "2",
        lease: "0",
        createRevision: first.revision,
        modRevision: second.revision
      }])
      expect(read.revision).toBe(second.revision)
      // A delete then a put: a new key, a new create revision.
      const gone = yield* api.delete(`${p}a`)
      expect(gone).toEqual({ revision: second.revision + 1, deleted: 1 })
      const third = yield* api.put(`${p}a`, "3")
      expect((yield* api.range({ target: { key: `${p}a` } })).kvs[0]!.createRevision).toBe(third.revision)
      // Deleting what is not there changes nothing.
      const none = yield* api.delete(`${p}nothing`)
      expect(none).toEqual({ revision: third.revision, deleted: 0 })
    }))

  test("a prefix range is in key order, pages with limit and from, and reads any revision not compacted", () =>
    Effect.gen(function*() {
      const api = yield* harness.client
      const p = harness.prefix("range")
      for (const key of ["c", "a", "b", "d"]) yield* api.put(`${p}${key}`, key)
      const middle = yield* api.put(`${p}e`, "e")
      yield* api.put(`${p}a`, "A")
      yield* api.delete(`${p}b`)
      yield* api.put(`${harness.prefix("other")}a`, "not under the prefix")
      const all = yield* api.range({ target: { prefix: p } })
      expect(keysOf(all)).toEqual(["a", "c", "d", "e"].map((k) => `${p}${k}`))
      const page = yield* api.range({ target: { prefix: p }, limit: 2 })
      expect([keysOf(page), page.more]).toEqual([[`${p}a`, `${p}c`], true])
      const next = yield* api.range({ target: { prefix: p }, from: `${p}c\0`, limit: 2, revision: page.revision })
      expect([keysOf(next), next.more]).toEqual([[`${p}d`, `${p}e`], false])
      const past = yield* api.range({ target: { prefix: p }, revision: middle.revision })
      expect(past.kvs.map((kv) => `${kv.key.slice(p.length)}=${kv.value}`)).toEqual(["a=a", "b=b", "c=c", "d=d", "e=e"])
      // The header names the store's revision, not the one read.
      expect(past.revision).toBe(all.revision)
      const paged = yield* readPrefix(api, p, 1)
      expect(keysOf({ ...paged, more: false })).toEqual(keysOf(all))
      yield* harness.compact(all.revision)
      const refused = yield* api.range({ target: { prefix: p }, revision: middle.revision }).pipe(Effect.flip)
      expect(Api.isCompacted(refused)).toBe(true)
      expect(keysOf(yield* api.range({ target: { prefix: p }, revision: all.revision }))).toEqual(keysOf(all))
    }))

  test("a transaction compares create revisions, writes in one revision, and reads its own writes", () =>
    Effect.gen(function*() {
      const api = yield* harness.client
      const p = harness.prefix("txn")
      const createIfAbsent = (key: string) =>
        api.txn({
          compare: [{ key, target: "create", result: "equal", value: 0 }],
          success: [{ _tag: "Put", key, value: "mine" }],
          failure: [{ _tag: "Range", range: { target: { key } } }]
        })
      const created = yield* createIfAbsent(`${p}lock`)
      expect([created.succeeded, created.results]).toEqual([true, [{ _tag: "Put" }]])
      const again = yield* createIfAbsent(`${p}lock`)
      expect(again.succeeded).toBe(false)
      expect(again.revision).toBe(created.revision)
      const [existing] = again.results
      expect(existing?._tag === "Range" && existing.result.kvs[0]?.createRevision).toBe(created.revision)

      yield* api.put(`${p}x`, "1")
      yield* api.put(`${p}y`, "1")
      const both = yield* api.txn({
        compare: [],
        success: [{ _tag: "Delete", key: `${p}x` }, { _tag: "Delete", key: `${p}y` }, { _tag: "Delete", key: `${p}z` }]
      })
      expect(both.results).toEqual([
        { _tag: "Delete", deleted: 1 },
        { _tag: "Delete", deleted: 1 },
        { _tag: "Delete", deleted: 0 }
      ])
      const after = yield* api.range({ target: { prefix: p } })
      expect([keysOf(after), after.revision]).toEqual([[`${p}lock`], both.revision])

      // The lock recipe's look: contenders created before a revision, newest first, keys only, while a key exists.
      for (const n of [1, 2, 3]) yield* api.put(`${p}q/${n}`, `value ${n}`)
      const mine = yield* api.put(`${p}q/4`, "me")
      const look = yield* api.txn({
        compare: [{ key: `${p}q/4`, target: "create", result: "equal", value: mine.revision }],
        success: [{
          _tag: "Range",
          range: {
            target: { prefix: `${p}q/` },
            maxCreateRevision: mine.revision - 1,
            order: "createDescending",
            limit: 2,
            keysOnly: true
          }
        }]
      })
      const [ahead] = look.results
      expect(look.succeeded).toBe(true)
      expect(ahead?._tag === "Range" && ahead.result.kvs.map((kv) => [kv.key, kv.value])).toEqual([
        [`${p}q/3`, ""],
        [`${p}q/2`, ""]
      ])
      expect(ahead?._tag === "Range" && ahead.result.more).toBe(true)
      const stale = yield* api.txn({
        compare: [{ key: `${p}q/4`, target: "create", result: "equal", value: mine.revision - 1 }],
        success: [{ _tag: "Range", range: { target: { prefix: `${p}q/` } } }]
      })
      expect([stale.succeeded, stale.results]).toEqual([false, []])
      // Greater and less, on mod revisions.
      const newer = yield* api.txn({
        compare: [{ key: `${p}q/4`, target: "mod", result: "greater", value: mine.revision - 1 }],
        success: [{ _tag: "Put", key: `${p}q/4`, value: "again" }]
      })
      expect(newer.succeeded).toBe(true)
      const older = yield* api.txn({
        compare: [{ key: `${p}q/4`, target: "mod", result: "less", value: mine.revision }],
        success: [{ _tag: "Put", key: `${p}q/4`, value: "never" }]
      })
      expect(older.succeeded).toBe(false)
    }))

  test("a transaction compares values byte by byte, and a value compare of a missing key fails", () =>
    Effect.gen(function*() {
      const api = yield* harness.client
      const p = harness.prefix("txn-value")
      const below = (key: string, value: string) =>
        api.txn({
          compare: [{ key, target: "value", result: "less", value }],
          success: [{ _tag: "Put", key, value }],
          failure: [{ _tag: "Range", range: { target: { key } } }]
        })
      // What a fence record relies on: zero-padded decimals order as numbers.
      yield* api.put(`${p}fence`, "00000000000000000009")
      expect((yield* below(`${p}fence`, "00000000000000000010")).succeeded).toBe(true)
      const refused = yield* below(`${p}fence`, "00000000000000000010")
      expect(refused.succeeded).toBe(false)
      expect(Api.rangeKv(refused.results[0])?.value).toBe("00000000000000000010")
      // Unpadded, "9" is above "10": the compare is of bytes.
      yield* api.put(`${p}plain`, "9")
      expect((yield* below(`${p}plain`, "10")).succeeded).toBe(false)
      // However it compares, a key that does not exist fails the compare.
      for (const result of ["less", "greater", "equal"] as const) {
        const missing = yield* api.txn({
          compare: [{ key: `${p}missing`, target: "value", result, value: "" }],
          success: [{ _tag: "Put", key: `${p}missing`, value: "x" }]
        })
        expect([result, missing.succeeded]).toEqual([result, false])
      }
      expect((yield* api.range({ target: { key: `${p}missing` } })).kvs).toEqual([])
      const equal = yield* api.txn({
        compare: [{ key: `${p}plain`, target: "value", result: "equal", value: "9" }],
        success: []
      })
      expect(equal.succeeded).toBe(true)
    }))

  test("a watch delivers every change from its start revision in order, and fails once that is compacted", () =>
    Effect.gen(function*() {
      const api = yield* harness.client
      const p = harness.prefix("watch")
      const a = yield* api.put(`${p}a`, "1")
      const b = yield* api.put(`${p}b`, "2")
      const gone = yield* api.delete(`${p}a`)
      yield* api.put(`${harness.prefix("elsewhere")}a`, "not watched")
      expect(yield* collect(api, { prefix: p }, a.revision, 3)).toEqual([
        `put ${p}a=1@${a.revision}`,
        `put ${p}b=2@${b.revision}`,
        `delete ${p}a@${gone.revision}`
      ])
      // One key alone, from the next revision on (whenever the watch starts, it misses nothing after it).
      const live = yield* Effect.fork(collect(api, { key: `${p}b` }, gone.revision + 1, 2))
      const c = yield* api.put(`${p}c`, "3")
      const b2 = yield* api.put(`${p}b`, "4")
      const bGone = yield* api.delete(`${p}b`)
      expect(c.revision).toBeLessThan(b2.revision)
      expect(yield* live.await.pipe(Effect.flatten)).toEqual([
        `put ${p}b=4@${b2.revision}`,
        `delete ${p}b@${bGone.revision}`
      ])
      yield* harness.compact(bGone.revision)
      const ended = yield* watchStream(api, { prefix: p }, a.revision).pipe(
        Stream.runDrain,
        Effect.flip,
        Effect.timeout("5 seconds")
      )
      expect(ended).toMatchObject({ _tag: "WatchEnded", compacted: true })
    }))

  test("a lease binds keys; keepalives renew it; a revoke takes its keys in one revision, and the lease is gone", () =>
    Effect.gen(function*() {
      const api = yield* harness.client
      const p = harness.prefix("lease")
      const lease = yield* api.grant(10)
      const first = yield* api.put(`${p}a`, "1", lease)
      yield* api.put(`${p}b`, "2", lease)
      expect((yield* api.range({ target: { prefix: p } })).kvs.map((kv) => kv.lease)).toEqual([lease, lease])
      expect(yield* api.keepAlive(lease, Duration.seconds(2))).toBe("renewed")
      const watched = yield* Effect.fork(
        watchStream(api, { prefix: p }, first.revision + 2).pipe(Stream.runHead, Effect.timeout("5 seconds"))
      )
      yield* api.revoke(lease)
      const response = Option.getOrThrow(yield* watched.await.pipe(Effect.flatten))
      // Both deletes in one response, at one revision.
      expect(response.events.map((e) => e._tag === "Delete" ? e.key : "put")).toEqual([`${p}a`, `${p}b`])
      expect(new Set(response.events.map((e) => e._tag === "Delete" ? e.modRevision : 0)).size).toBe(1)
      expect((yield* api.range({ target: { prefix: p } })).kvs).toEqual([])
      expect(yield* api.keepAlive(lease, Duration.seconds(2))).toBe("gone")
      // A put under a lease etcd does not know is refused as such; a revoke of it is no error.
      const refused = yield* api.put(`${p}c`, "3", lease).pipe(Effect.flip)
      expect(Api.isLeaseNotFound(refused)).toBe(true)
      // In a transaction, it refuses the whole transaction: nothing of it is written.
      const whole = yield* api.txn({
        compare: [],
        success: [{ _tag: "Put", key: `${p}d`, value: "4" }, { _tag: "Put", key: `${p}e`, value: "5", lease }]
      }).pipe(Effect.flip)
      expect(Api.isLeaseNotFound(whole)).toBe(true)
      expect((yield* api.range({ target: { prefix: p } })).kvs).toEqual([])
      yield* api.revoke(lease)
    }))

  test("a transaction that writes one key twice, or has more than 128 operations, is refused whole", () =>
    Effect.gen(function*() {
      const api = yield* harness.client
      const p = harness.prefix("txn-limits")
      const twice = yield* api.txn({
        compare: [],
        success: [{ _tag: "Put", key: `${p}a`, value: "1" }, { _tag: "Put", key: `${p}b`, value: "1" }, {
          _tag: "Delete",
          key: `${p}a`
        }]
      }).pipe(Effect.flip)
      expect(twice._tag).toBe("EtcdRequestFailed")
      expect(String(twice.error)).toContain("duplicate key given in txn request")
      // Checked in the branch that does not run, too.
      const otherBranch = yield* api.txn({
        compare: [],
        success: [],
        failure: [{ _tag: "Put", key: `${p}c`, value: "1" }, { _tag: "Put", key: `${p}c`, value: "2" }]
      }).pipe(Effect.flip)
      expect(String(otherBranch.error)).toContain("duplicate key given in txn request")
      const ops = (n: number) =>
        Array.from({ length: n }, (_, i) => ({ _tag: "Put" as const, key: `${p}many/${i}`, value: "1" }))
      const tooMany = yield* api.txn({ compare: [], success: ops(129) }).pipe(Effect.flip)
      expect(String(tooMany.error)).toContain("too many operations in txn request")
      expect((yield* api.range({ target: { prefix: p } })).kvs).toEqual([])
      // 128 is allowed.
      yield* api.txn({ compare: [], success: ops(128) })
      expect((yield* api.range({ target: { prefix: `${p}many/` } })).kvs).toHaveLength(128)
    }))

  test("a put under another lease keeps the key's create revision and moves it: the first lease's end leaves it", () =>
    Effect.gen(function*() {
      const api = yield* harness.client
      const p = harness.prefix("move")
      const first = yield* api.grant(10)
      const second = yield* api.grant(10)
      const created = yield* api.put(`${p}a`, "first", first)
      // Static membership's takeover: the put and a read of the key in one transaction, which sees the put.
      const moved = yield* api.txn({
        compare: [],
        success: [
          { _tag: "Put", key: `${p}a`, value: "second", lease: second },
          { _tag: "Range", range: { target: { key: `${p}a` } } }
        ]
      })
      const [, read] = moved.results
      expect(read?._tag === "Range" && read.result.kvs).toEqual([{
        key: `${p}a`,
        value: "second",
        lease: second,
        createRevision: created.revision,
        modRevision: moved.revision
      }])
      yield* api.revoke(first)
      expect((yield* api.range({ target: { key: `${p}a` } })).kvs.map((kv) => [kv.value, kv.lease])).toEqual([[
        "second",
        second
      ]])
      yield* api.revoke(second)
      expect((yield* api.range({ target: { key: `${p}a` } })).kvs).toEqual([])
    }))

  test("a lease nobody keeps alive expires after its TTL, and takes its keys with it", () =>
    Effect.gen(function*() {
      const api = yield* harness.client
      const p = harness.prefix("expiry")
      const kept = yield* api.grant(10)
      const dropped = yield* api.grant(2)
      yield* api.put(`${p}kept`, "1", kept)
      yield* api.put(`${p}dropped`, "1", dropped)
      // Half a TTL passes: both still live; the kept one is renewed.
      yield* harness.advance("1 second")
      expect(yield* api.keepAlive(kept, Duration.seconds(2))).toBe("renewed")
      expect(keysOf(yield* api.range({ target: { prefix: p } }))).toEqual([`${p}dropped`, `${p}kept`])
      yield* harness.advance("1500 millis")
      yield* harness.until(
        Effect.map(api.range({ target: { prefix: p } }), (r) => keysOf(r).join() === `${p}kept`),
        "the dropped lease's key gone, the kept one's still there"
      )
      expect(yield* api.keepAlive(dropped, Duration.seconds(2))).toBe("gone")
      yield* api.revoke(kept)
    }))
}
