/**
 * The inspector: `etcdseq members`, `watch` and `status`, built on `EtcdSeq.observe` (they never join the group).
 */
import * as Command from "@effect/cli/Command"
import { Console, Effect, Option, Stream } from "effect"
import { EtcdSeq } from "../EtcdSeq.js"
import type { GroupView } from "../GroupView.js"
import { type Connection, etcdLayer } from "./connection.js"
import { CliExit, ExitCode } from "./exit.js"
import * as Flags from "./flags.js"

/** The group's current view, read once. */
const current = (connection: Connection, group: string) =>
  EtcdSeq.observe(group).pipe(
    Stream.runHead,
    Effect.map(Option.getOrThrow),
    Effect.provide(etcdLayer(connection))
  )

/** Rows as columns padded to their widest cell. */
export const table = (header: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>): string => {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)))
  return [header, ...rows].map((r) => r.map((cell, i) => cell.padEnd(widths[i]!)).join("  ").trimEnd()).join("\n")
}

const membersTable = (view: GroupView): string => {
  const drains = new Set(view.drains)
  return table(
    ["INDEX", "ID", "INSTANCE", "JOINED", "WEIGHT", "METADATA"],
    view.members.map((m) => [
      String(m.index),
      m.id,
      m.instance ?? "-",
      String(m.joinRevision),
      `${m.weight}${drains.has(m.id) ? " (draining)" : ""}`,
      m.metadata
    ])
  )
}

const viewJson = (view: GroupView) => ({
  group: view.group,
  revision: view.revision,
  members: view.members,
  controls: view.controls,
  drains: view.drains
})

/** The controls and drains in one line, empty when there are none. */
const controlsLine = (view: GroupView): string => {
  const parts: Array<string> = []
  if (view.drains.length > 0) parts.push(`draining ${view.drains.join(",")}`)
  if (view.controls.pins.length > 0) {
    parts.push(`pinned ${view.controls.pins.map((p) => `${p.shard}->${p.to}`).join(",")}`)
  }
  if (view.controls.paused.length > 0) parts.push(`paused ${view.controls.paused.join(",")}`)
  if (view.controls.frozen) parts.push("frozen")
  return parts.join("; ")
}

/**
 * One line per view: `<revision> <count> members: <index>=<id>[@instance][*weight] ...`, then the controls and
 * drains when there are any.
 */
const viewLine = (view: GroupView): string => {
  const controls = controlsLine(view)
  return `revision ${view.revision}: ${view.members.length} member${view.members.length === 1 ? "" : "s"}${
    view.members.length === 0 ? "" : ":"
  } ${
    view.members.map((m) =>
      `${m.index}=${m.id}${m.instance === undefined ? "" : `@${m.instance}`}${m.weight === 1 ? "" : `*${m.weight}`}`
    ).join(" ")
  }`.trimEnd() + (controls === "" ? "" : ` | ${controls}`)
}

const statusText = (view: GroupView): string => {
  const parts = [`group ${view.group} at revision ${view.revision}: ${view.members.length} members`, membersTable(view)]
  if (view.locks.length > 0) {
    parts.push(
      "index locks:\n" + table(
        ["INDEX", "HOLDER", "FENCE", "WAITING"],
        view.locks.map((l) => [String(l.index), l.holder, String(l.fence), l.waiting.join(",") || "-"])
      )
    )
  }
  if (view.handover.length > 0) {
    parts.push("handover:\n" + table(["MEMBER", "PUBLISHED"], view.handover.map((h) => [h.id, String(h.revision)])))
  }
  if (view.shards !== undefined) {
    parts.push(
      `shards (${view.shards.shards}):\n` + table(
        ["SHARD", "PLANNED", "HOLDER", "FENCE", "WAITING"],
        view.shards.owners.map((o) => [
          String(o.shard),
          o.planned ?? "- (paused)",
          o.holder ?? "-",
          o.fence === undefined ? "-" : String(o.fence),
          o.waiting.join(",") || "-"
        ])
      )
    )
  }
  const controls = controlsLine(view)
  if (controls !== "") parts.push(`controls: ${controls}`)
  parts.push(view.waiting.length === 0 ? "converged" : `waiting:\n${view.waiting.map((w) => `  ${w}`).join("\n")}`)
  return parts.join("\n\n")
}

const flags = { ...Flags.connection, group: Flags.group, json: Flags.json }

export const members = Command.make(
  "members",
  flags,
  (o) =>
    Effect.flatMap(
      current(o, o.group),
      (view) => Console.log(o.json ? JSON.stringify(viewJson(view)) : membersTable(view))
    )
)

export const watch = Command.make(
  "watch",
  flags,
  (o) =>
    EtcdSeq.observe(o.group).pipe(
      Stream.changesWith((a, b) => JSON.stringify(viewJson(a)) === JSON.stringify(viewJson(b))),
      Stream.runForEach((view) => Console.log(o.json ? JSON.stringify(viewJson(view)) : viewLine(view))),
      Effect.provide(etcdLayer(o))
    )
)

export const status = Command.make(
  "status",
  flags,
  (o) =>
    Effect.gen(function*() {
      const view = yield* current(o, o.group)
      yield* Console.log(o.json ? JSON.stringify(view) : statusText(view))
      if (view.waiting.length > 0) {
        return yield* new CliExit({
          code: ExitCode.notConverged,
          line: `group ${o.group} has not converged: ${view.waiting.length} waiting`
        })
      }
    })
)
