/**
 * The code blocks of the documentation, as the checks read them: fenced blocks of the README and the guides, and the
 * `@example` blocks of the sources' doc comments. Shared by `check-docs.ts` (every TypeScript block compiles, the tests
 * among them pass) and the newcomer test (the README's Install command and Quick start, exactly as printed).
 */
import { readFileSync } from "node:fs"

export interface CodeBlock {
  /** The file it is in, as given. */
  readonly file: string
  /** 1-based line of its first line of code. */
  readonly line: number
  readonly lang: string
  /** The nearest heading above it (markdown only), without its `#`s. */
  readonly heading: string
  readonly code: string
}

const fence = /^(\s*)```(\S*)\s*$/

/** Every fenced block of a markdown file. */
export const markdownBlocks = (file: string): ReadonlyArray<CodeBlock> => {
  const lines = readFileSync(file, "utf8").split("\n")
  const blocks: Array<CodeBlock> = []
  let heading = ""
  for (let i = 0; i < lines.length; i++) {
    const open = fence.exec(lines[i]!)
    if (open === null) {
      const h = /^#+\s+(.*)$/.exec(lines[i]!)
      if (h !== null) heading = h[1]!
      continue
    }
    const indent = open[1]!.length
    const start = i + 1
    do i++
    while (i < lines.length && !/^\s*```\s*$/.test(lines[i]!))
    const code = lines.slice(start, i).map((l) => l.slice(indent)).join("\n")
    blocks.push({ file, line: start + 1, lang: open[2]!, heading, code: `${code}\n` })
  }
  return blocks
}

/** The headings of a markdown file, outside code blocks, without their `#`s. */
export const markdownHeadings = (file: string): ReadonlyArray<string> =>
  readFileSync(file, "utf8").replace(/```[\s\S]*?```/g, "").split("\n").flatMap((line) => {
    const h = /^#+\s+(.*)$/.exec(line)
    return h === null ? [] : [h[1]!]
  })

/** Every `@example` block in the doc comments of a TypeScript file. */
export const exampleBlocks = (file: string): ReadonlyArray<CodeBlock> => {
  const lines = readFileSync(file, "utf8").split("\n")
  const blocks: Array<CodeBlock> = []
  for (let i = 0; i < lines.length; i++) {
    if (!/^\s*\*\s*@example\b/.test(lines[i]!)) continue
    const open = /^\s*\*\s*```(\S*)\s*$/.exec(lines[i + 1] ?? "")
    if (open === null) throw new Error(`${file}:${i + 1}: an @example must be a fenced block`)
    const start = i + 2
    i = start
    while (i < lines.length && !/^\s*\*\s*```\s*$/.test(lines[i]!)) i++
    const code = lines.slice(start, i).map((l) => l.replace(/^\s*\* ?/, "")).join("\n")
    blocks.push({ file, line: start + 1, lang: open[1]!, heading: "", code: `${code}\n` })
  }
  return blocks
}

/** The first block of `lang` under the heading `heading`: what a section shows as the one to copy. */
export const blockUnder = (file: string, heading: string, lang: string): CodeBlock => {
  const block = markdownBlocks(file).find((b) => b.heading === heading && b.lang === lang)
  if (block === undefined) throw new Error(`${file}: no ${lang} block under "${heading}"`)
  return block
}
