// @ts-check
/**
 * `etcdseq/bounded-timeout`: refuses `Effect.timeout` and its variants in the library's sources. A finalizer runs
 * uninterruptibly, and there a bare timeout never fires (it ends its effect by interrupting it, which waits for the
 * effect to finish by itself): `etcdseq run --grace` and the leave's TTL bound both broke this way. The helpers in
 * `src/internal/bounded.ts` run the timed effect interruptibly, so their bound holds wherever they are used.
 */
const timeouts = new Set(["timeout", "timeoutOption", "timeoutFail", "timeoutFailCause", "timeoutTo"])

/** @type {import("eslint").Rule.RuleModule} */
const boundedTimeout = {
  meta: {
    type: "problem",
    docs: { description: "Effect.timeout* does not fire in finalizers: use src/internal/bounded.ts" },
    messages: {
      bare:
        "Effect.{{name}} never fires in a finalizer (uninterruptible): use Bounded.{{helper}} from " +
        "src/internal/bounded.ts, which runs the timed effect interruptibly"
    },
    schema: []
  },
  create: (context) => ({
    MemberExpression(node) {
      if (
        node.object.type === "Identifier" && node.object.name === "Effect" &&
        node.property.type === "Identifier" && timeouts.has(node.property.name)
      ) {
        const name = node.property.name
        const helper = name === "timeoutOption" || name === "timeoutFail" ? name : "timeout"
        context.report({ node, messageId: "bare", data: { name, helper } })
      }
    }
  })
}

export default { rules: { "bounded-timeout": boundedTimeout } }
