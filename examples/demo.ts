/**
 * `npm run demo`: three members in one process join and leave a group, each printing its Info as it changes.
 *
 * Uses ETCD_ENDPOINTS when set; otherwise starts a throwaway local etcd and removes it at the end.
 */
import { NodeRuntime } from "@effect/platform-node"
import { Console, Effect, Exit, Scope, Stream } from "effect"
import { Etcd, EtcdSeq, Info } from "effect-etcdseq"
import { LocalEtcd } from "./localEtcd.js"

const group = `demo/${Date.now().toString(36)}`

/** Joins as `name`, prints every Info it sees, and returns a handle to leave. */
const member = (name: string) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    const seq = yield* EtcdSeq.make({ key: group, ttl: "5 seconds", metadata: name }).pipe(Scope.extend(scope))
    yield* seq.changes.pipe(
      Stream.runForEach((info) =>
        Console.log(`  ${name}: ${Info.isValid(info) ? `${info.index}/${info.count}` : "invalid (stopped)"}`)
      ),
      Effect.forkDaemon
    )
    return { leave: Scope.close(scope, Exit.void) }
  })

/** Prints what happens, does it, and gives the members a moment to print what they see. */
const step = <A, E, R>(text: string, action: Effect.Effect<A, E, R>) =>
  Console.log(`\n${text}`).pipe(Effect.zipRight(action), Effect.zipLeft(Effect.sleep("300 millis")))

const program = Effect.gen(function*() {
  const a = yield* step("a joins", member("a"))
  const b = yield* step("b joins: everyone sees count 2", member("b"))
  const c = yield* step("c joins: the newcomer gets index 2", member("c"))
  yield* step("b leaves: c moves down to index 1", b.leave)
  yield* step("a leaves: c is 0/1", a.leave)
  yield* step("c leaves", c.leave)
  yield* Effect.sleep("200 millis")
  const { client } = yield* Etcd
  if (client !== undefined) {
    const left = yield* Effect.promise(() => client.getAll().prefix(`${group}/`).keys())
    yield* Console.log(`\nkeys left in etcd under ${group}/: ${left.length}`)
  }
}).pipe(Effect.provide(Etcd.layerConfig()))

NodeRuntime.runMain(program.pipe(Effect.provide(LocalEtcd())))
