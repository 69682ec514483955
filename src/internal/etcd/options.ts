/**
 * The client's options, checked before any I/O: each check names the field and what would be accepted
 * (`InvalidOptions`), and turns the public option into what the seam over etcd3 takes (`Settings`).
 *
 * The inputs are typed by what each check reads, not by `Etcd.EtcdOptions`: `Etcd.ts` imports this module, and an
 * import back would make a cycle.
 */
import { Duration, Effect, Option, Redacted } from "effect"
import { X509Certificate } from "node:crypto"
import * as Tls from "node:tls"
import { InvalidOptions } from "../../EtcdSeqError.js"
import type { Pacing } from "../groupWatch.js"
import type { Credentials, Settings } from "./etcd3.js"

/** `EtcdOptions["viewPacing"]`. */
export type PacingInput = false | {
  readonly initial?: Duration.DurationInput | undefined
  readonly max?: Duration.DurationInput | undefined
} | undefined

/** What `Etcd.make` reads of `EtcdOptions`. */
export interface Input {
  readonly endpoints: ReadonlyArray<string>
  readonly auth?: { readonly username: string; readonly password: Redacted.Redacted<string> } | undefined
  readonly tls?: {
    readonly rootCertificate?: Buffer | undefined
    readonly privateKey?: Redacted.Redacted<Buffer> | undefined
    readonly certChain?: Buffer | undefined
  } | undefined
  readonly connectTimeout?: Duration.DurationInput | undefined
  readonly requestTimeout?: Duration.DurationInput | undefined
  readonly viewPacing?: PacingInput
}

/** Every option of `Etcd.make`, checked in the order its errors are reported. */
export const decode = (
  options: Input
): Effect.Effect<{ readonly settings: Settings; readonly pacing: Pacing | undefined }, InvalidOptions> =>
  Effect.gen(function*() {
    if (typeof options !== "object" || options === null) {
      return yield* new InvalidOptions({ field: "options", reason: "must be an object with endpoints" })
    }
    const endpoints = yield* validateEndpoints(options.endpoints)
    const connectTimeout = yield* validateTimeout("connectTimeout", options.connectTimeout)
    const requestTimeout = yield* validateTimeout("requestTimeout", options.requestTimeout)
    const auth = yield* validateAuth(options.auth)
    const credentials = yield* validateTls(options.tls, endpoints)
    const pacing = yield* validatePacing(options.viewPacing)
    return { settings: { endpoints, auth, credentials, connectTimeout, requestTimeout }, pacing }
  })

// --- Durations ---

/** Of each request, of the connection proof; of a client of the in-memory etcd, both. */
export const defaultTimeout = Duration.seconds(5)

const maxTimeout = Duration.hours(1)

const validateTimeout = (
  field: string,
  input: Duration.DurationInput | undefined
): Effect.Effect<Duration.Duration, InvalidOptions> => {
  if (input === undefined) return Effect.succeed(defaultTimeout)
  const duration = Duration.decodeUnknown(input)
  if (Option.isNone(duration)) {
    return Effect.fail(new InvalidOptions({ field, reason: `${String(input)} is not a duration` }))
  }
  if (!Duration.isFinite(duration.value) || Duration.toMillis(duration.value) <= 0) {
    return Effect.fail(new InvalidOptions({ field, reason: "must be a positive, finite duration" }))
  }
  // Node's timers hold at most 2^31 - 1 ms (24.8 days): past it every timer fires at once, and every request with it.
  if (Duration.greaterThan(duration.value, maxTimeout)) {
    return Effect.fail(new InvalidOptions({ field, reason: `must be at most ${Duration.format(maxTimeout)}` }))
  }
  return Effect.succeed(duration.value)
}

// --- View pacing ---

const defaultPacing = { initial: Duration.millis(10), max: Duration.seconds(1) }

/** `undefined` for `false`: every view at once. */
export const validatePacing = (input: PacingInput): Effect.Effect<Pacing | undefined, InvalidOptions> =>
  Effect.gen(function*() {
    if (input === false) return undefined
    if (input === undefined) return defaultPacing
    if (typeof input !== "object" || input === null) {
      return yield* new InvalidOptions({ field: "viewPacing", reason: "must be false or { initial, max }" })
    }
    const initial = input.initial === undefined
      ? defaultPacing.initial
      : yield* validateTimeout("viewPacing.initial", input.initial)
    const max = input.max === undefined ? Duration.max(defaultPacing.max, initial) : yield* validateTimeout(
      "viewPacing.max",
      input.max
    )
    if (Duration.lessThan(max, initial)) {
      return yield* new InvalidOptions({ field: "viewPacing.max", reason: "must be at least viewPacing.initial" })
    }
    return { initial, max }
  })

// --- Endpoints and credentials ---

