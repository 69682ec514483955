/** The seam's requests and answers as etcd3's protocol messages, and back. */
import type { ICompare, IKeyValue, IRangeRequest, IRequestOp, IResponseOp, IWatchResponse } from "etcd3"
import { Range as Etcd3Range } from "etcd3"
import type * as Api from "../api.js"

export const toKeyValue = (kv: IKeyValue): Api.KeyValue => ({
  key: kv.key.toString(),
  value: kv.value.toString(),
  lease: kv.lease,
  createRevision: Number(kv.create_revision),
  modRevision: Number(kv.mod_revision)
})

export const toEvents = (response: IWatchResponse): ReadonlyArray<Api.Event> =>
  response.events.map((event) =>
    event.type === "Put"
      ? { _tag: "Put", kv: toKeyValue(event.kv) }
      : { _tag: "Delete", key: event.kv.key.toString(), modRevision: Number(event.kv.mod_revision) }
  )

export const toRangeRequest = (range: Api.Range): IRangeRequest => {
  const bounds = "key" in range.target
    ? { start: Buffer.from(range.target.key), end: undefined }
    : Etcd3Range.prefix(range.target.prefix)
  return {
    key: range.from === undefined ? bounds.start : Buffer.from(range.from),
    ...(bounds.end === undefined ? {} : { range_end: bounds.end }),
    ...(range.limit === undefined ? {} : { limit: range.limit }),
    ...(range.revision === undefined ? {} : { revision: String(range.revision) }),
    ...(range.maxCreateRevision === undefined ? {} : { max_create_revision: String(range.maxCreateRevision) }),
    ...(range.order === "createDescending" ? { sort_order: "Descend", sort_target: "Create" } : {}),
    ...(range.keysOnly === true ? { keys_only: true } : {})
  }
}

export const toRequestOp = (op: Api.Op): IRequestOp =>
  op._tag === "Put"
    ? {
      request_put: {
        key: Buffer.from(op.key),
        value: Buffer.from(op.value),
        ...(op.lease === undefined ? {} : { lease: op.lease })
      }
    }
    : op._tag === "Delete"
    ? { request_delete_range: { key: Buffer.from(op.key) } }
    : { request_range: toRangeRequest(op.range) }

export const toOpResult = (op: Api.Op, response: IResponseOp | undefined, revision: number): Api.OpResult =>
  op._tag === "Put"
    ? { _tag: "Put" }
    : op._tag === "Delete"
    ? { _tag: "Delete", deleted: Number(response?.response_delete_range?.deleted ?? 0) }
    : {
      _tag: "Range",
      result: {
        kvs: (response?.response_range?.kvs ?? []).map(toKeyValue),
        more: response?.response_range?.more ?? false,
        revision
      }
    }

export const toCompare = (c: Api.Compare): ICompare => ({
  key: Buffer.from(c.key),
  target: c.target === "create" ? "Create" : c.target === "mod" ? "Mod" : "Value",
  result: c.result === "equal" ? "Equal" : c.result === "greater" ? "Greater" : "Less",
  ...(c.target === "value"
    ? { value: Buffer.from(c.value) }
    : c.target === "create"
    ? { create_revision: String(c.value) }
    : { mod_revision: String(c.value) })
})
