/**
 * What etcd's grpc-gateway JSON API answers, as schemas: `/health`, `/v3/maintenance/status` and
 * `/v3/cluster/member/list`. Only the fields the harness reads; others are ignored. 64-bit ids come as strings.
 */
import { Option, Schema } from "effect"
import type { EtcdStatus } from "./model.js"

/** A uint64 as grpc-gateway writes it (a string), or as a plain number. */
const Uint64 = Schema.Union(Schema.String, Schema.Number)
/** An optional field; `null` counts as absent. */
const OptionalUint64 = Schema.optionalWith(Uint64, { nullable: true })

/** `GET /health` of a healthy etcd: `{"health":"true"}`. */
const Healthy = Schema.Struct({ health: Schema.Literal("true") })

/** `POST /v3/maintenance/status`. */
const StatusAnswer = Schema.Struct({
  header: Schema.Struct({ member_id: Uint64, raft_term: OptionalUint64 }),
  leader: OptionalUint64,
  raftTerm: OptionalUint64,
  version: OptionalUint64
})

/** `POST /v3/cluster/member/list`. */
const MemberList = Schema.Struct({
  members: Schema.Array(
    Schema.Struct({ peerURLs: Schema.optionalWith(Schema.Array(Schema.String), { nullable: true }) })
  )
})

const isHealthy = Schema.is(Healthy)
const decodeStatus = Schema.decodeUnknownOption(StatusAnswer)
const decodeMemberList = Schema.decodeUnknownOption(MemberList)

/** Whether a `/health` body says healthy. */
export const healthyBody = (body: unknown): boolean => isHealthy(body)

/** The status a `/v3/maintenance/status` body gives, if it is one (it names the answering member). */
export const statusOfBody = (body: unknown): Option.Option<EtcdStatus> =>
  Option.map(decodeStatus(body), (answer) => ({
    memberId: String(answer.header.member_id),
    leader: String(answer.leader ?? ""),
    raftTerm: String(answer.raftTerm ?? answer.header.raft_term ?? "0"),
    version: String(answer.version ?? "")
  }))

/** Peer URLs of every member a `/v3/cluster/member/list` body lists; none for a body that is not one. */
export const peerUrlsOfBody = (body: unknown): ReadonlyArray<string> =>
  Option.match(decodeMemberList(body), {
    onNone: () => [],
    onSome: (list) => list.members.flatMap((member) => member.peerURLs ?? [])
  })
