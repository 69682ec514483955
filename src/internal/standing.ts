/**
 * A registration's standing, pure: what it wrote, whether it retired, whether its lease is fenced or lost, the latest
 * view, and how it ended. Every event (a view, the fence, the lease lost, the key written, retired) gives the next
 * standing and what the registration must say: the member's Info, that it is invalid, that its key is visible in the
 * view, or that its membership ended. registration.ts applies the outputs; this file holds the rules.
 */
import type { Info } from "../Info.js"
import type { Holder } from "./source.js"
import * as View from "./view.js"

/** What a registration wrote: its key's create revision (its place), the last revision it wrote, the first. */
export interface Written {
  readonly createRevision: number
  readonly modRevision: number
  readonly writtenAt: number
}

/** How a registration ended: its membership lost (the member registers again), or its key taken over (it does not). */
export type Ended =
  | { readonly _tag: "Lost"; readonly reason: string }
  | { readonly _tag: "Taken"; readonly by: string }

export interface Standing {
  readonly id: string
  readonly name: string
  /** Set once the key is written, with the holder the member's Infos name; until then views are only kept. */
  readonly written: Written | undefined
  readonly holder: Holder | undefined
  /** Retired (leaving, or lost): no view sets the member's Info any more. */
  readonly retired: boolean
  /** The lease is lost: it took the keys with it (or will within the TTL). */
  readonly leaseLost: boolean
  /** The lease is fenced: the member is invalid, and keeps its key. */
  readonly fenced: boolean
  readonly latestView: View.View | undefined
  /** The first end, the only one told. */
  readonly ended: Ended | undefined
}

export type Event =
  | { readonly _tag: "View"; readonly view: View.View }
  | { readonly _tag: "Fenced"; readonly fenced: boolean }
  | { readonly _tag: "LeaseLost"; readonly reason: string }
  | { readonly _tag: "Written"; readonly written: Written; readonly holder: Holder }
  /** A write of its own to the key landed at `modRevision`: later writes compare on it. */
  | { readonly _tag: "Rewritten"; readonly modRevision: number }
  | { readonly _tag: "Retired" }

export type Output =
  | { readonly _tag: "Info"; readonly info: Info; readonly holder: Holder }
  | { readonly _tag: "Invalid" }
  /** The view has applied the member's own write (it is a member, or already gone): the join's wait is over. */
  | { readonly _tag: "Visible" }
  | { readonly _tag: "Ended"; readonly ended: Ended }

export const initial = (member: { readonly id: string; readonly name: string }): Standing => ({
  id: member.id,
  name: member.name,
  written: undefined,
  holder: undefined,
  retired: false,
  leaseLost: false,
  fenced: false,
  latestView: undefined,
  ended: undefined
})

/** Whether views and the fence still speak for the member: its key written, and the registration not retired. */
const active = (s: Standing): s is Standing & { readonly written: Written; readonly holder: Holder } =>
  s.written !== undefined && s.holder !== undefined && !s.retired

const end = (s: Standing, ended: Ended): [Standing, ReadonlyArray<Output>] =>
  s.ended !== undefined ? [s, []] : [{ ...s, ended }, [{ _tag: "Ended", ended }]]

const none: ReadonlyArray<Output> = []

export const step = (s: Standing, event: Event): [Standing, ReadonlyArray<Output>] => {
  switch (event._tag) {
    case "View":
      return onView({ ...s, latestView: event.view }, event.view)
    case "Fenced": {
      // Fenced, the member is invalid and keeps its key: a lift proves the key alive all along, and the latest view
      // gives the member its place back. The others see nothing of it.
      const next = { ...s, fenced: event.fenced }
      if (!active(next)) return [next, none]
      if (event.fenced) return [next, [{ _tag: "Invalid" }]]
      return next.latestView === undefined ? [next, none] : onView(next, next.latestView)
    }
    case "LeaseLost":
      return end({ ...s, leaseLost: true }, { _tag: "Lost", reason: event.reason })
    case "Written":
      return [{ ...s, written: event.written, holder: event.holder }, none]
    case "Rewritten":
      return s.written === undefined
        ? [s, none]
        : [{ ...s, written: { ...s.written, modRevision: event.modRevision } }, none]
    case "Retired":
      return [{ ...s, retired: true }, none]
  }
}

const onView = (s: Standing, view: View.View): [Standing, ReadonlyArray<Output>] => {
  if (!active(s)) return [s, none]
  const standing = View.standing(view, { id: s.id, name: s.name, ...s.written })
  switch (standing._tag) {
    case "Pending":
      return [s, none]
    case "Member":
      return [
        s,
        s.fenced
          ? [{ _tag: "Visible" }]
          : [{ _tag: "Info", info: standing.info, holder: s.holder }, { _tag: "Visible" }]
      ]
    case "Taken":
    case "Gone": {
      const [next, outputs] = end(
        s,
        standing._tag === "Taken" ? standing : { _tag: "Lost", reason: "its key was deleted" }
      )
      return [next, [...outputs, { _tag: "Visible" }]]
    }
  }
}
