/**
 * A loopback TCP proxy in front of etcd that a test can pause: while paused it forwards nothing in either
 * direction, so the clients behind it are cut off (a partition) while etcd and everyone else carry on.
 */
import { Effect, type Scope } from "effect"
import * as net from "node:net"

export interface Proxy {
  readonly endpoint: string
  readonly pause: Effect.Effect<void>
  readonly resume: Effect.Effect<void>
}

export const startProxy = (target: string): Effect.Effect<Proxy, never, Scope.Scope> =>
  Effect.gen(function*() {
    const url = new URL(target)
    const pairs = new Set<{ client: net.Socket; upstream: net.Socket }>()
    let paused = false
    const { port, server } = yield* Effect.acquireRelease(
      Effect.async<{ server: net.Server; port: number }>((resume) => {
        const server = net.createServer((client) => {
          const upstream = net.connect(Number(url.port), url.hostname)
          const pair = { client, upstream }
          pairs.add(pair)
          client.pipe(upstream)
          upstream.pipe(client)
          if (paused) {
            client.pause()
            upstream.pause()
          }
          const close = () => {
            pairs.delete(pair)
            client.destroy()
            upstream.destroy()
          }
          client.on("error", close).on("close", close)
          upstream.on("error", close).on("close", close)
        })
        server.listen(0, "127.0.0.1", () =>
          resume(Effect.succeed({ server, port: (server.address() as net.AddressInfo).port })))
      }),
      ({ server }) =>
        Effect.async<void>((resume) => {
          for (const { client, upstream } of pairs) {
            client.destroy()
            upstream.destroy()
          }
          server.close(() =>
            resume(Effect.void)
          )
        })
    )
    void server
    return {
      endpoint: `http://127.0.0.1:${port}`,
      pause: Effect.sync(() => {
        paused = true
        for (const { client, upstream } of pairs) {
          client.unpipe(upstream)
          upstream.unpipe(client)
          client.pause()
          upstream.pause()
        }
      }),
      resume: Effect.sync(() => {
        paused = false
        for (const { client, upstream } of pairs) {
          client.pipe(upstream)
          upstream.pipe(client)
          client.resume()
          upstream.resume()
        }
      })
    }
  })
