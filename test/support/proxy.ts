/**
 * A loopback TCP proxy in front of etcd that a test can disturb, so the clients behind it are cut off (a partition)
 * while etcd and everyone else carry on:
 * - `pause`: nothing is forwarded in either direction, connections stay open (a silent network);
 * - `blockUp`: bytes from the clients to etcd are dropped, etcd's answers and watch events still arrive (a one-way
 *   partition: the clients see the group change but none of their requests land);
 * - `cut`: every connection is closed and new ones are refused (a dropped link: watches end and must resume);
 * - `resume`: back to forwarding (connections blocked upward are closed first: their streams lost bytes);
 * - `holdDown`, then `releaseDown(then)`: etcd's answers are held, then written to the clients at once, and `then`
 *   runs right after, in the same turn (a stall of the process while the answers wait in its sockets).
 * `connections` counts the connections accepted so far: a client that closed its connection and opened another shows.
 */
import { Effect, type Scope } from "effect"
import * as net from "node:net"

export interface Proxy {
  readonly endpoint: string
  readonly pause: Effect.Effect<void>
  readonly blockUp: Effect.Effect<void>
  readonly cut: Effect.Effect<void>
  readonly resume: Effect.Effect<void>
  readonly holdDown: Effect.Effect<void>
  readonly releaseDown: (then: () => void) => Effect.Effect<void>
  readonly connections: Effect.Effect<number>
}

type Mode = "open" | "paused" | "blockUp" | "cut" | "holdDown"

interface Pair {
  readonly client: net.Socket
  readonly upstream: net.Socket
}

export const startProxy = (target: string): Effect.Effect<Proxy, never, Scope.Scope> =>
  Effect.gen(function*() {
    const url = new URL(target)
    const pairs = new Set<Pair>()
    let mode: Mode = "open"
    let accepted = 0
    const held: Array<{ readonly client: net.Socket; readonly data: Buffer }> = []
    const destroy = (pair: Pair) => {
      pairs.delete(pair)
      pair.client.destroy()
      pair.upstream.destroy()
    }
    const { port } = yield* Effect.acquireRelease(
      Effect.async<{ server: net.Server; port: number }>((resume) => {
        const server = net.createServer((client) => {
          accepted++
          if (mode === "cut") {
            client.destroy()
            return
          }
          const upstream = net.connect(Number(url.port), url.hostname)
          const pair = { client, upstream }
          pairs.add(pair)
          // Forwarded by hand, not piped, so that each direction can be dropped on its own.
          client.on("data", (data) => {
            if (mode === "open" || mode === "holdDown") upstream.write(data)
          })
          upstream.on("data", (data) => {
            if (mode === "open" || mode === "blockUp") client.write(data)
            else if (mode === "holdDown") held.push({ client, data })
          })
          if (mode === "paused") {
            client.pause()
            upstream.pause()
          }
          const close = () => destroy(pair)
          client.on("error", close).on("close", close)
          upstream.on("error", close).on("close", close)
        })
        server.listen(0, "127.0.0.1", () =>
          resume(Effect.succeed({ server, port: (server.address() as net.AddressInfo).port })))
      }),
      ({ server }) =>
        Effect.async<void>((resume) => {
          for (const pair of pairs) {
            destroy(pair)
          }
          server.close(() =>
            resume(Effect.void)
          )
        })
    )
    return {
      endpoint: `http://127.0.0.1:${port}`,
      pause: Effect.sync(() => {
        mode = "paused"
        for (const { client, upstream } of pairs) {
          client.pause()
          upstream.pause()
        }
      }),
      blockUp: Effect.sync(() => {
        mode = "blockUp"
      }),
      cut: Effect.sync(() => {
        mode = "cut"
        for (const pair of pairs) destroy(pair)
      }),
      holdDown: Effect.sync(() => {
        mode = "holdDown"
      }),
      releaseDown: (then) =>
        Effect.sync(() => {
          mode = "open"
          for (const { client, data } of held.splice(0)) client.write(data)
          then()
        }),
      connections: Effect.sync(() => accepted),
      resume: Effect.sync(() => {
        // A stream whose upward bytes were dropped is corrupt (HTTP/2 frames lost mid-way): it must start afresh.
        if (mode === "blockUp") { for (const pair of pairs) destroy(pair) }
        mode = "open"
        for (const { client, upstream } of pairs) {
          client.resume()
          upstream.resume()
        }
      })
    }
  })
