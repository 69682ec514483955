/**
 * Free loopback ports, and the retry when one was taken by another process between the probe and etcd's bind
 * (nothing reserves a port in between).
 */
import { Effect, ExecutionStrategy, Exit, Scope } from "effect"
import * as net from "node:net"
import { type EtcdHarnessError, harnessError } from "./error.js"

const PORT_RETRIES = 3

const listenOnFreePort = Effect.acquireRelease(
  Effect.async<net.Server, EtcdHarnessError>((resume) => {
    const server = net.createServer()
    server.once(
      "error",
      (error) => resume(Effect.fail(harnessError(`cannot find a free port: ${error.message}`, error)))
    )
    server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
  }),
  (server) =>
    Effect.async<void>((resume) => {
      server.close(() => resume(Effect.void))
    })
)

/** `count` distinct free loopback ports (all held open at once, then released). */
export const freePorts = (count: number): Effect.Effect<ReadonlyArray<number>, EtcdHarnessError> =>
  Effect.forEach(Array.from({ length: count }), () => listenOnFreePort, { concurrency: "unbounded" }).pipe(
    Effect.map((servers) =>
      servers.map((server) => {
        const address = server.address()
        return typeof address === "object" && address !== null ? address.port : 0
      })
    ),
    Effect.filterOrFail(
      (ports) => ports.every((p) => p > 0),
      () => harnessError("cannot find free ports")
    ),
    Effect.scoped
  )

/**
 * Runs `self` in a child scope of the current one; if it fails, the child scope is closed right away (so a failed
 * attempt leaves no process or dir behind), otherwise it lives as long as the outer scope.
 */
const inChildScope = <A, E, R>(self: Effect.Effect<A, E, R | Scope.Scope>): Effect.Effect<A, E, R | Scope.Scope> =>
  Effect.gen(function*() {
    const outer = yield* Effect.scope
    const inner = yield* Scope.fork(outer, ExecutionStrategy.sequential)
    return yield* Scope.extend(self, inner).pipe(
      Effect.onExit((exit) => (Exit.isFailure(exit) ? Scope.close(inner, exit) : Effect.void))
    )
  })

/** Retry with fresh ports when another process took one of ours between probing and etcd's bind. */
export const retryOnPortClash = <A, R>(
  self: Effect.Effect<A, EtcdHarnessError, R | Scope.Scope>
): Effect.Effect<A, EtcdHarnessError, R | Scope.Scope> =>
  inChildScope(self).pipe(
    Effect.retry({
      times: PORT_RETRIES - 1,
      while: (error) => error.message.includes("address already in use")
    })
  )
