/**
 * The seam over the `etcd3` package: the one place etcd3 is called, its promises become Effects and its failures
 * are sorted into the public error union (no etcd answered: `EtcdUnavailable`; etcd answered no:
 * `EtcdRequestFailed`).
 */
import { noop } from "cockatiel"
import { Duration, Effect, type Mailbox, Runtime, type Scope } from "effect"
import {
  castGrpcError,
  Etcd3,
  EtcdLeaseInvalidError,
  EtcdPermissionDeniedError,
  GRPCResourceExhastedError,
  type IKeyValue,
  type IOptions,
  type IRangeRequest,
  type IRequestOp,
  type IResponseOp,
  isRecoverableError,
  type IWatchResponse,
  Range as Etcd3Range,
  type Watcher
} from "etcd3"
import { EtcdRequestFailed, EtcdUnavailable, InvalidOptions } from "../../EtcdSeqError.js"
import * as Bounded from "../bounded.js"
import * as Monotonic from "../monotonic.js"
import * as PendingIo from "../pendingIo.js"
import { backoff } from "../retry.js"
import * as Api from "./api.js"
import { abandon, attaching, dropStrayResponses, keepConnections, resetWatchStream } from "./watchStream.js"

/** Client options, validated by `Etcd.make`. */
export interface Settings {
  readonly endpoints: ReadonlyArray<string>
  readonly auth: { readonly username: string; readonly password: string } | undefined
  readonly credentials: IOptions["credentials"] | undefined
  readonly connectTimeout: Duration.Duration
  readonly requestTimeout: Duration.Duration
}

// --- Errors -------------------------------------------------------------------------------------------------------

const unavailableNames = new Set([
  "GRPCUnavailableError",
  "GRPCDeadlineExceededError",
  "GRPCCancelledError",
  "BrokenCircuitError",
  "TaskCancelledError",
  "ClientClosedError"
])

/**
 * True when a failure means "no etcd answered", as opposed to "etcd answered no". etcd3 counts RESOURCE_EXHAUSTED as
 * recoverable, but it is a refusal: a response over the client's message size, an etcd out of space, a rate limit.
 */
export const isUnavailability = (cause: unknown): boolean =>
  cause instanceof Error && !(cause instanceof GRPCResourceExhastedError) &&
  (unavailableNames.has(cause.name) || unavailableNames.has(cause.constructor.name) || isRecoverableError(cause))

const compactedPattern = /required revision has been compacted/

export const classify = (
  endpoints: ReadonlyArray<string>,
  operation: string,
  timeout: Duration.Duration
) =>
(cause: unknown): Api.RequestError =>
  isUnavailability(cause)
    ? new EtcdUnavailable({ endpoints, timeout, error: cause })
    : new EtcdRequestFailed({
      operation,
      // etcd's two refusals the library acts on, in the seam's own terms.
      error: cause instanceof EtcdLeaseInvalidError
        ? new Api.LeaseNotFound({})
        : cause instanceof Error && compactedPattern.test(cause.message)
        ? new Api.Compacted({})
        : cause
    })

// --- Requests -----------------------------------------------------------------------------------------------------

/** With several endpoints a request's attempts go to hosts picked anew (etcd3's retry policy makes three). */
const attempts = 3

/**
 * One request. Unary requests carry a gRPC deadline of `requestTimeout` (set on the client); the Effect timeout here
 * is a second bound in case a request is queued behind a reconnect that never completes. A write completes even when
 * interrupted (bounded by its deadline): abandoned in flight it could still be applied, after the delete meant to
 * clean it up.
 */
const request = <A>(
  settings: Settings,
  operation: string,
  run: () => Promise<A>,
  completes = false
): Effect.Effect<A, Api.RequestError> =>
  Effect.tryPromise({ try: run, catch: classify(settings.endpoints, operation, settings.requestTimeout) }).pipe(
    (self) => completes ? Effect.uninterruptible(self) : self,
    Bounded.timeoutFail({
      duration: Duration.sum(settings.requestTimeout, Duration.millis(500)),
      onTimeout: () => new EtcdUnavailable({ endpoints: settings.endpoints, timeout: settings.requestTimeout })
    }),
    // No stack trace: requests are many (a join storm makes thousands) and the operation names the call site.
    Effect.withSpan(`etcd.${operation}`, { kind: "client", captureStackTrace: false })
  )

