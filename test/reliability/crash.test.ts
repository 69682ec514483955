/**
 * Members in processes of their own: a crash (SIGKILL) is seen by the others within TTL + 1 s, and a member that
 * leaves ends its process by itself (no watcher, timer or socket keeps Node alive).
 */
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect } from "effect"
import { startEtcd } from "../support/etcd.js"
import { uniqueGroup } from "../support/members.js"
import { type MemberProcess, spawnMember } from "../support/processes.js"
import { expectNothingLeftWithin, expectPidsGone, figure } from "../support/reliability.js"

const ttl = Duration.seconds(3)
const ttlMillis = Duration.toMillis(ttl)

/** Leaves, then the process must end on its own, cleanly, within `within`. */
const leaveAndExit = (member: MemberProcess, within: Duration.DurationInput) =>
  Effect.gen(function*() {
    yield* member.leave
    const exit = yield* member.exit(within)
    expect(
      exit._tag,
      `member ${member.pid} still running ${
        Duration.format(Duration.decode(within))
      } after leaving; stderr:\n${member.stderr()}`
    ).toBe(
      "Some"
    )
    if (exit._tag === "Some") {
      expect({ code: exit.value.code, signal: exit.value.signal }).toEqual({ code: 0, signal: null })
    }
    const events = yield* member.events
    expect(events.at(-1)?.event).toBe("done")
  })

describe("member processes", () => {
  it.live(
    "a SIGKILLed member is seen leaving within TTL + 1 s; the others end their processes by themselves",
    () =>
      Effect.gen(function*() {
        const pids: Array<number | undefined> = []
        yield* Effect.scoped(Effect.gen(function*() {
          const etcd = yield* startEtcd({ name: "crash" })
          pids.push(etcd.pid)
          const group = uniqueGroup("crash")
          const options = { endpoints: [etcd.clientUrl], group, ttl }
          const started = yield* Effect.all([spawnMember(options), spawnMember(options), spawnMember(options)], {
            concurrency: "unbounded"
          })
          pids.push(...started.map((m) => m.pid))
          const infos = yield* Effect.forEach(started, (m) => m.waitFor((i) => i.count === 3, "10 seconds", "count 3"))
          const [low, middle, high] = started.map((m, i) => ({ m, index: infos[i]!.index }))
            .sort((a, b) => a.index - b.index).map((x) => x.m)
          expect(infos.map((i) => i.index).sort()).toEqual([0, 1, 2])

          const crashed = yield* middle!.crash
          expect(crashed.signal).toBe("SIGKILL")
          const [lowSaw, highSaw] = yield* Effect.all([
            low!.waitFor((i) => i.count === 2, ttlMillis + 2_000, "the leave"),
            high!.waitFor((i) => i.count === 2, ttlMillis + 2_000, "the leave")
          ], { concurrency: "unbounded" })
          const detection = Math.max(lowSaw.at, highSaw.at) - crashed.at
          yield* figure("crash detection (SIGKILL to every other member's new Info, TTL 3 s)", detection)
          expect(detection).toBeLessThanOrEqual(ttlMillis + 1_000)
          // The crash moves the member after it down one index; nobody lost its membership meanwhile.
          expect((yield* low!.infos).slice(-2)).toEqual(["0/3", "0/2"])
          expect((yield* high!.infos).slice(-2)).toEqual(["2/3", "1/2"])
          expect([...(yield* low!.infos), ...(yield* high!.infos)]).not.toContain("invalid")

          yield* Effect.all([leaveAndExit(low!, "5 seconds"), leaveAndExit(high!, "5 seconds")], {
            concurrency: "unbounded"
          })
          // The crashed member's lease expired (its leave was seen); the others revoked theirs.
          yield* expectNothingLeftWithin([etcd.clientUrl], [group], "2 seconds")
        }))
        yield* expectPidsGone(pids)
      }),
    60_000
  )
})
