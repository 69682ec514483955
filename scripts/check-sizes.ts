/**
 * `npm run lint:size`: the house rules on size, for src/. A function of more than 80 lines (code lines: blank and
 * comment lines not counted) must be cut into named sections (`// --- name ---` comments), and a module of more than
 * 400 lines must open with a section map (a `Sections:` list in its header comment). Exits 1 and lists the offenders.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import ts from "typescript"

const maxFunction = 80
const maxModule = 400

const files = (dir: string): Array<string> =>
  fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? files(path.join(dir, e.name)) : e.name.endsWith(".ts") ? [path.join(dir, e.name)] : []
  )

const isCode = (line: string): boolean => {
  const t = line.trim()
  return t !== "" && !t.startsWith("//") && !t.startsWith("*") && !t.startsWith("/*")
}

const problems: Array<string> = []
for (const file of files("src")) {
  const text = fs.readFileSync(file, "utf8")
  const lines = text.split("\n")
  if (lines.length > maxModule && !/^\s*\*\s*Sections:/m.test(text.slice(0, text.indexOf("*/") + 2))) {
    problems.push(`${file}: ${lines.length} lines and no section map ("Sections:" in its header)`)
  }
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true)
  const visit = (node: ts.Node): void => {
    if (ts.isFunctionLike(node) && "body" in node && node.body !== undefined) {
      const start = source.getLineAndCharacterOfPosition(node.getStart(source)).line
      const end = source.getLineAndCharacterOfPosition(node.getEnd()).line
      const body = lines.slice(start, end + 1)
      const code = body.filter(isCode).length
      if (code > maxFunction && !body.some((l) => /\/\/ --- /.test(l))) {
        problems.push(`${file}:${start + 1}: a function of ${code} code lines without named sections`)
      }
    }
    ts.forEachChild(node, visit)
  }
  visit(source)
}
for (const p of problems) console.log(p)
if (problems.length > 0) process.exit(1)
console.log(
  "sizes: every function of src/ within 80 code lines or in named sections; every module within 400 lines or mapped"
)