// --- Client -------------------------------------------------------------------------------------------------------

/** etcd3's watch reconnect backoff: doubling from `millis`, at most 2 s (a cockatiel `IBackoff`, written out). */
const watchBackoff = (millis: number): WatchBackoff => ({
  duration: millis,
  next: () => watchBackoff(Math.min(2_000, millis * 2))
})
type WatchBackoff = NonNullable<NonNullable<IOptions["faultHandling"]>["watchBackoff"]>

const client = (settings: Settings): Effect.Effect<Etcd3, InvalidOptions, Scope.Scope> => {
  // With several endpoints each attempt gets a share of the timeout (see defaultCallOptions); with one, every attempt
  // goes to the same host and may use all of it.
  const attemptsPerHost = settings.endpoints.length === 1 ? 1 : attempts
  return Effect.acquireRelease(
    Effect.try({
      try: () =>
        new Etcd3({
          hosts: [...settings.endpoints],
          ...(settings.auth === undefined ? {} : { auth: settings.auth }),
          ...(settings.credentials === undefined ? {} : { credentials: settings.credentials }),
          grpcOptions: {
            // A stream (watch, keepalive) to an etcd member that stopped answering without closing the connection
            // (a paused or partitioned member) would wait forever: gRPC pings every 5 s (the most often etcd allows
            // by default, `--grpc-keepalive-min-time`) while calls are open, and a ping unanswered for 6 s (etcdctl's
            // default) closes the connection, so its watch fails over to another member. gRPC judges the ping on a
            // timer, before it reads the socket: a process starved of CPU for longer than that closes a healthy
            // connection, failing its keepalives and watch at once. At 2 s, a hundred processes on two cores closed
            // a third of their connections in a join storm (answers read 2-3.4 s after the ping).
            "grpc.keepalive_time_ms": 5_000,
            "grpc.keepalive_timeout_ms": 6_000,
            // gRPC's default of 4 MiB per message would refuse a group read or a watch batch of a few large
            // members; etcd's own Go client allows math.MaxInt32, as etcd's server does for what it sends.
            "grpc.max_receive_message_length": 2_147_483_647
          },
          faultHandling: {
            // etcd3 re-establishes a failed watch stream on a timer of its own, backing off up to 30 s by default;
            // that timer holds the Node process open after the client is closed (seen after an etcd outage). The
            // group watch re-subscribes by itself, so etcd3's timer only needs to be short.
            watchBackoff: watchBackoff(50),
            // With one endpoint there is nowhere else to go: etcd3's per-host circuit breaker would turn a slow
            // moment (three timeouts) into 5 s of refused requests, keepalives included. With several, it keeps
            // requests away from a silent host, so it stays.
            ...(settings.endpoints.length === 1 ? { host: () => noop } : {})
          },
          // Every unary request carries a deadline; streams (watch, keepalive) set their own. etcd3 makes up to
          // three attempts, each on a host picked anew, and computes these options per attempt: a third of the
          // request timeout each, so a host that accepts a request but never answers (a paused or partitioned etcd
          // member) costs one attempt, and the next attempt still reaches a member that answers within the request
          // timeout. With the whole timeout on every attempt, the first would use it all up.
          defaultCallOptions: (context) =>
            context.isStream
              ? {}
              : { deadline: Date.now() + Duration.toMillis(settings.requestTimeout) / attemptsPerHost }
        }),
      // Whatever etcd3 or gRPC still refuses of the options is an option error, not a defect.
      catch: (cause) =>
        new InvalidOptions({ field: "options", reason: cause instanceof Error ? cause.message : String(cause) })
    }).pipe(Effect.tap((etcd) =>
      Effect.sync(() => {
        dropStrayResponses(etcd)
        keepConnections(etcd)
      })
    )),
    (etcd) => Effect.sync(() => etcd.close())
  )
}