/** `scheme://host:port` with an explicit port (IPv6 hosts in brackets), nothing else. */
const endpointPattern = /^(https?):\/\/(\[[0-9A-Fa-f:.]+\]|[^/?#@:[\]]+):([0-9]{1,5})\/?$/

const validateEndpoints = (
  endpoints: ReadonlyArray<string> | undefined
): Effect.Effect<ReadonlyArray<string>, InvalidOptions> => {
  const invalid = (reason: string) => Effect.fail(new InvalidOptions({ field: "endpoints", reason }))
  if (!Array.isArray(endpoints) || endpoints.length === 0) return invalid("at least one endpoint is required")
  const schemes = new Set<string>()
  for (const [at, endpoint] of endpoints.entries()) {
    if (typeof endpoint !== "string") return invalid(`endpoint #${at + 1} is not a string`)
    // Credentials belong in `auth`; an endpoint carrying them would be printed in errors and spans, so it is refused
    // without being repeated.
    if (/^[a-z][a-z0-9+.-]*:\/\/[^/?#]*@/i.test(endpoint)) {
      return invalid(`endpoint #${at + 1} carries credentials (user:password@); give them as auth instead`)
    }
    const match = endpointPattern.exec(endpoint)
    const port = Number(match?.[3])
    if (match === null || !(port >= 1 && port <= 65535) || !URL.canParse(endpoint)) {
      return invalid(`"${endpoint}" is not an etcd client URL such as http://127.0.0.1:2379 (scheme, host and port)`)
    }
    schemes.add(match[1]!)
  }
  if (schemes.size > 1) return invalid("endpoints mix http:// and https://; one client uses one or the other")
  return Effect.succeed(endpoints.map((e) => e.replace(/\/$/, "")))
}

const validateAuth = (
  auth: Input["auth"]
): Effect.Effect<{ readonly username: string; readonly password: string } | undefined, InvalidOptions> => {
  if (auth === undefined) return Effect.succeed(undefined)
  if (typeof auth !== "object" || auth === null) {
    return Effect.fail(new InvalidOptions({ field: "auth", reason: "must be { username, password }" }))
  }
  if (typeof auth.username !== "string" || auth.username.trim() === "") {
    return Effect.fail(new InvalidOptions({ field: "auth.username", reason: "must not be empty" }))
  }
  if (!Redacted.isRedacted(auth.password) || typeof Redacted.value(auth.password) !== "string") {
    return Effect.fail(
      new InvalidOptions({ field: "auth.password", reason: "must be a Redacted string: Redacted.make(password)" })
    )
  }
  return Effect.succeed({ username: auth.username, password: Redacted.value(auth.password) })
}

// --- TLS ---

/**
 * Why `pem` is not a bundle of PEM certificates, if it is not. gRPC and OpenSSL skip what they cannot parse in a CA
 * bundle, so a wrong file would only show as failed handshakes, reported as an unreachable etcd.
 */
const certificateProblem = (pem: Buffer): string | undefined => {
  const blocks = pem.toString("utf8").match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []
  if (blocks.length === 0) return "holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
  for (const [at, block] of blocks.entries()) {
    try {
      new X509Certificate(block)
    } catch (cause) {
      return `certificate #${at + 1} is not valid: ${cause instanceof Error ? cause.message : String(cause)}`
    }
  }
  return undefined
}

/** The TLS material as etcd3 takes it, checked here: gRPC would throw on it when the client is built. */
const validateTls = (
  tls: Input["tls"],
  endpoints: ReadonlyArray<string>
): Effect.Effect<Credentials | undefined, InvalidOptions> => {
  const invalid = (field: string, reason: string) => Effect.fail(new InvalidOptions({ field, reason }))
  if (tls === undefined) return Effect.succeed(undefined)
  if (typeof tls !== "object" || tls === null) {
    return invalid("tls", "must be { rootCertificate?, privateKey?, certChain? }")
  }
  if (!endpoints[0]!.startsWith("https://")) {
    return invalid("tls", "is given, but the endpoints are http://, not https://")
  }
  const { certChain, privateKey, rootCertificate } = tls
  if (rootCertificate !== undefined && !Buffer.isBuffer(rootCertificate)) {
    return invalid("tls.rootCertificate", "must be a Buffer of PEM")
  }
  if (certChain !== undefined && !Buffer.isBuffer(certChain)) return invalid("tls.certChain", "must be a Buffer of PEM")
  const key = privateKey === undefined ? undefined : Redacted.isRedacted(privateKey) ? Redacted.value(privateKey) : null
  if (key === null || (key !== undefined && !Buffer.isBuffer(key))) {
    return invalid("tls.privateKey", "must be a Redacted Buffer of PEM: Redacted.make(buffer)")
  }
  if (key !== undefined && certChain === undefined) return invalid("tls.certChain", "must come with privateKey")
  if (key === undefined && certChain !== undefined) return invalid("tls.privateKey", "must come with certChain")
  for (const [field, pem] of [["tls.rootCertificate", rootCertificate], ["tls.certChain", certChain]] as const) {
    const problem = pem === undefined ? undefined : certificateProblem(pem)
    if (problem !== undefined) return invalid(field, problem)
  }
  try {
    // What gRPC builds from the same material: malformed PEM fails here, with OpenSSL's reason (never the key).
    Tls.createSecureContext({
      ...(rootCertificate === undefined ? {} : { ca: rootCertificate }),
      ...(key === undefined ? {} : { key, cert: certChain })
    })
  } catch (cause) {
    return invalid("tls", `is not usable PEM: ${cause instanceof Error ? cause.message : String(cause)}`)
  }
  // etcd3's type asks for a root certificate, but passes it to gRPC's createSsl, which takes none as the system's roots.
  return Effect.succeed({
    ...(rootCertificate === undefined ? {} : { rootCertificate }),
    ...(key === undefined ? {} : { privateKey: key }),
    ...(certChain === undefined ? {} : { certChain })
  } as Credentials)
}
