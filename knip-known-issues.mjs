// knip preprocessor (knip.json "preprocessor"): drops the findings listed in .knip-known-issues.json, a temporary,
// exact allow-list of what knip found when it was added (file and symbol, per issue type), so that `npm run
// lint:unused` fails on any new finding while the known ones are removed. docs/development.md ("Structure checks").
//   KNIP_KNOWN_ISSUES=write npm run lint:unused   rewrites the list from the current findings (to shrink it; review
//                                                 the diff: a line added there is a new finding let through)
import console from "node:console"
import { readFileSync, writeFileSync } from "node:fs"
import process from "node:process"
import { URL } from "node:url"

const listFile = new URL("./.knip-known-issues.json", import.meta.url)
const comment =
  "Temporary allow-list for knip (npm run lint:unused), read by knip-known-issues.mjs: issue type -> file -> symbols. "
  + "Remove an entry when its finding is fixed; see docs/development.md (Structure checks)."

export default (data) => {
  if (process.env.KNIP_KNOWN_ISSUES === "write") {
    const current = { "//": comment }
    for (const [type, reported] of Object.entries(data.report)) {
      if (!reported) continue
      for (const [file, symbols] of Object.entries(data.issues[type] ?? {}).sort(([a], [b]) => a.localeCompare(b))) {
        const names = Object.keys(symbols).sort()
        if (names.length > 0) (current[type] ??= {})[file] = names
      }
    }
    writeFileSync(listFile, JSON.stringify(current, null, 2) + "\n")
  }
  const known = JSON.parse(readFileSync(listFile, "utf8"))
  let allowed = 0
  const stale = []
  for (const [type, files] of Object.entries(known)) {
    if (type.startsWith("//")) continue
    for (const [file, symbols] of Object.entries(files)) {
      for (const symbol of symbols) {
        const found = data.issues[type]?.[file]
        if (found?.[symbol] === undefined) {
          stale.push(`${type} ${file}: ${symbol}`)
          continue
        }
        delete found[symbol]
        if (Object.keys(found).length === 0) delete data.issues[type][file]
        data.counters[type] -= 1
        allowed += 1
      }
    }
  }
  if (allowed > 0) {
    console.error(`knip: ${allowed} known finding(s) allowed by .knip-known-issues.json (temporary, to be removed)`)
  }
  if (stale.length > 0) {
    console.error(
      `knip: no longer found, remove from .knip-known-issues.json:\n${stale.map((s) => `  ${s}`).join("\n")}`
    )
  }
  return data
}