/**
 * Proves the connection with a read of one key, as `etcdctl endpoint health` does: it goes through consensus, and a
 * user whose role does not cover the key is refused only once etcd has checked their credentials, which is all the
 * proof needs. (`Maintenance.Status` is root-only with auth on from etcd 3.5.28.)
 */
const prove = (settings: Settings, etcd: Etcd3): Effect.Effect<void, Api.RequestError> =>
  Effect.tryPromise({
    // Per-attempt deadlines from the client's options; the whole proof is bounded by connectTimeout.
    try: () =>
      etcd.get("health").exec().then(
        () => undefined,
        (error) => error instanceof EtcdPermissionDeniedError ? undefined : Promise.reject(error)
      ),
    catch: classify(settings.endpoints, "connect", settings.connectTimeout)
  }).pipe(
    // A cluster electing a leader refuses the (linearizable) read at every member that is up, and one that is down
    // refuses the connection: every attempt etcd3 makes can fail although the cluster is back in a second. With
    // several endpoints the proof is tried again within the connect timeout; with one, a refusal is the answer.
    Effect.retry({
      schedule: backoff,
      while: (e) => settings.endpoints.length > 1 && e._tag === "EtcdUnavailable"
    }),
    Bounded.timeoutFail({
      duration: settings.connectTimeout,
      onTimeout: () => new EtcdUnavailable({ endpoints: settings.endpoints, timeout: settings.connectTimeout })
    }),
    Effect.withSpan("Etcd.connect", { attributes: { endpoints: settings.endpoints.join(",") } })
  )

// --- Conversions --------------------------------------------------------------------------------------------------

const toKeyValue = (kv: IKeyValue): Api.KeyValue => ({
  key: kv.key.toString(),
  value: kv.value.toString(),
  lease: kv.lease,
  createRevision: Number(kv.create_revision),
  modRevision: Number(kv.mod_revision)
})

const toEvents = (response: IWatchResponse): ReadonlyArray<Api.Event> =>
  response.events.map((event) =>
    event.type === "Put"
      ? { _tag: "Put", kv: toKeyValue(event.kv) }
      : { _tag: "Delete", key: event.kv.key.toString(), modRevision: Number(event.kv.mod_revision) }
  )

