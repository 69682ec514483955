/**
 * What `etcdseq --help` and `etcdseq <command> --help` print, and the flags' names, descriptions and defaults the
 * parser is built from (flags.ts), so the help cannot show a default the parser does not use. Plain data and strings:
 * `main.ts` prints help without loading Effect, @effect/cli or etcd3 (see main.ts).
 * Plain text always: the help is read in terminals, pipes and CI logs alike.
 */

/** A flag as the help shows it; flags.ts reads `name`, `env` and `default` from the same object. */
export interface Flag {
  readonly name: string
  /** The value's placeholder, e.g. `<duration>`; none for a boolean flag. */
  readonly value?: string
  readonly about: string
  /** The value taken when the flag is not given, as the user would write it. */
  readonly default?: string
  /** An environment variable read when the flag is not given, before `default`. */
  readonly env?: string
  readonly required?: true
}

export const flags = {
  group: { name: "group", value: "<key>", about: "the group's key, e.g. prod/indexer", required: true },
  json: { name: "json", about: "print JSON instead of text" },
  ttl: { name: "ttl", value: "<duration>", about: "how long a crashed member keeps its index", default: "10s" },
  grace: {
    name: "grace",
    value: "<duration>",
    about: "how long the command's process group has after SIGTERM before SIGKILL; below --ttl " +
      "(default: half the TTL)"
  },
  exclusive: {
    name: "exclusive",
    value: "<mode>",
    about: "none; index: one command per index at a time; group: no two commands with overlapping shares",
    default: "none"
  },
  instance: { name: "instance", value: "<name>", about: "a stable name: a restart within the TTL keeps the index" },
  keepPlaceOnLeave: {
    name: "keep-place-on-leave",
    about: "with --instance: a stop keeps the index for the TTL, for the next start"
  },
  metadata: { name: "metadata", value: "<text>", about: "stored with the member; etcdseq members shows it" },
  listen: {
    name: "listen",
    value: "<host:port>",
    about: "where the page is served; port 0 takes a free one (the URL is printed)",
    default: "127.0.0.1:7070"
  },
  listenAny: {
    name: "listen-any",
    about: "allow a --listen address that is not loopback: anyone who reaches it sees the group (no login)"
  },
  weight: {
    name: "weight",
    value: "<number>",
    about: "the member's share of a sharded group's shards relative to the others' (a positive number)",
    env: "ETCDSEQ_WEIGHT",
    default: "1"
  },
  drainTimeout: {
    name: "drain-timeout",
    value: "<duration>",
    about: "on SIGINT or SIGTERM, how long the member may drain (hand its shards over) before it leaves; 0 does " +
      "not drain (default: half the TTL)"
  },
  member: { name: "member", value: "<id>", about: "the member's id, as etcdseq members lists it" },
  timeout: {
    name: "timeout",
    value: "<duration>",
    about: "how long to wait for the member to be drained (it keeps draining after)",
    default: "60s"
  },
  shard: { name: "shard", value: "<n>", about: "the shard's number, from 0" },
  to: { name: "to", value: "<instance>", about: "the instance (or the id of a member without one) to run the shard" },
  endpoints: {
    name: "endpoints",
    value: "<urls>",
    about: "etcd's client URLs, comma separated",
    env: "ETCD_ENDPOINTS",
    default: "http://127.0.0.1:2379"
  },
  user: { name: "user", value: "<name>", about: "etcd user, with --password-file" },
  passwordFile: { name: "password-file", value: "<path>", about: "a file holding the user's password" },
  cacert: { name: "cacert", value: "<path>", about: "CA certificate that verifies etcd (PEM)" },
  cert: { name: "cert", value: "<path>", about: "client certificate (PEM), with --key" },
  key: { name: "key", value: "<path>", about: "its private key (PEM)" },
  connectTimeout: {
    name: "connect-timeout",
    value: "<duration>",
    about: "how long etcd has to answer at first",
    default: "5s"
  },
  logLevel: {
    name: "log-level",
    value: "<level>",
    about: "logs on stderr from this level: debug (with the etcd client's errors), info, warning, error, none",
    default: "warning"
  }
} as const satisfies Record<string, Flag>

