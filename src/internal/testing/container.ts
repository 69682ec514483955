/**
 * An etcd in a Docker container through testcontainers (an optional peer dependency, loaded only when needed), for
 * machines with a Docker engine and no `etcd` binary.
 */
import { Duration, Effect, Option, type Scope } from "effect"
import * as Bounded from "../bounded.js"
import { describeCause, type EtcdHarnessError, harnessError } from "./error.js"
import { clusterToken } from "./etcdNode.js"

const CONTAINER_IMAGE = "quay.io/coreos/etcd:v3.5.17"
const CONTAINER_STARTUP_MS = 120_000

const etcdCommand = (): Array<string> => [
  "/usr/local/bin/etcd",
  "--name=etcd0",
  "--data-dir=/etcd-data",
  "--listen-client-urls=http://0.0.0.0:2379",
  "--advertise-client-urls=http://127.0.0.1:2379",
  "--listen-peer-urls=http://0.0.0.0:2380",
  "--initial-advertise-peer-urls=http://127.0.0.1:2380",
  "--initial-cluster=etcd0=http://127.0.0.1:2380",
  "--initial-cluster-state=new",
  `--initial-cluster-token=${clusterToken()}`,
  "--log-level=error"
]

/** `Some(endpoint)` if a Docker engine answered and the container started, `None` if there is no engine. */
export const startContainer: Effect.Effect<Option.Option<string>, EtcdHarnessError, Scope.Scope> = Effect.gen(
  function*() {
    const tc = yield* Effect.tryPromise({
      try: () => import("testcontainers"),
      catch: (cause) => harnessError(`cannot load testcontainers: ${describeCause(cause)}`, cause)
    }).pipe(Effect.option)
    if (Option.isNone(tc)) return Option.none()
    const { GenericContainer, Wait, getContainerRuntimeClient } = tc.value

    const runtime = yield* Effect.tryPromise(() => getContainerRuntimeClient()).pipe(
      Bounded.timeout("15 seconds"),
      Effect.option
    )
    if (Option.isNone(runtime)) return Option.none()

    const container = yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: () =>
          new GenericContainer(CONTAINER_IMAGE)
            .withCommand(etcdCommand())
            .withExposedPorts(2379)
            .withWaitStrategy(Wait.forHttp("/health", 2379).forStatusCode(200))
            .withStartupTimeout(CONTAINER_STARTUP_MS)
            .start(),
        catch: (cause) =>
          harnessError(
            `a Docker engine answered but the ${CONTAINER_IMAGE} container did not start: ${describeCause(cause)}`,
            cause
          )
      }).pipe(
        Bounded.timeoutFail({
          duration: Duration.millis(CONTAINER_STARTUP_MS + 30_000),
          onTimeout: () => harnessError(`the ${CONTAINER_IMAGE} container did not start in time`)
        })
      ),
      (c) => Effect.promise(() => c.stop().then(() => undefined, () => undefined))
    )
    return Option.some(`http://${container.getHost()}:${container.getMappedPort(2379)}`)
  }
)