const toRangeRequest = (range: Api.Range): IRangeRequest => {
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

const toRequestOp = (op: Api.Op): IRequestOp =>
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

const toOpResult = (op: Api.Op, response: IResponseOp | undefined, revision: number): Api.OpResult =>
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

// --- The seam -----------------------------------------------------------------------------------------------------

/** The client, connected and proven, with the seam over it. */
export const make = (
  settings: Settings
): Effect.Effect<
  { readonly api: Api.EtcdApi; readonly client: Etcd3 },
  Api.RequestError | InvalidOptions,
  Scope.Scope
> =>
  Effect.gen(function*() {
    const etcd = yield* client(settings)
    yield* prove(settings, etcd)
    const api: Api.EtcdApi = {
      endpoints: settings.endpoints,
      requestTimeout: settings.requestTimeout,
      range: (range) =>
        request(settings, "range", () => etcd.kv.range(toRangeRequest(range))).pipe(
          Effect.map((response) => ({
            kvs: response.kvs.map(toKeyValue),
            more: response.more,
            revision: Number(response.header.revision)
          }))
        ),
      put: (key, value, lease) =>
        request(
          settings,
          "put",
          () =>
            etcd.kv.put({
              key: Buffer.from(key),
              value: Buffer.from(value),
              ...(lease === undefined ? {} : { lease })
            }),
          true
        ).pipe(Effect.map((response) => ({ revision: Number(response.header.revision) }))),
      delete: (key) =>
        request(settings, "delete", () => etcd.kv.deleteRange({ key: Buffer.from(key) })).pipe(
          Effect.map((response) => ({ revision: Number(response.header.revision), deleted: Number(response.deleted) }))
        ),
      txn: (txn) =>
        request(settings, "txn", () =>
          etcd.kv.txn({
            compare: txn.compare.map((c) => ({
              key: Buffer.from(c.key),
              target: c.target === "create" ? "Create" : c.target === "mod" ? "Mod" : "Value",
              result: c.result === "equal" ? "Equal" : c.result === "greater" ? "Greater" : "Less",
              ...(c.target === "value"
                ? { value: Buffer.from(c.value) }
                : c.target === "create"
                ? { create_revision: String(c.value) }
                : { mod_revision: String(c.value) })
            })),
            success: txn.success.map(toRequestOp),
            failure: (txn.failure ?? []).map(toRequestOp)
          }), true).pipe(
            Effect.map((response) => {
              const revision = Number(response.header.revision)
              const ops = response.succeeded ? txn.success : txn.failure ?? []
              return {
                succeeded: response.succeeded,
                revision,
                results: ops.map((op, i) => toOpResult(op, response.responses[i], revision))
              }
            })
          ),
      watch: (target, startRevision) => watch(etcd, settings, target, startRevision),
      grant: (ttlSeconds) =>
        request(settings, "lease.grant", () => etcd.leaseClient.leaseGrant({ TTL: ttlSeconds })).pipe(
          Effect.map((response) => response.ID)
        ),
      keepAlive: (lease, within) => keepAlive(etcd, settings, lease, within),
      revoke: (lease) =>
        request(settings, "lease.revoke", () => etcd.leaseClient.leaseRevoke({ ID: lease })).pipe(
          Effect.asVoid,
          // A lease etcd does not know is revoked already.
          Effect.catchIf(Api.isLeaseNotFound, () => Effect.void)
        )
    }
    return { api, client: etcd }
  })

/** One keepalive on a stream of its own (as etcd3's `keepaliveOnce`), answered within `within`. */
const keepAlive = (
  etcd: Etcd3,
  settings: Settings,
  lease: string,
  within: Duration.Duration
): Effect.Effect<Api.KeepAlive, Api.RequestError> =>
  Effect.async<Api.KeepAlive, Api.RequestError>((resume) => {
    const fail = classify(settings.endpoints, "lease.keepalive", within)
    let stream: Awaited<ReturnType<typeof etcd.leaseClient.leaseKeepAlive>> | undefined
    let done = false
    // The deadline is judged here, after ready I/O (pendingIo.ts); gRPC's own, later, only ends a stream left behind.
    const timer = setTimeout(() =>
      PendingIo.unsafeAfterPendingIo(() => {
        if (done) return
        done = true
        if (stream !== undefined) abandon(stream)
        resume(Effect.fail(new EtcdUnavailable({ endpoints: settings.endpoints, timeout: within })))
      }), Duration.toMillis(within))
    etcd.leaseClient.leaseKeepAlive({ deadline: new Date(Date.now() + 2 * Duration.toMillis(within)) }).then(
      (opened) => {
        stream = opened
        if (done) return abandon(opened)
        opened.on("data", (response) => {
          if (done) return
          done = true
          clearTimeout(timer)
          opened.end()
          // etcd answers a keepalive of a lease it does not know with TTL 0.
          resume(Effect.succeed(response.TTL === "0" ? "gone" : "renewed"))
        })
        opened.on("error", (error) => {
          if (done) return
          done = true
          clearTimeout(timer)
          resume(Effect.fail(fail(castGrpcError(error))))
        })
        opened.write({ ID: lease })
      },
      (error) => {
        if (done) return
        done = true
        clearTimeout(timer)
        resume(Effect.fail(fail(error)))
      }
    )
    return Effect.sync(() => {
      clearTimeout(timer)
      if (done) return
      done = true
      if (stream !== undefined) abandon(stream)
    })
  }).pipe(Effect.withSpan("etcd.lease.keepalive", { kind: "client", captureStackTrace: false }))

// --- Watches ------------------------------------------------------------------------------------------------------

/**
 * A watch as a mailbox (see `EtcdApi.watch`). Every listener is removed and the watcher cancelled when the scope
 * closes. A watch etcd refuses at creation (a dead auth token) resets the client's watch stream at once (see
 * watchStream.ts); so does a watch not attached after a quarter of the request timeout while the stream attached
 * nothing else meanwhile (a watch of someone else's was refused ahead of it, or its host went silent). Either way the
 * mailbox then ends as after a disconnection, and its consumer starts a new watch on the new stream.
 */
const watch = (
  etcd: Etcd3,
  settings: Settings,
  target: Api.Target,
  startRevision: number
): Effect.Effect<Mailbox.ReadonlyMailbox<Api.WatchResponse | Api.WatchEnded>, never, Scope.Scope> =>
  Effect.gen(function*() {
    const { end, mailbox } = yield* Api.watchMailbox
    const runFork = Runtime.runFork(yield* Effect.runtime<never>())
    const reset = (why: string) => {
      if (resetWatchStream(etcd)) {
        runFork(Effect.logWarning(`${why}; opening the client's watch stream again, with a fresh auth token`))
      }
    }
    const { state } = yield* Effect.acquireRelease(
      Effect.sync(() => {
        // `attached`: on the current stream (etcd3 re-attaches a watcher after a disconnection until it is cancelled).
        const state = { wasConnected: false, attached: false, canceled: false }
        const builder = etcd.watch()
        const watcher: Watcher = ("key" in target ? builder.key(target.key) : builder.prefix(target.prefix))
          .startRevision(String(startRevision))
          .watcher()
        const listeners = {
          connected: () => {
            state.wasConnected = true
            state.attached = true
          },
          data: (response: IWatchResponse) => void mailbox.unsafeOffer({ events: toEvents(response) }),
          disconnected: (cause: unknown) => {
            state.attached = false
            end(new Api.WatchEnded({ compacted: false, wasConnected: state.wasConnected, cause }))
          },
          error: (cause: unknown) => {
            state.canceled = true
            // Refused at creation (a dead auth token): etcd3's attach queue is stuck behind this watcher (see
            // watchStream.ts), and the watch is tried again on a new stream, as after a disconnection. Cancelled
            // once created: its start revision was compacted, and only a re-read can catch up.
            const refused = !state.attached
            if (refused) reset(`etcd refused a watch (${String(cause)})`)
            end(new Api.WatchEnded({ compacted: !refused, wasConnected: state.wasConnected, cause }))
          }
        }
        for (const [event, listener] of Object.entries(listeners)) watcher.on(event as "data", listener)
        return { watcher, listeners, state }
      }),
      ({ listeners, state, watcher }) =>
        Effect.gen(function*() {
          for (const [event, listener] of Object.entries(listeners)) watcher.removeListener(event, listener)
          // A watch etcd cancelled is already detached; cancelling it again would wait for an answer never sent.
          if (state.canceled) return
          // A late server-side cancel must not surface as an unhandled "error" event.
          const ignore = () => {}
          watcher.on("error", ignore)
          yield* Effect.promise(() => watcher.cancel()).pipe(
            Bounded.timeout(settings.requestTimeout),
            Effect.ignore,
            Effect.ensuring(Effect.sync(() => watcher.removeListener("error", ignore)))
          )
        })
    )
    // Until the watch is attached: a stream that attaches nothing for a whole bound is stuck (see attaching), on a
    // silent host (a paused etcd member) or refused. A healthy one answers each create within a round trip, so a long
    // queue of creates still moves on and is left alone. Each new stream goes to a host picked at random: with one of
    // three silent, a quarter of the request timeout per try makes a join's watch attach within the timeout but in
    // one case in a hundred.
    const bound = Duration.toMillis(settings.requestTimeout) / 4
    yield* Effect.gen(function*() {
      let stuck = attaching(etcd)
      let since = yield* Monotonic.millis
      while (!state.wasConnected && !state.canceled) {
        yield* Effect.sleep(bound / 5)
        if (state.wasConnected || state.canceled) return
        const now = attaching(etcd)
        const at = yield* Monotonic.millis
        if (now === undefined || stuck === undefined || now.queue !== stuck.queue || now.first !== stuck.first) {
          stuck = now
          since = at
        } else if (at - since >= bound) {
          reset(`a watch was not attached within ${bound} ms`)
          stuck = undefined
        }
      }
    }).pipe(Effect.forkScoped)
    return mailbox
  })
