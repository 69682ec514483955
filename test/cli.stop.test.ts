/**
 * How `etcdseq run` stops its child, end to end on a real etcd: a child (or a grandchild) that ignores SIGTERM is
 * SIGKILLed with its whole process group at `--grace`, and the next child, the successor's child or the wrapper's exit
 * comes only once no process of the group is left; after a self-fence the child gets only the fencing margin; on
 * `InstanceTaken` the old wrapper stops its child and exits 78. And the exit codes a supervisor tells apart.
 *
 * Every child prints, when it starts, which children of its group are alive beside it (`others`, from /proc, zombies
 * gone): "A's child was gone before B's started" is read at the moment B's work began, not from two clocks.
 */
import { expect, layer } from "@effect/vitest"
import { Effect } from "effect"
import { readFileSync } from "node:fs"
import {
  child,
  type ChildLine,
  childLines,
  type Cli,
  cli,
  eventually,
  gone,
  mono,
  type Other,
  starts
} from "./support/cli.js"
import { EtcdEndpoints } from "./support/etcd.js"
import { uniqueGroup } from "./support/members.js"
import { liveGroupPids, pidIsGone } from "./support/processes.js"
import { startProxy } from "./support/proxy.js"
import { expectNothingLeftWithin, expectPidsGone } from "./support/reliability.js"

/** A child that ignores SIGTERM: only the SIGKILL at `--grace` ends it. */
const ignoring = { CHILD_IGNORE_TERM: "1" }
/** The child notes SIGTERM a moment after the wrapper sent it: a SIGKILL may seem this much early. */
const noteLag = 100
/** The wrapper's SIGKILL and its look at the group, then the test's own look, on two cores shared with others. */
const slack = 1_000

const ic = (l: { readonly index: number; readonly count: number }) => `${l.index}/${l.count}`

/** Whether two assignments share a shard: some `s` with `s % n === i` and `s % m === j`. */
const sharesOverlap = (a: { index: number; count: number }, b: { index: number; count: number }) => {
  const gcd = (x: number, y: number): number => y === 0 ? x : gcd(y, x % y)
  return (a.index - b.index) % gcd(a.count, b.count) === 0
}

/** What `--exclusive` forbids to run at once: two children of one index, or (group) with a shard in common. */
const conflicts = {
  index: (a: Other, b: Other) => a.index === b.index,
  group: sharesOverlap
}

/** Every child start that had a child it conflicts with (in `exclusive` mode) alive beside it. */
const overlapsAtStart = (exclusive: keyof typeof conflicts, wrappers: Record<string, Cli>): Array<string> =>
  Object.entries(wrappers).flatMap(([name, w]) =>
    starts(w).flatMap((s) =>
      (s.others ?? []).filter((o) => conflicts[exclusive](s, o)).map((o) =>
        `${name}'s ${ic(s)} (pid ${s.pid}) started beside ${ic(o)} (pid ${o.pid})`
      )
    )
  )

/** The first start of `assignment` after `after` (a line of the same wrapper), waited for. */
const started = (w: Cli, assignment: string, after?: ChildLine) =>
  Effect.gen(function*() {
    const find = () => starts(w).find((l) => ic(l) === assignment && (after === undefined || l.mono > after.mono))
    yield* w.until(() => find() !== undefined, `a child for ${assignment}`)
    return find()!
  })

/** The line the child printed when SIGTERM reached it, waited for. */
const termOf = (w: Cli, pid: number) =>
  Effect.gen(function*() {
    const find = () => childLines(w).find((l) => l.event === "term" && l.pid === pid)
    yield* w.until(() => find() !== undefined, `SIGTERM reaching pid ${pid}`)
    return find()!
  })

/** How long after SIGTERM reached it the child was gone: the SIGKILL came at `grace`, not before, not much after. */
const expectKilledAt = (term: ChildLine, goneAt: number, grace: number) => {
  expect(goneAt - term.mono).toBeGreaterThanOrEqual(grace - noteLag)
  expect(goneAt - term.mono).toBeLessThanOrEqual(grace + slack)
}

