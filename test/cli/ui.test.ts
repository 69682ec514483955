/**
 * `etcdseq ui` without a browser: the listen address and the loopback rule, the timeline's lines, the page's script
 * (it compiles), and the server over HTTP: one observe however many tabs, the events a tab gets, the Host check, the
 * status when the observe fails or etcd does not answer. The page itself, in Chromium: ui.browser.test.ts.
 */
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Duration, Effect, Either, Queue, Ref, Stream } from "effect"
import * as vm from "node:vm"
import * as Feed from "../../src/cli/ui/feed.js"
import { hostOf, isLoopback, parseListen, urlOf } from "../../src/cli/ui/listen.js"
import { page, script } from "../../src/cli/ui/page.js"
import { serve } from "../../src/cli/ui/server.js"
import { changes } from "../../src/cli/ui/timeline.js"
import { EtcdUnavailable } from "../../src/EtcdSeqError.js"
import type { GroupView } from "../../src/GroupView.js"
import { cli } from "../support/cli.js"

const view = (ids: ReadonlyArray<string>, holders?: ReadonlyArray<string | undefined>): GroupView => ({
  group: "g",
  revision: 10 + ids.length,
  members: ids.map((id, index) => ({
    id,
    instance: undefined,
    metadata: "",
    index,
    joinRevision: index + 2,
    weight: 1
  })),
  locks: [],
  handover: [],
  shards: holders === undefined ? undefined : {
    shards: holders.length,
    owners: holders.map((holder, shard) => ({
      shard,
      planned: ids[shard % ids.length]!,
      holder,
      fence: holder === undefined ? undefined : 100 + shard,
      waiting: []
    }))
  },
  waiting: [],
  controls: { pins: [], paused: [], frozen: false, frozenOwners: undefined },
  drains: []
})

describe("etcdseq ui: --listen", () => {
  it("reads host:port, [v6]:port and :port", () => {
    expect(parseListen("127.0.0.1:7070")).toEqual(Either.right({ host: "127.0.0.1", port: 7070 }))
    expect(parseListen("[::1]:0")).toEqual(Either.right({ host: "::1", port: 0 }))
    expect(parseListen(":8080")).toEqual(Either.right({ host: "127.0.0.1", port: 8080 }))
    expect(parseListen("localhost:1")).toEqual(Either.right({ host: "localhost", port: 1 }))
    for (const bad of ["7070", "host", "1.2.3.4:70000", "a:b", "::1:80"]) {
      expect(Either.isLeft(parseListen(bad))).toBe(true)
    }
    expect(urlOf({ host: "::1", port: 80 })).toBe("http://[::1]:80/")
  })

  it("knows loopback hosts, and the host of a Host header", () => {
    for (const host of ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST", "ui.localhost"]) {
      expect(isLoopback(host)).toBe(true)
    }
    for (const host of ["0.0.0.0", "::", "10.0.0.1", "example.com", "127.0.0.1.example.com", "localhost.example"]) {
      expect(isLoopback(host)).toBe(false)
    }
    expect(["127.0.0.1:7070", "[::1]:7070", "localhost", "evil.example:80"].map(hostOf)).toEqual(
      ["127.0.0.1", "::1", "localhost", "evil.example"]
    )
  })
})

describe("etcdseq ui: the timeline", () => {
  it("says the first view, joins, leaves, plans and moves, grouped by who from and to", () => {
    expect(changes(undefined, view(["a"]))).toEqual([{ kind: "view", text: "first view: 1 member at revision 11" }])
    const before = view(["a", "b"], ["a", "b", "a", "b"])
    const after = view(["a", "c"], ["a", undefined, "a", "b"])
    expect(changes(before, after)).toEqual([
      { kind: "join", text: "c joined at index 1" },
      { kind: "leave", text: "b left (was index 1)" },
      { kind: "plan", text: "shards 1, 3 planned for c (was b)" },
      { kind: "move", text: "shard 1 released by b" }
    ])
    const taken = view(["a", "c"], ["a", "c", "a", "c"])
    expect(changes(after, taken)).toEqual([
      { kind: "move", text: "shard 1 taken by c" },
      { kind: "move", text: "shard 3 moved from b to c" }
    ])
    expect(changes(taken, view(["a", "c"], ["a", "c", "a", "a"]))).toEqual([
      { kind: "move", text: "shard 3 moved from c to a" }
    ])
    expect(changes(view(["a"]), view(["a"], ["a", "a"]))).toEqual([
      { kind: "plan", text: "2 shards planned over 1 members" }
    ])
  })
})