const connection: ReadonlyArray<Flag> = [
  flags.endpoints,
  flags.user,
  flags.passwordFile,
  flags.cacert,
  flags.cert,
  flags.key,
  flags.connectTimeout
]

interface CommandHelp {
  readonly usage: string
  /** One line, in `etcdseq --help`'s list. */
  readonly summary: string
  /** What the command does, in paragraphs. */
  readonly text: ReadonlyArray<string>
  readonly flags: ReadonlyArray<Flag>
}

const inspector = (summary: string, text: string): CommandHelp => ({
  usage: `--group <key> [--json] [flags]`,
  summary,
  text: [`${text} It never joins the group.`],
  flags: [flags.group, flags.json]
})

export const commands = {
  run: {
    usage: "--group <key> [flags] -- <command> [args...]",
    summary: "join the group and run a command once per assignment",
    text: [
      "Joins the group and runs <command> once per assignment, with ETCDSEQ_GROUP, ETCDSEQ_INDEX, " +
      "ETCDSEQ_COUNT, ETCDSEQ_FENCE and ETCDSEQ_REVISION (and ETCDSEQ_INSTANCE, and with --exclusive index " +
      "ETCDSEQ_LOCK_KEY, the lock key created at ETCDSEQ_FENCE) in its environment. " +
      "Everything after -- is the command and its arguments: flags there go to the command, not to etcdseq.",
      "On a new assignment the command's process group gets SIGTERM (SIGKILL after --grace), and the next " +
      "command starts once it is gone. A command that exits 0 waits for the next assignment; any other exit code " +
      "ends etcdseq run with that code, after it leaves the group. On SIGINT or SIGTERM the command is stopped, " +
      "the member drains (--drain-timeout), leaves, and etcdseq run exits 0.",
      "Its own exit codes: 64 usage, 69 etcd unavailable, 70 internal error, 77 etcd refused a request, " +
      "78 --instance taken by a newer member, 126/127 command not executable/not found."
    ],
    flags: [
      flags.group,
      flags.ttl,
      flags.grace,
      flags.exclusive,
      flags.instance,
      flags.keepPlaceOnLeave,
      flags.metadata,
      flags.weight,
      flags.drainTimeout
    ]
  },
  members: inspector(
    "list the group's members",
    "Lists the group's members in index order: index, id, instance, join revision, metadata."
  ),
  watch: inspector(
    "print the group's views as they change, until ^C",
    "Prints one line per view of the group as it changes (JSON lines with --json), until ^C."
  ),
  status: inspector(
    "show members, locks, handover and shards; exit 75 until converged",
    "Shows the members, index locks, handover and shards, then `converged` or what waits. Exits 75 while the " +
      "group has not converged (someone waits): usable as a readiness probe."
  ),
  drain: {
    usage: "--group <key> (--instance <name> | --member <id>) [flags]",
    summary: "drain a member: its shards move to the others, it stays in the group",
    text: [
      "Asks the member to drain: the shard plan gives it no shard, so each of its shards moves once to its new " +
      "owner, while the member keeps its index and count. The request is a key under the member's lease: it " +
      "lasts until the member leaves. Prints the progress, and exits 0 once the member holds no shard and each " +
      "shard it gave up runs at its new owner (or at once when every member drains: the shards stay).",
      "Exit codes: 64 usage, 67 no such live member, 69 etcd unavailable, 75 not drained within --timeout " +
      "(it keeps draining), 77 etcd refused a request."
    ],
    flags: [flags.group, flags.instance, flags.member, flags.timeout]
  },
  shards: {
    usage: "pin|unpin|pause|resume|freeze|thaw --group <key> [--shard <n>] [--to <instance>] [flags]",
    summary: "pin, pause or freeze the shards of a group every member plans",
    text: [
      "pin --shard n --to <instance>: the shard runs at that member while it is live (and not draining); " +
      "otherwise where the plan puts it. unpin --shard n: the plan's owner again.",
      "pause --shard n: nobody runs the shard (its running work stops). resume --shard n: it runs again.",
      "freeze: no planned moves: each shard stays with its owner of now while that owner is live; the shards of " +
      "members that leave (or drain) still move. thaw: the plan moves shards again.",
      "Every member obeys these controls as soon as it reads them; etcdseq status shows them."
    ],
    flags: [flags.group, flags.shard, flags.to]
  },
  ui: {
    usage: "--group <key> [--listen <host:port>] [flags]",
    summary: "serve a live page of the group: members, shards, locks, what waits",
    text: [
      "Serves a read-only page of the group at --listen (loopback only unless --listen-any): its members in " +
      "index order, the shards coloured by holder with moves as they happen, index locks and handover with their " +
      "waiters, what the group waits for, and a timeline of joins, leaves and moves. One watch of the group " +
      "serves every open tab. It never joins the group.",
      "Prints the page's URL on stdout, then serves until ^C. When etcd does not answer, the page says so and " +
      "catches up once it does. Only the group's view reaches the page: never the connection's credentials."
    ],
    flags: [flags.group, flags.listen, flags.listenAny]
  }
} satisfies Record<string, CommandHelp>

