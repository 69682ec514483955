/**
 * `etcdseq ui --listen <host:port>`: where the page is served, and whether a host is loopback. The page has no login:
 * whoever reaches it sees the group (ids, instances, metadata), so it listens on loopback unless `--listen-any`
 * says otherwise, and on loopback it answers only requests that name a loopback host (no DNS rebinding: a web page
 * elsewhere that points a name of its own at 127.0.0.1 is refused).
 */
import { Either } from "effect"

export interface Listen {
  readonly host: string
  readonly port: number
}

/** `host:port`, `[v6]:port`, or `:port` (127.0.0.1); port 0 takes a free one. */
export const parseListen = (text: string): Either.Either<Listen, string> => {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(text.trim())
  if (match === null) return Either.left(`"${text}" is not <host>:<port> (e.g. 127.0.0.1:7070, [::1]:7070, :7070)`)
  const port = Number(match[3])
  if (port > 65535) return Either.left(`port ${port} is above 65535`)
  const host = match[1] ?? (match[2] === "" ? "127.0.0.1" : match[2]!)
  return Either.right({ host, port })
}

/** A loopback address or the name `localhost` (an address or name without the port). */
export const isLoopback = (host: string): boolean => {
  const h = host.toLowerCase().replace(/^\[(.*)\]$/, "$1")
  return h === "localhost" || h.endsWith(".localhost") || h === "::1" || /^127(\.\d{1,3}){3}$/.test(h) ||
    /^::ffff:127(\.\d{1,3}){3}$/.test(h)
}

/** The host of a `Host` header (`name:port`, `[v6]:port`, or without a port). */
export const hostOf = (header: string): string => {
  const v6 = /^\[([^\]]*)\]/.exec(header)
  return v6 !== null ? v6[1]! : header.replace(/:\d*$/, "")
}

/** The URL the page is at, for the line the command prints. */
export const urlOf = (listen: Listen): string =>
  `http://${listen.host.includes(":") ? `[${listen.host}]` : listen.host}:${listen.port}/`
