/**
 * The `etcdseq` command end to end: real `etcdseq` processes against a real etcd. Three `etcdseq run` wrappers around
 * a small program that prints its assignment; one SIGKILLed, one stopped with SIGTERM; `members`, `status` and
 * `watch` beside them; exit codes and the one line on stderr for each error.
 */
import * as CliConfig from "@effect/cli/CliConfig"
import * as Descriptor from "@effect/cli/CommandDescriptor"
import * as HelpDoc from "@effect/cli/HelpDoc"
import { describe, expect, it } from "@effect/vitest"
import { Deferred, Effect } from "effect"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { commandHelp } from "../src/cli/help.js"
import { members as membersCommand, status as statusCommand, watch as watchCommand } from "../src/cli/inspect.js"
import { run as runCommand } from "../src/cli/run.js"
import { ui as uiCommand } from "../src/cli/ui.js"
import { Etcd, EtcdSeq } from "../src/index.js"
import { assignments, child, childLines, type Cli, cli, gone, root, runsOf } from "./support/cli.js"
const modulesHook = fileURLToPath(new URL("./support/cli-modules.mjs", import.meta.url))
import { startEtcd } from "./support/etcd.js"
import { uniqueGroup } from "./support/members.js"
import { expectNothingLeftWithin, expectPidsGone } from "./support/reliability.js"
import { shardOverlaps } from "./support/shardChecker.js"

const packageVersion = (JSON.parse(readFileSync(`${root}/package.json`, "utf8")) as { version: string }).version