export type CommandName = keyof typeof commands

export const isCommand = (name: string | undefined): name is CommandName =>
  name !== undefined && Object.hasOwn(commands, name)

const width = 80

/** `text` in lines of at most `width` columns, each after `indent`. */
const wrap = (text: string, indent: string): Array<string> => {
  const lines: Array<string> = []
  let line = ""
  for (const word of text.split(" ")) {
    if (line !== "" && indent.length + line.length + 1 + word.length > width) {
      lines.push(indent + line)
      line = word
    } else {
      line = line === "" ? word : `${line} ${word}`
    }
  }
  return [...lines, indent + line]
}

const column = 32

const flagLines = (flag: Flag): Array<string> => {
  const head = `  --${flag.name}${flag.value === undefined ? "" : ` ${flag.value}`}`
  const notes = [
    flag.required === true ? "required" : undefined,
    flag.env === undefined ? undefined : `default: $${flag.env}`,
    flag.default === undefined ? undefined : `${flag.env === undefined ? "default: " : "then "}${flag.default}`
  ].filter((n) => n !== undefined)
  const about = notes.length === 0 ? flag.about : `${flag.about} (${notes.join(", ")})`
  const [first, ...rest] = wrap(about, " ".repeat(column))
  return head.length < column - 1
    ? [head.padEnd(column) + first!.trimStart(), ...rest]
    : [head, first!, ...rest]
}

/** `etcdseq <command> --help`. */
export const commandHelp = (name: CommandName): string => {
  const command: CommandHelp = commands[name]
  return [
    `Usage: etcdseq ${name} ${command.usage}`,
    "",
    ...command.text.flatMap((paragraph) => [...wrap(paragraph, ""), ""]),
    "Flags:",
    ...[...command.flags, flags.logLevel].flatMap(flagLines),
    "",
    "Connection:",
    ...connection.flatMap(flagLines),
    "",
    ...wrap(`Durations: 3s, 500ms, 2m, 1h or "3 seconds". A flag's value: --flag value or --flag=value.`, "")
  ].join("\n")
}

/** `etcdseq --help`. */
export const rootHelp = (version: string): string =>
  [
    `etcdseq ${version}: an (index, count) for each member of a group, through etcd.`,
    "",
    "Usage: etcdseq <command> [flags]",
    "",
    "Commands:",
    ...Object.entries(commands).map(([name, command]) => `  ${name.padEnd(10)}${command.summary}`),
    "",
    "etcdseq <command> --help shows a command's flags; etcdseq --version, the version."
  ].join("\n")
