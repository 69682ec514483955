/**
 * The operator's commands over a sharded group: `etcdseq drain` (a member hands its shards over and stays), and
 * `etcdseq shards pin|unpin|pause|resume|freeze|thaw` (controls of the plan every member obeys). They never join the
 * group: each is a write under `<group>/shards/` (src/internal/operator.ts), and `drain` then follows the group with
 * `EtcdSeq.observe` until the member is drained (the same condition `EtcdSeq.drain` waits on).
 */
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import { Console, Duration, Effect, Option, Stream } from "effect"
import { Etcd } from "../Etcd.js"
import { EtcdSeq } from "../EtcdSeq.js"
import { InvalidOptions } from "../EtcdSeqError.js"
import * as Bounded from "../internal/bounded.js"
import * as Client from "../internal/client.js"
import * as Drain from "../internal/drain.js"
import * as Keys from "../internal/keys.js"
import * as Operator from "../internal/operator.js"
import { type Connection, etcdLayer } from "./connection.js"
import { CliExit, ExitCode } from "./exit.js"
import * as Flags from "./flags.js"
import { flags } from "./help.js"

/** The seam of the client the flags describe (the etcd requests are the library's own; Etcd.make made it). */
const seam = Effect.flatMap(Etcd, Client.required).pipe(Effect.map((shared) => shared.api), Effect.orDie)

const checkGroup = (group: string) => {
  const problem = Keys.invalidGroup(group)
  return problem === undefined ? Effect.void : Effect.fail(new InvalidOptions({ field: "key", reason: problem }))
}

const usage = (line: string) => Effect.fail(new CliExit({ code: ExitCode.usage, line }))

// --- etcdseq drain ---

const drainMember = (
  o: Connection & {
    readonly group: string
    readonly instance: Option.Option<string>
    readonly member: Option.Option<string>
    readonly timeout: Duration.Duration
  }
) =>
  Effect.gen(function*() {
    yield* checkGroup(o.group)
    const target = Option.isSome(o.instance)
      ? { instance: o.instance.value }
      : Option.isSome(o.member)
      ? { id: o.member.value }
      : undefined
    if (target === undefined || (Option.isSome(o.instance) && Option.isSome(o.member))) {
      return yield* usage("give one of --instance or --member")
    }
    if ("instance" in target) {
      const problem = Keys.invalidInstance(target.instance)
      if (problem !== undefined) return yield* new InvalidOptions({ field: "instance", reason: problem })
    }
    // Flags checked before any I/O; then the client.
    return yield* drainTarget(o, target).pipe(Effect.provide(etcdLayer(o)))
  })

const drainTarget = (
  o: { readonly group: string; readonly timeout: Duration.Duration },
  target: { readonly instance: string } | { readonly id: string }
) =>
  Effect.gen(function*() {
    const api = yield* seam
    const found = yield* Operator.findMember(api, o.group, target)
    if (found === undefined) {
      return yield* new CliExit({
        code: ExitCode.noSuchMember,
        line: `group ${o.group} has no live member ${
          "instance" in target ? `with instance "${target.instance}"` : target.id
        }`
      })
    }
    yield* Operator.drain(api, o.group, found)
    yield* Console.log(`draining ${found.id} of group ${o.group}`)
    let moved: ReadonlySet<number> = new Set()
    let said = ""
    const outcome = yield* EtcdSeq.observe(o.group).pipe(
      Stream.map((view) => {
        const p = Drain.progress(view, found.id, moved)
        moved = p.moved
        return p
      }),
      Stream.tap((p) => {
        const line = Drain.describe(found.id, p)
        if (line === said) return Effect.void
        said = line
        return Console.log(line)
      }),
      Stream.filter((p) => p.done !== undefined),
      Stream.runHead,
      Bounded.timeoutOption(o.timeout)
    )
    if (Option.isNone(outcome)) {
      return yield* new CliExit({
        code: ExitCode.notConverged,
        line: `${found.id} not drained within ${Duration.format(o.timeout)}: ${said} (it keeps draining)`
      })
    }
  })