const stderrText = (w: Cli) => w.stderrLines().map((l) => l.text)

/**
 * Waits (bounded) for the wrapper to have said `line` on stderr: written before its SIGKILL, it may still be in the
 * pipe when the test sees the child gone.
 */
const said = (w: Cli, line: string) =>
  eventually(() => stderrText(w).includes(line), `"${line}" on stderr:\n${w.stderr()}`, 5_000)

/**
 * `etcdseq run` wrappers, and at the end every child any of them printed a start for SIGKILLed by its pid if it is
 * still alive (a child that ignores SIGTERM outlives a failed test otherwise; a grandchild outlives its wrapper).
 */
const wrappers = Effect.gen(function*() {
  const all: Array<Cli> = []
  yield* Effect.addFinalizer(() =>
    Effect.sync(() => {
      for (const pid of all.flatMap((w) => starts(w).map((s) => s.pid))) {
        if (pidIsGone(pid)) continue
        try {
          // Still the child it was, not a pid used again.
          if (readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("cli-child.mjs")) process.kill(pid, "SIGKILL")
        } catch {
          // gone meanwhile
        }
      }
    })
  )
  return {
    all,
    run: (
      group: string,
      endpoint: string,
      flags: ReadonlyArray<string>,
      env: Record<string, string> = {},
      command: ReadonlyArray<string> = [process.execPath, child]
    ) =>
      Effect.tap(
        cli(["run", "--group", group, "--endpoints", endpoint, ...flags, "--", ...command], env),
        (w) => Effect.sync(() => all.push(w))
      )
  }
})

/** Every pid a wrapper or its children had: all must be gone at the end. */
const pidsOf = (all: ReadonlyArray<Cli>) => all.flatMap((w) => [w.pid, ...starts(w).map((s) => s.pid)])

/** The member ids in the group, as `etcdseq members` lists them. */
const membersOf = (group: string, endpoint: string) =>
  Effect.gen(function*() {
    const members = yield* cli(["members", "--group", group, "--json", "--endpoints", endpoint])
    expect(yield* members.exit()).toBe(0)
    return (JSON.parse(members.lines()[0]!) as { members: Array<{ id: string }> }).members.map((m) => m.id)
  })

/**
 * A child that ignores SIGTERM, its assignment changed by a join (0/1 -> 0/2), then its wrapper stopped with SIGTERM.
 * In `none` mode only the wrapper's own next child waits for it; in `group` mode the joiner's does too.
 */
const reassigned = (exclusive: "none" | "group") =>
  Effect.gen(function*() {
    const { endpoints: [endpoint] } = yield* EtcdEndpoints
    const pids: Array<number> = []
    yield* Effect.scoped(Effect.gen(function*() {
      const { all, run } = yield* wrappers
      const group = uniqueGroup(`stop-${exclusive}`)
      const flags = ["--ttl", "3s", "--grace", "1s", "--exclusive", exclusive]
      const a = yield* run(group, endpoint!, flags, ignoring)
      const a1 = yield* started(a, "0/1")
      const b = yield* run(group, endpoint!, flags)

      // --- The join: A's child is SIGKILLed at --grace, and A's next child starts only once it is gone ---
      const term1 = yield* termOf(a, a1.pid)
      expectKilledAt(term1, yield* gone(a1.pid, 1_000 + slack), 1_000)
      const a2 = yield* started(a, "0/2")
      expect(a2.others?.map((o) => o.pid)).not.toContain(a1.pid)
      const b1 = yield* started(b, "1/2")
      yield* said(a, `etcdseq run: process group ${a1.pid} did not stop within 1s (pids ${a1.pid}): SIGKILL`)

      // --- A stopped with SIGTERM: its child is SIGKILLed at --grace, then A leaves and exits 0 ---
      const sent = mono()
      yield* a.signal("SIGTERM")
      const term2 = yield* termOf(a, a2.pid)
      const [goneAt, code] = yield* Effect.all([gone(a2.pid, 1_000 + slack), a.exit("10 seconds")], {
        concurrency: 2
      })
      expect(code).toBe(0)
      expectKilledAt(term2, goneAt, 1_000)
      // The grace, then a leave that deletes two keys and revokes a lease.
      expect(mono() - sent).toBeLessThan(1_000 + 4_000)
      expect(yield* membersOf(group, endpoint!)).toHaveLength(1)
      const b2 = yield* started(b, "0/1", b1)
      expect(b2.others).toEqual([])

      yield* b.signal("SIGTERM")
      expect(yield* b.exit()).toBe(0)
      expect(starts(a).map(ic)).toEqual(["0/1", "0/2"])
      expect(starts(b).map(ic)).toEqual(["1/2", "0/1"])
      if (exclusive === "group") expect(overlapsAtStart("group", { a, b })).toEqual([])
      yield* expectNothingLeftWithin([endpoint!], [group], "4 seconds")
      pids.push(...pidsOf(all))
    }))
    yield* expectPidsGone(pids)
  })

