/**
 * The HTTP side of `etcdseq ui`: `GET /`, the page (page.ts), and `GET /events`, the feed (feed.ts) as Server-Sent
 * Events. Read-only: no route changes anything. Each tab reads the one feed; it gets a `hello`, then the current view,
 * status and timeline, then each change. A slow tab skips to the latest state rather than queueing every view.
 *
 * Events: `hello` (`{ group, boot }`: a new `boot` is a restarted server), `view` (`{ at, view, seen }`), `status`
 * (`{ etcd, since, reason }`), `timeline` (new lines, each numbered). A comment every 15 s keeps proxies and the
 * browser from closing an idle stream.
 */
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as HttpRouter from "@effect/platform/HttpRouter"
import type { ServeError } from "@effect/platform/HttpServerError"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import { Effect, type Scope, Stream, type SubscriptionRef } from "effect"
import { createHash, randomUUID } from "node:crypto"
import * as Http from "node:http"
import type { Snapshot } from "./feed.js"
import { hostOf, isLoopback, type Listen } from "./listen.js"
import { page, script } from "./page.js"

export interface ServeOptions {
  readonly group: string
  readonly feed: SubscriptionRef.SubscriptionRef<Snapshot>
  readonly listen: Listen
  /** Answer requests whatever host they name (`--listen-any`); otherwise only loopback hosts. */
  readonly anyHost: boolean
}

const scriptHash = createHash("sha256").update(script).digest("base64")

/**
 * The page runs its own inline script and nothing else: even a metadata value that escaped the page's `textContent`
 * could not run, nor load anything, nor send the view anywhere but back here.
 */
const securityHeaders = {
  "content-security-policy":
    `default-src 'none'; script-src 'sha256-${scriptHash}'; style-src 'unsafe-inline'; connect-src 'self'; ` +
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "cache-control": "no-store"
}

const frame = (event: string, data: unknown): string => `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`

/** One tab's events: what changed in the feed since what this tab was sent. */
const events = (group: string, boot: string, feed: SubscriptionRef.SubscriptionRef<Snapshot>) =>
  Stream.suspend(() => {
    let viewText: string | undefined
    let status: Snapshot["status"] | undefined
    let seq = 0
    const changes = feed.changes.pipe(
      Stream.buffer({ capacity: 1, strategy: "sliding" }),
      Stream.map((s) => {
        let out = ""
        if (s.viewText !== undefined && s.viewText !== viewText) {
          viewText = s.viewText
          out += `event: view\ndata: ${s.viewText}\n\n`
        }
        if (s.status !== status) {
          status = s.status
          out += frame("status", s.status)
        }
        const fresh = s.timeline.filter((e) => e.seq > seq)
        if (fresh.length > 0) {
          seq = fresh.at(-1)!.seq
          out += frame("timeline", fresh)
        }
        return out
      }),
      Stream.filter((out) => out !== "")
    )
    const heartbeat = Stream.tick("15 seconds").pipe(Stream.map(() => ": keep-alive\n\n"))
    // `retry`: the browser reconnects a second after the stream breaks.
    return Stream.make(`retry: 1000\n\n${frame("hello", { group, boot })}`).pipe(
      Stream.concat(Stream.merge(changes, heartbeat, { haltStrategy: "left" })),
      Stream.encodeText
    )
  })

const app = (options: ServeOptions) => {
  const boot = randomUUID()
  const router = HttpRouter.empty.pipe(
    HttpRouter.get(
      "/",
      Effect.succeed(
        HttpServerResponse.text(page, { contentType: "text/html; charset=utf-8" }).pipe(
          HttpServerResponse.setHeaders(securityHeaders)
        )
      )
    ),
    HttpRouter.get(
      "/events",
      Effect.succeed(HttpServerResponse.stream(events(options.group, boot, options.feed), {
        contentType: "text/event-stream",
        headers: { ...securityHeaders, "x-accel-buffering": "no" }
      }))
    )
  )
  return Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const host = request.headers["host"] ?? ""
    if (!options.anyHost && !isLoopback(hostOf(host))) {
      return HttpServerResponse.text(`etcdseq ui answers loopback hosts only, not "${host}" (see --listen-any)\n`, {
        status: 421
      })
    }
    return yield* router
  }).pipe(
    Effect.catchTag("RouteNotFound", () => Effect.succeed(HttpServerResponse.text("not found\n", { status: 404 })))
  )
}

/** Serves the page and its events until the scope closes; the address it listens on (the port, when 0 was asked). */
export const serve = (options: ServeOptions): Effect.Effect<Listen, ServeError, Scope.Scope> =>
  Effect.gen(function*() {
    const node = Http.createServer()
    const server = yield* NodeHttpServer.make(() => node, { host: options.listen.host, port: options.listen.port })
    // Open event streams would hold `close` forever: they are cut first (finalizers run last to first).
    yield* Effect.addFinalizer(() => Effect.sync(() => node.closeAllConnections()))
    yield* server.serve(app(options))
    const address = server.address
    return address._tag === "TcpAddress" ? { host: options.listen.host, port: address.port } : options.listen
  })