describe("the etcdseq command", () => {
  it.live(
    "three run wrappers: assignments in order, a SIGKILL and a SIGTERM, no orphan child, no index run twice at once",
    () =>
      Effect.gen(function*() {
        const pids: Array<number | undefined> = []
        yield* Effect.scoped(Effect.gen(function*() {
          const etcd = yield* startEtcd({ name: "cli-run" })
          pids.push(etcd.pid)
          const group = uniqueGroup("cli")
          const endpoints = ["--endpoints", etcd.clientUrl]
          const watch = yield* cli(["watch", "--group", group, "--json", ...endpoints])
          yield* watch.until((ls) => ls.length >= 1, "first view")
          // w2's children take 1.5 s to stop, the others' 200 ms: when w1 leaves, w3 takes index 1 from w2 and, had it
          // not waited for the index lock, its child would overlap w2's stopping one.
          const wrapper = (stopMillis: number) =>
            cli([
              "run",
              "--group",
              group,
              "--ttl",
              "3s",
              "--grace",
              "2s",
              "--exclusive",
              "index",
              ...endpoints,
              "--",
              process.execPath,
              child
            ], { CHILD_STOP_MILLIS: String(stopMillis) })
          const started = (w: Cli, count: number) =>
            w.until(
              () => childLines(w).some((l) => l.event === "start" && l.count === count),
              `a run of count ${count}`
            )
          const w1 = yield* wrapper(200)
          yield* started(w1, 1)
          const w2 = yield* wrapper(1_500)
          yield* started(w2, 2)
          const w3 = yield* wrapper(200)
          yield* Effect.all([started(w1, 3), started(w2, 3), started(w3, 3)])
          pids.push(w1.pid, w2.pid, w3.pid, watch.pid)

          // --- The inspector agrees with what the children were told ---
          const members = yield* cli(["members", "--group", group, "--json", ...endpoints])
          expect(yield* members.exit()).toBe(0)
          const listed = JSON.parse(members.lines()[0]!) as { members: Array<{ index: number; id: string }> }
          expect(listed.members.map((m) => m.index)).toEqual([0, 1, 2])
          const status = yield* cli(["status", "--group", group, "--json", ...endpoints])
          yield* status.until((ls) => ls.length > 0, "status")
          const state = JSON.parse(status.lines()[0]!) as {
            members: Array<{ id: string }>
            locks: Array<{ index: number; holder: string }>
            waiting: Array<string>
          }
          expect(state.members).toEqual(listed.members)
          expect(yield* status.exit()).toBe(state.waiting.length === 0 ? 0 : 75)

          // --- A wrapper stopped with SIGTERM: its child is stopped, it leaves and exits 0; the others shift down ---
          const w1Child = childLines(w1).at(-1)!.pid
          yield* w1.signal("SIGTERM")
          expect(yield* w1.exit()).toBe(0)
          yield* gone(w1Child, 100)
          expect(childLines(w1).at(-1)).toMatchObject({ event: "stop", pid: w1Child })
          yield* w2.until(() => assignments(w2).at(-1) === "0/2", "0/2 after the leave")
          yield* w3.until(() => assignments(w3).at(-1) === "1/2", "1/2 after the leave")
          // --- A wrapper SIGKILLed: its child dies with it; the other moves after the TTL ---
          const w2Child = childLines(w2).at(-1)!.pid
          yield* w2.signal("SIGKILL")
          expect(yield* w2.exit()).toBe("SIGKILL")
          const w2ChildGone = yield* gone(w2Child)
          yield* w3.until(() => assignments(w3).at(-1) === "0/1", "0/1 after the crash")

          expect(assignments(w1)).toEqual(["0/1", "0/2", "0/3"])
          expect(assignments(w2)).toEqual(["1/2", "1/3", "0/2"])
          expect(assignments(w3)).toEqual(["2/3", "1/2", "0/1"])
          const runs = [
            ...runsOf("w1", w1, new Map()),
            ...runsOf("w2", w2, new Map([[w2Child, w2ChildGone]])),
            ...runsOf("w3", w3, new Map())
          ]
          expect(shardOverlaps(runs)).toEqual([])

          yield* w3.signal("SIGTERM")
          expect(yield* w3.exit()).toBe(0)
          yield* watch.until(
            (ls) => (JSON.parse(ls.at(-1)!) as { members: Array<unknown> }).members.length === 0,
            "the empty group"
          )
          yield* watch.signal("SIGINT")
          expect(yield* watch.exit()).toBe(0)
          // Every view in order: 0, 1, 2, 3 members, the leave (2), the crash (1), the last leave (0). A wrapper stopped
          // with SIGTERM drains before it leaves.
          const lines = watch.lines().map((l) =>
            JSON.parse(l) as { revision: number; members: Array<{ id: string }>; drains: Array<string> }
          )
          const views = lines.filter((v, i) =>
            i === 0 || JSON.stringify(v.members) !== JSON.stringify(lines[i - 1]!.members)
          )
          expect(views.map((v) => v.members.length)).toEqual([0, 1, 2, 3, 2, 1, 0])
          // Other lines (a lock or the handover changing) show no drain, and a drain and the leave after it may come in
          // one line (cli.shards.test.ts proves the drain itself); a drain is always of a member still there.
          for (const v of lines) for (const id of v.drains) expect(v.members.map((m) => m.id)).toContain(id)
          expect(views.map((v) => v.revision)).toEqual([...views.map((v) => v.revision)].sort((a, b) => a - b))
          yield* expectNothingLeftWithin([etcd.clientUrl], [group], "4 seconds")
        }))
        yield* expectPidsGone(pids)
      }),
    120_000
  )

  it.live(
    "exit codes: a child's failure, bad flags, an unreachable etcd, a command that cannot start, not converged",
    () =>
      Effect.gen(function*() {
        const pids: Array<number | undefined> = []
        yield* Effect.scoped(Effect.gen(function*() {
          const etcd = yield* startEtcd({ name: "cli-exit" })
          pids.push(etcd.pid)
          const group = uniqueGroup("cli-exit")
          const endpoints = ["--endpoints", etcd.clientUrl]
          const oneLine = (w: Cli) => w.stderr().trim().split("\n").filter((l) => l.trim() !== "")

          // A child exiting 3: the wrapper leaves the group and exits 3.
          const failing = yield* cli(["run", "--group", group, ...endpoints, "--", process.execPath, child], {
            CHILD_EXIT: "3"
          })
          expect(yield* failing.exit()).toBe(3)
          const after = yield* cli(["members", "--group", group, "--json", ...endpoints])
          expect(yield* after.exit()).toBe(0)
          expect(JSON.parse(after.lines()[0]!)).toMatchObject({ members: [] })

          // A child exiting 0 waits for the next assignment; SIGTERM then ends the wrapper with 0.
          const done = yield* cli(["run", "--group", group, ...endpoints, "--", process.execPath, child], {
            CHILD_EXIT: "0"
          })
          yield* done.until((ls) => ls.length > 0, "the child's start")
          yield* Effect.sleep("500 millis")
          expect(childLines(done)).toHaveLength(1)
          yield* done.signal("SIGTERM")
          expect(yield* done.exit()).toBe(0)

          // The child's stdin is empty: one that reads it gets EOF at once (here, then exits 7).
          const reader = yield* cli(["run", "--group", group, ...endpoints, "--", "sh", "-c", "cat >/dev/null; exit 7"])
          expect(yield* reader.exit()).toBe(7)

          // The command's own codes are the sysexits numbers docs/command.md lists (a supervisor sees numbers): usage 64
          // (an option the library refuses, here; bad flags below), etcd unavailable 69, not converged 75; a command not
          // found 127, as a shell says.
          const reserved = yield* cli(["members", "--group", "a/locks", ...endpoints])
          expect(yield* reserved.exit()).toBe(64)
          expect(oneLine(reserved)).toEqual([
            `etcdseq: --group: "locks" is a reserved segment (the library writes it under a group; it would nest in another's keys)`
          ])

          const unreachable = yield* cli([
            "status",
            "--group",
            group,
            "--endpoints",
            "http://127.0.0.1:9",
            "--connect-timeout",
            "500ms"
          ])
          expect(yield* unreachable.exit()).toBe(69)
          expect(oneLine(unreachable)).toEqual([
            "etcdseq: etcd at http://127.0.0.1:9 refused the connection: is etcd running and listening there?"
          ])

          const nothing = yield* cli(["run", "--group", group, ...endpoints, "--", "/nonexistent/program"])
          expect(yield* nothing.exit()).toBe(127)
          // Not started (no setpriv), or started by setpriv, which then exits 127 as a shell would.
          expect(nothing.stderr()).toContain("/nonexistent/program")

          // Not converged: members in group mode whose work does not stop until the test says, while a join waits.
          const release = yield* Deferred.make<void>()
          const slow = (seq: EtcdSeq["Type"]) =>
            Effect.gen(function*() {
              const started = yield* Deferred.make<void>()
              yield* EtcdSeq.runAssigned(
                () =>
                  Deferred.succeed(started, undefined).pipe(
                    Effect.zipRight(Effect.addFinalizer(() => Deferred.await(release))),
                    Effect.zipRight(Effect.never)
                  ),
                { exclusive: "group" }
              ).pipe(Effect.provideService(EtcdSeq, seq), Effect.forkScoped)
              return started
            })
          const client = yield* Etcd.make({ endpoints: [etcd.clientUrl] })
          const a = yield* EtcdSeq.make({ key: group, ttl: "5 seconds" }).pipe(Effect.provideService(Etcd, client))
          // Its work started: its handover promise is published.
          yield* Deferred.await(yield* slow(a))
          const converged = yield* cli(["status", "--group", group, ...endpoints])
          expect(yield* converged.exit()).toBe(0)
          expect(converged.lines().at(-1)).toBe("converged")
          const b = yield* EtcdSeq.make({ key: group, ttl: "5 seconds" }).pipe(Effect.provideService(Etcd, client))
          yield* slow(b)
          const waiting = yield* cli(["status", "--group", group, ...endpoints])
          expect(yield* waiting.exit()).toBe(75)
          expect(waiting.lines().join("\n")).toMatch(/handover: view \d+ waits for/)
          expect(oneLine(waiting)).toHaveLength(1)
          expect(oneLine(waiting)[0]).toMatch(new RegExp(`^etcdseq: group ${group} has not converged: \\d+ waiting$`))
          yield* Deferred.succeed(release, undefined)
          pids.push(failing.pid, done.pid, reader.pid, reserved.pid, unreachable.pid, nothing.pid, waiting.pid)
        }))
        yield* expectPidsGone(pids)
      }),
    120_000
  )

  it.live(
    "usage errors: one line each, prefixed, naming the flag or argument, exit 64; nothing is started",
    () =>
      Effect.gen(function*() {
        const cases: ReadonlyArray<readonly [ReadonlyArray<string>, string]> = [
          [["members"], "etcdseq: --group is required (see etcdseq members --help)"],
          [["members", "--group"], "etcdseq: --group needs a value (see etcdseq members --help)"],
          [
            ["members", "--grup", "g"],
            "etcdseq: unknown flag --grup; did you mean --group? (see etcdseq members --help)"
          ],
          [["watch", "--group", "g", "--bogus"], "etcdseq: unknown flag --bogus (see etcdseq watch --help)"],
          [["status", "--group", "g", "extra"], `etcdseq: unexpected argument "extra" (see etcdseq status --help)`],
          [
            ["members", "--group", "g", "--connect-timeout", "1x"],
            `etcdseq: --connect-timeout: "1x" is not a duration (write 3s, 500ms, 2m or "3 seconds")`
          ],
          [
            ["members", "--group", "g", "--log-level", "loud"],
            `etcdseq: --log-level: "loud" is not one of all, trace, debug, info, warning, error, fatal, none`
          ],
          [
            ["run", "--group", "g", "--ttl", "soon", "--", "true"],
            `etcdseq: --ttl: "soon" is not a duration (write 3s, 500ms, 2m or "3 seconds")`
          ],
          [
            ["run", "--group", "g", "--exclusive", "all", "--", "true"],
            `etcdseq: --exclusive: "all" is not one of none, index, group`
          ],
          // @effect/cli leaves a flag it cannot read to the arguments: it is not started as the command.
          [["run", "--group", "g", "--ttl", "--", "true"], "etcdseq: --ttl needs a value (see etcdseq run --help)"],
          [["run", "--group", "g", "--bogus", "--", "true"], "etcdseq: unknown flag --bogus (see etcdseq run --help)"],
          [
            ["run", "--group", "g"],
            "etcdseq: no <command> given: etcdseq run [flags] -- <command> [args...] (see etcdseq run --help)"
          ],
          [
            ["frob"],
            `etcdseq: unknown command "frob": one of run, members, watch, status, drain, shards, ui (see etcdseq --help)`
          ],
          [
            ["--group", "g", "members"],
            "etcdseq: a command comes first, then its flags: one of run, members, watch, status, drain, shards, ui (see etcdseq --help)"
          ]
        ]
        const pids: Array<number> = []
        yield* Effect.scoped(Effect.forEach(cases, ([args, line]) =>
          Effect.gen(function*() {
            const w = yield* cli(args)
            pids.push(w.pid)
            // Each is a process through tsx: on two busy cores a start can take several seconds.
            expect(yield* w.exit("60 seconds"), args.join(" ")).toBe(64)
            expect(w.stderr(), args.join(" ")).toBe(`${line}\n`)
            expect(w.lines()).toEqual([])
          }), { concurrency: 2 }))
        yield* expectPidsGone(pids)
      }),
    240_000
  )

  it.live(
    "an etcd that accepts the connection and never answers: \"did not answer within\", exit 69",
    () =>
      Effect.gen(function*() {
        // A TCP server that accepts and says nothing, as a paused or firewalled etcd would.
        const sockets = new Set<net.Socket>()
        const server = yield* Effect.acquireRelease(
          Effect.async<net.Server>((resume) => {
            const server = net.createServer((socket) => void sockets.add(socket))
            server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
          }),
          (server) =>
            Effect.async<void>((resume) => {
              for (const socket of sockets) socket.destroy()
              server.close(() => resume(Effect.void))
            })
        )
        const { port } = server.address() as net.AddressInfo
        const silent = yield* cli([
          "members",
          "--group",
          "g",
          "--endpoints",
          `http://127.0.0.1:${port}`,
          "--connect-timeout",
          "500ms"
        ])
        expect(yield* silent.exit()).toBe(69)
        expect(silent.stderr()).toBe(
          `etcdseq: etcd at http://127.0.0.1:${port} did not answer within 500ms: is etcd running there, and reachable ` +
            `from here?\n`
        )
        // ETCD_ENDPOINTS stands for --endpoints. With --log-level debug, the client's error is logged before the line.
        const fromEnv = yield* cli(["members", "--group", "g", "--connect-timeout", "500ms", "--log-level", "debug"], {
          ETCD_ENDPOINTS: "http://127.0.0.1:9"
        })
        expect(yield* fromEnv.exit()).toBe(69)
        expect(fromEnv.stderrLines().map((l) => l.text)).toEqual([
          expect.stringMatching(/^timestamp=\S+ level=DEBUG .*ECONNREFUSED 127\.0\.0\.1:9/),
          "etcdseq: etcd at http://127.0.0.1:9 refused the connection: is etcd running and listening there?"
        ])
        expect(fromEnv.lines()).toEqual([])
        // Neither given (the harness sets ETCD_ENDPOINTS empty): the line says the default was used, and how to give
        // another. An etcd at the default address on this machine would answer: then there is no line to check.
        const unset = yield* cli(["status", "--group", uniqueGroup("cli-default"), "--connect-timeout", "500ms"])
        const code = yield* unset.exit()
        expect([0, 69]).toContain(code)
        if (code === 69) {
          expect(unset.stderr()).toMatch(
            /^etcdseq: etcd at http:\/\/127\.0\.0\.1:2379 .*\(the default endpoint: set --endpoints or ETCD_ENDPOINTS\)\n$/
          )
        }
        yield* expectPidsGone([silent.pid, fromEnv.pid, unset.pid])
      }).pipe(Effect.scoped),
    60_000
  )

  it.live(
    "--help: plain text when piped, every flag with its default, `--` explained; --version",
    () =>
      Effect.scoped(Effect.gen(function*() {
        const [run, root, members, version, child] = yield* Effect.all([
          cli(["run", "--help"]),
          cli([]),
          cli(["members", "--group", "g", "-h"]),
          cli(["--version"]),
          // After `--`, --help and --version are the command's.
          cli(["run", "--group", "g", "--endpoints", "http://127.0.0.1:9", "--", "true", "--help", "--version"])
        ])
        for (const w of [run, root, members, version]) {
          expect(yield* w.exit()).toBe(0)
          expect(w.stderr()).toBe("")
          expect(w.lines().join("\n")).not.toContain("\u001b[")
        }
        expect(yield* child.exit()).toBe(69)

        // Wrapped at 80 columns: read as one line.
        const text = run.lines().join("\n").replace(/\s+/g, " ")
        expect(run.lines()[0]).toBe("Usage: etcdseq run --group <key> [flags] -- <command> [args...]")
        expect(run.lines().length).toBeLessThan(60)
        expect(text).toContain("Everything after -- is the command and its arguments")
        for (const env of ["ETCDSEQ_GROUP", "ETCDSEQ_INDEX", "ETCDSEQ_COUNT", "ETCDSEQ_FENCE", "ETCDSEQ_REVISION"]) {
          expect(text).toContain(env)
        }
        for (const shown of ["(default: 10s)", "(default: half the TTL)", "(default: none)", "(default: 5s)"]) {
          expect(text).toContain(shown)
        }
        expect(text).toContain("(default: $ETCD_ENDPOINTS, then http://127.0.0.1:2379)")
        expect(text).not.toContain("A user-defined piece of text")
        expect(root.lines()[0]).toBe(
          `etcdseq ${packageVersion}: an (index, count) for each member of a group, through etcd.`
        )
        expect(root.lines().join("\n")).toMatch(/^ {2}status {4}/m)
        expect(members.lines()[0]).toBe("Usage: etcdseq members --group <key> [--json] [flags]")
        expect(version.lines()).toEqual([packageVersion])
      })),
    60_000
  )

  it.live(
    "--version, --help and a mistyped command load nothing but main.ts and help.ts",
    () =>
      Effect.gen(function*() {
        const dir = yield* Effect.acquireRelease(
          Effect.sync(() => mkdtempSync(path.join(os.tmpdir(), "etcdseq-modules-"))),
          (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
        )
        const loaded = (args: ReadonlyArray<string>) =>
          Effect.gen(function*() {
            const file = path.join(dir, `${args.join("_")}.txt`)
            const w = yield* cli(args, { NODE_OPTIONS: `--import ${modulesHook}`, CLI_MODULES_FILE: file })
            yield* w.exit()
            // All but tsx, which runs the TypeScript, and esbuild, which tsx runs.
            return readFileSync(file, "utf8").split("\n").filter((url) => url.startsWith("file:"))
              .map((url) => path.relative(root, fileURLToPath(url)))
              .filter((file) => !/^node_modules\/(tsx|esbuild)\//.test(file))
          })
        const only = ["src/cli/main.ts", "src/cli/help.ts"]
        expect(yield* loaded(["--version"])).toEqual(only)
        expect(yield* loaded(["run", "--help"])).toEqual(only)
        expect(yield* loaded(["frob"])).toEqual(only)
        // A subcommand loads its own module, not the others'.
        const members = yield* loaded(["members"])
        expect(members).toContain("src/cli/inspect.ts")
        expect(members).not.toContain("src/cli/run.ts")
      }).pipe(Effect.scoped),
    60_000
  )

  it("the help lists exactly the flags each subcommand's parser reads", () => {
    const parsers = {
      run: runCommand.descriptor as Descriptor.Command<unknown>,
      members: membersCommand.descriptor as Descriptor.Command<unknown>,
      watch: watchCommand.descriptor as Descriptor.Command<unknown>,
      status: statusCommand.descriptor as Descriptor.Command<unknown>,
      ui: uiCommand.descriptor as Descriptor.Command<unknown>
    }
    for (const [name, descriptor] of Object.entries(parsers)) {
      const parsed = HelpDoc.toAnsiText(Descriptor.getHelp(descriptor, CliConfig.make({ showBuiltIns: false })))
        .match(/--[a-z][a-z-]*/g)
      const helped = commandHelp(name as keyof typeof parsers).match(/^ {2}--[a-z][a-z-]*/gm)!.map((f) => f.trim())
      // --log-level is read before the parser (program.ts).
      expect(new Set(helped), name).toEqual(new Set([...parsed!, "--log-level"]))
    }
  })
})