layer(EtcdEndpoints.layer, { timeout: "60 seconds", excludeTestServices: true })(
  "etcdseq run stops its child",
  (it) => {
    it.scoped(
      "none: a child ignoring SIGTERM is SIGKILLed at --grace on a new assignment and on the wrapper's exit; the next child waits for it",
      () => reassigned("none"),
      60_000
    )

    it.scoped(
      "group: a child ignoring SIGTERM is SIGKILLed at --grace; no two children with overlapping shares run at once, the group does not stall",
      () => reassigned("group"),
      60_000
    )

    it.scoped(
      "a grandchild ignoring SIGTERM: the whole process group is SIGKILLed at --grace, the next child waits for it, none is left after the wrapper's exit",
      () =>
        Effect.gen(function*() {
          const { endpoints: [endpoint] } = yield* EtcdEndpoints
          const pids: Array<number> = []
          yield* Effect.scoped(Effect.gen(function*() {
            const { all, run } = yield* wrappers
            const group = uniqueGroup("stop-grandchild")
            const flags = ["--ttl", "3s", "--grace", "1s", "--exclusive", "index"]
            // The shell starts the worker in the background and waits: SIGTERM ends the shell, not the worker.
            const shell = ["sh", "-c", `${process.execPath} ${child} & wait`]
            const a = yield* run(group, endpoint!, flags, ignoring, shell)
            const leaderOf = (assignment: string) => {
              const line = stderrText(a).find((l) => l.includes(`${assignment} (revision`) && l.includes("started sh"))
              return Number(/as pid (\d+)$/.exec(line ?? "")?.[1])
            }
            const g1 = yield* started(a, "0/1")
            const shell1 = leaderOf("0/1")
            expect(liveGroupPids(shell1).sort()).toEqual([shell1, g1.pid].sort())
            const b = yield* run(group, endpoint!, flags)

            // --- Reassigned: the shell goes at SIGTERM, the worker at the SIGKILL to the group ---
            const term1 = yield* termOf(a, g1.pid)
            expectKilledAt(term1, yield* gone(g1.pid, 1_000 + slack), 1_000)
            const g2 = yield* started(a, "0/2")
            expect(g2.others?.map((o) => o.pid)).not.toContain(g1.pid)
            expect(liveGroupPids(shell1)).toEqual([])
            yield* said(a, `etcdseq run: process group ${shell1} did not stop within 1s (pids ${g1.pid}): SIGKILL`)
            const b1 = yield* started(b, "1/2")

            // --- The wrapper's exit: its group is SIGKILLed at --grace and empty before it leaves ---
            const shell2 = leaderOf("0/2")
            yield* a.signal("SIGTERM")
            const term2 = yield* termOf(a, g2.pid)
            const [goneAt, code] = yield* Effect.all([gone(g2.pid, 1_000 + slack), a.exit("10 seconds")], {
              concurrency: 2
            })
            expect(code).toBe(0)
            expectKilledAt(term2, goneAt, 1_000)
            expect(liveGroupPids(shell2)).toEqual([])
            // B takes index 0 once A released its lock: after A's worker was gone.
            const b2 = yield* started(b, "0/1", b1)
            expect(b2.others).toEqual([])
            expect(overlapsAtStart("index", { a, b })).toEqual([])

            yield* b.signal("SIGTERM")
            expect(yield* b.exit()).toBe(0)
            pids.push(...pidsOf(all), shell1, shell2)
          }))
          yield* expectPidsGone(pids)
        }),
      60_000
    )

    it.scoped(
      "InstanceTaken: the old wrapper SIGKILLs its child at --grace and exits 78 with one line naming the instance; the newer's child starts after",
      () =>
        Effect.gen(function*() {
          const { endpoints: [endpoint] } = yield* EtcdEndpoints
          const pids: Array<number> = []
          yield* Effect.scoped(Effect.gen(function*() {
            const { all, run } = yield* wrappers
            const group = uniqueGroup("stop-instance")
            const flags = ["--ttl", "3s", "--grace", "2s", "--exclusive", "index", "--instance", "worker-7"]
            const old = yield* run(group, endpoint!, flags, ignoring)
            const o1 = yield* started(old, "0/1")
            const newer = yield* run(group, endpoint!, flags)

            const term = yield* termOf(old, o1.pid)
            const [goneAt, code] = yield* Effect.all([gone(o1.pid, 2_000 + slack), old.exit("10 seconds")], {
              concurrency: 2
            })
            expectKilledAt(term, goneAt, 2_000)
            expect(code).toBe(78)
            const own = stderrText(old).filter((l) => l.startsWith("etcdseq: "))
            expect(own).toEqual([
              `etcdseq: instance "worker-7" of group "${group}" was taken over by a newer member with that instance`
            ])
            expect(stderrText(old).at(-1)).toBe(own[0])
            yield* said(old, `etcdseq run: process group ${o1.pid} did not stop within 2s (pids ${o1.pid}): SIGKILL`)

            const n1 = yield* started(newer, "0/1")
            expect(n1.others).toEqual([])
            expect(overlapsAtStart("index", { old, newer })).toEqual([])
            expect(yield* membersOf(group, endpoint!)).toHaveLength(1)
            yield* newer.signal("SIGTERM")
            expect(yield* newer.exit()).toBe(0)
            yield* expectNothingLeftWithin([endpoint!], [group], "4 seconds")
            pids.push(...pidsOf(all))
          }))
          yield* expectPidsGone(pids)
        }),
      60_000
    )

    it.scoped(
      "a self-fence: a wrapper cut off from etcd SIGKILLs its child within half the fencing margin (300 ms at TTL 3 s), before its lease can expire; the successor's child starts after",
      () =>
        Effect.gen(function*() {
          const { endpoints: [endpoint] } = yield* EtcdEndpoints
          const pids: Array<number> = []
          yield* Effect.scoped(Effect.gen(function*() {
            const { all, run } = yield* wrappers
            const group = uniqueGroup("stop-fence")
            const flags = ["--ttl", "3s", "--grace", "2s", "--exclusive", "group"]
            const proxy = yield* startProxy(endpoint!)
            const b = yield* run(group, endpoint!, flags)
            const b1 = yield* started(b, "0/1")
            const a = yield* run(group, proxy.endpoint, flags, ignoring)
            const a1 = yield* started(a, "1/2")
            const b2 = yield* started(b, "0/2", b1)

            // --- Cut off: A fences itself and its child gets half the fencing margin, not --grace ---
            const cutAt = mono()
            yield* proxy.cut
            const term = yield* termOf(a, a1.pid)
            const goneAt = yield* gone(a1.pid, 300 + slack)
            expectKilledAt(term, goneAt, 300)
            yield* eventually(() => stderrText(a).some((l) => l.includes("self-fencing")), "A's self-fence", 5_000)
            // The fence comes TTL - 600 ms after the last keepalive that succeeded (sent before the cut), the SIGKILL
            // half the margin after the fence: the child is gone before the lease can expire, a TTL after the cut.
            expect(goneAt - cutAt).toBeLessThan(3_000)
            yield* said(a, `etcdseq run: process group ${a1.pid} did not stop within 300ms (pids ${a1.pid}): SIGKILL`)

            // --- A's lease expires: B takes every share, its child starting after A's was gone ---
            const b3 = yield* started(b, "0/1", b2)
            expect(b3.others).toEqual([])
            expect(overlapsAtStart("group", { a, b })).toEqual([])

            yield* b.signal("SIGTERM")
            expect(yield* b.exit()).toBe(0)
            yield* a.signal("SIGKILL")
            expect(yield* a.exit()).toBe("SIGKILL")
            pids.push(...pidsOf(all))
          }))
          yield* expectPidsGone(pids)
        }),
      60_000
    )

    it.scoped(
      "exit codes: a child's 64, 69 and 78 pass through with the wrapper's last line naming them; --grace not shorter than --ttl exits 64",
      () =>
        Effect.gen(function*() {
          const { endpoints: [endpoint] } = yield* EtcdEndpoints
          const pids: Array<number> = []
          yield* Effect.scoped(Effect.gen(function*() {
            const { all, run } = yield* wrappers
            // Codes the wrapper uses itself (usage, etcd unavailable, instance taken): its last line tells them apart.
            const childExits = (code: number) =>
              Effect.gen(function*() {
                const w = yield* run(uniqueGroup(`exit-${code}`), endpoint!, ["--ttl", "3s"], {
                  CHILD_EXIT: String(code)
                })
                expect(yield* w.exit("40 seconds")).toBe(code)
                const [start] = starts(w)
                expect(stderrText(w).at(-1)).toBe(
                  `etcdseq run: pid ${start!.pid} exited with ${code}; leaving the group`
                )
                expect(stderrText(w).filter((l) => l.startsWith("etcdseq: "))).toEqual([])
              })
            // Refused before it joins: a leave waits at most the TTL for the child, so a longer grace would not hold.
            const grace = (grace: string) =>
              Effect.gen(function*() {
                const w = yield* run(uniqueGroup("exit-grace"), endpoint!, ["--ttl", "3s", "--grace", grace])
                expect(yield* w.exit("40 seconds")).toBe(64)
                expect(stderrText(w)).toEqual([
                  `etcdseq: --grace ${grace}: must be shorter than --ttl 3s (a leave waits at most the TTL for the child to stop)`
                ])
                expect(w.lines()).toEqual([])
              })
            yield* Effect.all([childExits(64), childExits(69), childExits(78), grace("5s"), grace("3s")], {
              concurrency: "unbounded"
            })
            pids.push(...pidsOf(all))
          }))
          yield* expectPidsGone(pids)
        }),
      60_000
    )

    it.scoped("without --grace a stop gives half the TTL", () =>
      Effect.gen(function*() {
        const { endpoints: [endpoint] } = yield* EtcdEndpoints
        const pids: Array<number> = []
        yield* Effect.scoped(Effect.gen(function*() {
          const { all, run } = yield* wrappers
          const group = uniqueGroup("stop-default")
          const w = yield* run(group, endpoint!, ["--ttl", "3s"], ignoring)
          const w1 = yield* started(w, "0/1")
          yield* w.signal("SIGTERM")
          const term = yield* termOf(w, w1.pid)
          const [goneAt, code] = yield* Effect.all([gone(w1.pid, 1_500 + slack), w.exit("10 seconds")], {
            concurrency: 2
          })
          expect(code).toBe(0)
          expectKilledAt(term, goneAt, 1_500)
          yield* said(w, `etcdseq run: process group ${w1.pid} did not stop within 1s 500ms (pids ${w1.pid}): SIGKILL`)
          pids.push(...pidsOf(all))
        }))
        yield* expectPidsGone(pids)
      }), 60_000)
  }
)