export const drain = Command.make(
  "drain",
  {
    ...Flags.connection,
    group: Flags.group,
    instance: Flags.optional(flags.instance),
    member: Flags.optional(flags.member),
    timeout: Flags.durationOrDefault(flags.timeout)
  },
  drainMember
)

// --- etcdseq shards <action> ---

const actions = ["pin", "unpin", "pause", "resume", "freeze", "thaw"] as const
type Action = typeof actions[number]

/** What `etcdseq shards` asks for. */
interface ShardsAction {
  readonly action: Action
  readonly group: string
  readonly shard: Option.Option<number>
  readonly to: Option.Option<string>
}

const shardsCommand = (o: Connection & ShardsAction) =>
  Effect.gen(function*() {
    yield* checkGroup(o.group)
    const needsShard = o.action === "pin" || o.action === "unpin" || o.action === "pause" || o.action === "resume"
    if (needsShard && Option.isNone(o.shard)) return yield* usage(`shards ${o.action} needs --shard`)
    if (!needsShard && Option.isSome(o.shard)) return yield* usage(`shards ${o.action} takes no --shard`)
    if (o.action === "pin" && Option.isNone(o.to)) return yield* usage("shards pin needs --to <instance>")
    if (o.action !== "pin" && Option.isSome(o.to)) return yield* usage(`shards ${o.action} takes no --to`)
    if (Option.isSome(o.to)) {
      // An instance, or the id of a member without one (its name in the plan).
      const problem = Keys.invalidInstance(o.to.value)
      if (problem !== undefined) return yield* new InvalidOptions({ field: "to", reason: problem })
    }
    return yield* applyAction(o).pipe(Effect.provide(etcdLayer(o)))
  })

const applyAction = (o: ShardsAction) =>
  Effect.gen(function*() {
    const api = yield* seam
    const shard = Option.getOrElse(o.shard, () => 0)
    switch (o.action) {
      case "pin":
        yield* Operator.pin(api, o.group, shard, Option.getOrThrow(o.to))
        return yield* Console.log(`shard ${shard} of ${o.group} pinned to ${Option.getOrThrow(o.to)}`)
      case "unpin":
        yield* Operator.unpin(api, o.group, shard)
        return yield* Console.log(`shard ${shard} of ${o.group} unpinned`)
      case "pause":
        yield* Operator.pause(api, o.group, shard)
        return yield* Console.log(`shard ${shard} of ${o.group} paused: nobody runs it`)
      case "resume":
        yield* Operator.resume(api, o.group, shard)
        return yield* Console.log(`shard ${shard} of ${o.group} resumed`)
      case "freeze": {
        // The owners as the plan has them now (with the controls in effect), by member name: every member reads
        // the same previous owners from the key, whatever its view when it reads it.
        const view = yield* EtcdSeq.observe(o.group).pipe(Stream.runHead, Effect.map(Option.getOrThrow))
        if (view.shards === undefined) {
          return yield* new CliExit({
            code: ExitCode.notConverged,
            line: `group ${o.group} runs no shards: nothing to freeze`
          })
        }
        const nameOf = new Map(
          view.members.map((m) => [m.id, m.instance === undefined ? m.id : Keys.instanceName(m.instance)])
        )
        yield* Operator.freeze(
          api,
          o.group,
          view.shards.owners.map((s) => s.planned === undefined ? undefined : nameOf.get(s.planned))
        )
        return yield* Console.log(`shards of ${o.group} frozen: no planned moves until thawed`)
      }
      case "thaw":
        yield* Operator.thaw(api, o.group)
        return yield* Console.log(`shards of ${o.group} thawed`)
    }
  })

export const shards = Command.make(
  "shards",
  {
    ...Flags.connection,
    action: Flags.action(actions),
    group: Flags.group,
    shard: Flags.shard(flags.shard).pipe(Options.optional),
    to: Flags.optional(flags.to)
  },
  shardsCommand
)
