/* global process */
// `node --import ./cli-modules.mjs ...`: every module the process loads (its URL) is appended to the file named by
// CLI_MODULES_FILE, as it loads. The hook runs on the loader's thread: it writes synchronously, so the list is
// complete when the process has exited.
import { register } from "node:module"

const hooks = `
import { appendFileSync } from "node:fs"
let file
export function initialize(data) { file = data.file }
export async function load(url, context, next) {
  appendFileSync(file, url + "\\n")
  return next(url, context)
}
`
register(`data:text/javascript,${encodeURIComponent(hooks)}`, { data: { file: process.env.CLI_MODULES_FILE } })