describe("etcdseq ui: the page", () => {
  it("has a script that compiles, and no data in the markup", () => {
    expect(() => new vm.Script(script)).not.toThrow()
    expect(page).toContain(script)
    expect(page).not.toContain("innerHTML")
    expect(script).not.toMatch(/innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(/)
  })
})

/** The events of `/events` until `enough` holds of them (bounded), as `[event, data]`. */
const readEvents = (
  url: string,
  enough: (events: ReadonlyArray<[string, unknown]>) => boolean,
  onEvents: (events: ReadonlyArray<[string, unknown]>) => void = () => {}
) =>
  Effect.promise(async () => {
    const controller = new AbortController()
    const timer = setTimeout(() => controller.abort(), 10_000)
    const response = await fetch(`${url}events`, { signal: controller.signal })
    const reader = response.body!.getReader()
    const decoder = new TextDecoder()
    const events: Array<[string, unknown]> = []
    let text = ""
    try {
      while (!enough(events)) {
        const { done, value } = await reader.read()
        if (done) break
        text += decoder.decode(value, { stream: true })
        let end: number
        while ((end = text.indexOf("\n\n")) !== -1) {
          const block = text.slice(0, end)
          text = text.slice(end + 2)
          const event = /^event: (.*)$/m.exec(block)?.[1]
          const data = /^data: (.*)$/m.exec(block)?.[1]
          if (event !== undefined && data !== undefined) events.push([event, JSON.parse(data)])
        }
        onEvents(events)
      }
    } finally {
      clearTimeout(timer)
      controller.abort()
    }
    return { events, headers: response.headers }
  })

const served = (views: Stream.Stream<GroupView, EtcdUnavailable>, probe: Effect.Effect<void, EtcdUnavailable>) =>
  Effect.gen(function*() {
    const feed = yield* Feed.make({ views, probe, probeEvery: "50 millis", probeTimeout: "200 millis" })
    const bound = yield* serve({ group: "g", feed, listen: { host: "127.0.0.1", port: 0 }, anyHost: false })
    return { feed, url: urlOf(bound) }
  })

const unavailable = new EtcdUnavailable({ endpoints: ["http://127.0.0.1:1"], timeout: Duration.seconds(1) })

describe("etcdseq ui: the server", () => {
  it.live("serves every tab from one observe: the current view first, then each change", () =>
    Effect.scoped(Effect.gen(function*() {
      const observes = yield* Ref.make(0)
      const queue = yield* Queue.unbounded<GroupView>()
      const views = Stream.unwrap(Effect.as(Ref.update(observes, (n) => n + 1), Stream.fromQueue(queue)))
      const { url } = yield* served(views, Effect.void)
      yield* Queue.offer(queue, {
        ...view(["a", "b"]),
        members: [{
          id: "a",
          instance: "<script>alert(1)</script>",
          metadata: "<b>x</b>",
          index: 0,
          joinRevision: 2,
          weight: 1
        }]
      })
      const hasView = (events: ReadonlyArray<[string, unknown]>) => events.some(([e]) => e === "view")
      const tabs = yield* Effect.all([readEvents(url, hasView), readEvents(url, hasView), readEvents(url, hasView)], {
        concurrency: "unbounded"
      })
      expect(yield* Ref.get(observes)).toBe(1)
      for (const { events, headers } of tabs) {
        expect(headers.get("content-type")).toContain("text/event-stream")
        expect(events[0]![0]).toBe("hello")
        const [, data] = events.find(([e]) => e === "view")!
        const sent = data as { view: GroupView; seen: Record<string, number> }
        // The view as GroupView holds it (the metadata as a JSON string, for the page to write as text), and when the
        // server first saw each member: nothing else.
        expect(Object.keys(data as object).sort()).toEqual(["at", "seen", "view"])
        expect(sent.view.members[0]!.metadata).toBe("<b>x</b>")
        expect(Object.keys(sent.seen)).toEqual(["a"])
      }
      // A change reaches a tab already open.
      const open = yield* Deferred.make<void>()
      const later = readEvents(
        url,
        (events) => events.filter(([e]) => e === "view").length >= 2,
        (events) => hasView(events) && Deferred.unsafeDone(open, Effect.void)
      )
      const fiber = yield* Effect.fork(later)
      yield* Deferred.await(open).pipe(Effect.timeout("10 seconds"))
      yield* Queue.offer(queue, view(["a", "b", "c"]))
      const { events } = yield* fiber.await.pipe(Effect.flatten)
      const last = events.filter(([e]) => e === "view").at(-1)![1] as { view: GroupView }
      expect(last.view.members.map((m) => m.id)).toEqual(["a", "b", "c"])
      expect(yield* Ref.get(observes)).toBe(1)
    })))

  it.live("answers loopback hosts only, and 404 elsewhere", () =>
    Effect.scoped(Effect.gen(function*() {
      const { url } = yield* served(Stream.never, Effect.void)
      const get = (path: string, host?: string) =>
        Effect.promise(() =>
          import("node:http").then((http) =>
            new Promise<{ status: number; headers: Record<string, unknown> }>((resolve, reject) => {
              const u = new URL(path, url)
              const request = http.get(
                { host: u.hostname, port: u.port, path: u.pathname, headers: host === undefined ? {} : { host } },
                (res) => {
                  res.resume()
                  resolve({ status: res.statusCode!, headers: res.headers })
                }
              )
              request.on("error", reject)
              request.setTimeout(5_000, () => request.destroy(new Error("timeout")))
            })
          )
        )
      const ok = yield* get("/")
      expect(ok.status).toBe(200)
      expect(String(ok.headers["content-security-policy"])).toMatch(/script-src 'sha256-/)
      expect((yield* get("/", "evil.example:7070")).status).toBe(421)
      expect((yield* get("/events", "attacker.example")).status).toBe(421)
      expect((yield* get("/", "localhost:1")).status).toBe(200)
      expect((yield* get("/nothing")).status).toBe(404)
    })))

  it.live("says etcd is unavailable while the probe or the observe fails, and when it answers again", () =>
    Effect.scoped(Effect.gen(function*() {
      const down = yield* Ref.make(false)
      // The observe fails at first (etcd gone when it starts): retried, it recovers by itself.
      const failing = yield* Ref.make(true)
      const probe = Effect.flatMap(
        Ref.get(down),
        (d) => d ? Effect.fail(unavailable) : Effect.void
      )
      const views = Stream.unwrap(Effect.map(Ref.get(failing), (f) =>
        f
          ? Stream.fail(unavailable)
          : Stream.concat(Stream.make(view(["a"])), Stream.never)))
      const { feed } = yield* served(views, probe)
      const status = () => Effect.map(feed.get, (s) => s.status.etcd)
      const until = (wanted: string) =>
        Effect.gen(function*() {
          for (let i = 0; i < 100 && (yield* status()) !== wanted; i++) yield* Effect.sleep("50 millis")
          expect(yield* status()).toBe(wanted)
        })
      yield* until("unavailable")
      expect((yield* feed.get).viewText).toBeUndefined()
      yield* Ref.set(failing, false)
      yield* until("connected")
      expect((yield* feed.get).viewText).toContain("\"members\"")
      yield* Ref.set(down, true)
      yield* until("unavailable")
      yield* Ref.set(down, false)
      yield* until("connected")
      const lines = (yield* feed.get).timeline.map((e) => e.text)
      expect(lines.some((l) => l.startsWith("etcd unavailable"))).toBe(true)
      expect(lines).toContain("etcd answers again")
    })))
})

describe("etcdseq ui: the command", () => {
  it.live("refuses a non-loopback --listen without --listen-any, and a malformed one, before connecting", () =>
    Effect.scoped(Effect.gen(function*() {
      // Nothing listens on port 1: a check made after connecting would end in "etcd unavailable" (69).
      const endpoints = ["--endpoints", "http://127.0.0.1:1"]
      const open = yield* cli(["ui", "--group", "g", "--listen", "0.0.0.0:7070", ...endpoints])
      const malformed = yield* cli(["ui", "--group", "g", "--listen", "7070", ...endpoints])
      expect(yield* open.exit()).toBe(64)
      expect(open.stderr()).toContain("--listen: 0.0.0.0 is not a loopback address")
      expect(open.stderr()).toContain("--listen-any")
      expect(yield* malformed.exit()).toBe(64)
      expect(malformed.stderr()).toContain(`--listen: "7070" is not <host>:<port>`)
    })))
})
