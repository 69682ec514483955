/**
 * A loopback gRPC (HTTP/2 cleartext) proxy in front of etcd that forwards every call and lets a test change what
 * etcd answers to chosen calls: refuse a method as a newer etcd does (`Maintenance/Status` is root-only with auth
 * on from etcd 3.5.28), or hold a unary request back for a while (a slow network) before it reaches etcd.
 *
 * Streams (watches, keepalives) are forwarded as they come; unary requests are read whole first, so that a rule can
 * look at their bytes (a key appears in them as plain text).
 */
import { Effect, type Scope } from "effect"
import * as http2 from "node:http2"

/** What to do with one call: forward it, answer it with a gRPC error, or forward it after a delay. */
export type Verdict =
  | { readonly _tag: "Forward" }
  | { readonly _tag: "Refuse"; readonly code: number; readonly message: string }
  | { readonly _tag: "Delay"; readonly millis: number }

type Rule = (call: { readonly method: string; readonly body: Buffer }) => Verdict

export const forward: Verdict = { _tag: "Forward" }

/** gRPC status codes the tests use. */
export const GrpcCode = { PermissionDenied: 7, Unavailable: 14 } as const

export interface GrpcProxy {
  readonly endpoint: string
  /** Replaces the rule applied to every call from now on. */
  readonly setRule: (rule: Rule) => Effect.Effect<void>
}

const streamingMethods = new Set(["/etcdserverpb.Watch/Watch", "/etcdserverpb.Lease/LeaseKeepAlive"])

const hopHeaders = new Set([":authority", ":scheme", ":method", ":path", "connection", "host"])

export const startGrpcProxy = (target: string): Effect.Effect<GrpcProxy, never, Scope.Scope> =>
  Effect.gen(function*() {
    let rule: Rule = () => forward
    const upstreams = new Set<http2.ClientHttp2Session>()
    const sessions = new Map<http2.ServerHttp2Session, http2.ClientHttp2Session>()
    const upstreamFor = (session: http2.ServerHttp2Session) => {
      let upstream = sessions.get(session)
      if (upstream === undefined || upstream.destroyed || upstream.closed) {
        const fresh = http2.connect(target)
        fresh.on("error", () => {})
        upstreams.add(fresh)
        fresh.on("close", () => upstreams.delete(fresh))
        sessions.set(session, fresh)
        session.once("close", () => {
          sessions.delete(session)
          fresh.close()
        })
        upstream = fresh
      }
      return upstream
    }

    const relay = (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, body: Buffer | undefined) => {
      if (stream.destroyed) return
      const outgoing: http2.OutgoingHttpHeaders = { ":method": "POST", ":path": headers[":path"] }
      for (const [name, value] of Object.entries(headers)) if (!hopHeaders.has(name)) outgoing[name] = value
      const call = upstreamFor(stream.session as http2.ServerHttp2Session).request(outgoing)
      let trailers: http2.IncomingHttpHeaders = { "grpc-status": "0" }
      call.on("response", (response) => {
        const head: http2.OutgoingHttpHeaders = {}
        for (const [name, value] of Object.entries(response)) if (name !== ":status") head[name] = value
        if (!stream.destroyed) stream.respond({ ":status": 200, ...head }, { waitForTrailers: true })
      })
      call.on("trailers", (received) => {
        trailers = received
      })
      stream.on("wantTrailers", () => stream.sendTrailers(trailers as http2.OutgoingHttpHeaders))
      call.on("data", (chunk: Buffer) => void (stream.destroyed || stream.write(chunk)))
      call.on("end", () => void (stream.destroyed || stream.end()))
      call.on("error", () => stream.destroy())
      stream.on("close", () => call.close())
      if (body === undefined) {
        stream.on("data", (chunk: Buffer) => void call.write(chunk))
        stream.on("end", () => call.end())
      } else {
        call.end(body)
      }
    }

    const refuse = (stream: http2.ServerHttp2Stream, code: number, message: string) =>
      stream.respond({
        ":status": 200,
        "content-type": "application/grpc",
        "grpc-status": String(code),
        "grpc-message": encodeURIComponent(message)
      }, { endStream: true })

    const server = http2.createServer()
    server.on("session", (session) => session.on("error", () => {}))
    server.on("stream", (stream, headers) => {
      stream.on("error", () => {})
      const method = String(headers[":path"])
      if (streamingMethods.has(method)) {
        const verdict = rule({ method, body: Buffer.alloc(0) })
        if (verdict._tag === "Refuse") return refuse(stream, verdict.code, verdict.message)
        return relay(stream, headers, undefined)
      }
      const chunks: Array<Buffer> = []
      stream.on("data", (chunk: Buffer) => chunks.push(chunk))
      stream.on("end", () => {
        const body = Buffer.concat(chunks)
        const verdict = rule({ method, body })
        if (verdict._tag === "Refuse") refuse(stream, verdict.code, verdict.message)
        else if (verdict._tag === "Delay") setTimeout(() => relay(stream, headers, body), verdict.millis)
        else relay(stream, headers, body)
      })
    })

    const port = yield* Effect.acquireRelease(
      Effect.async<number>((resume) => {
        server.listen(0, "127.0.0.1", () => resume(Effect.succeed((server.address() as { port: number }).port)))
      }),
      () =>
        Effect.async<void>((resume) => {
          for (const upstream of upstreams) upstream.destroy()
          for (const session of sessions.keys()) session.destroy()
          server.close(() => resume(Effect.void))
        })
    )
    return {
      endpoint: `http://127.0.0.1:${port}`,
      setRule: (next) =>
        Effect.sync(() => {
          rule = next
        })
    }
  })
