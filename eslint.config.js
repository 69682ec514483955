// @ts-check
import effect from "@effect/eslint-plugin"
import js from "@eslint/js"
import tseslint from "typescript-eslint"
import etcdseq from "./eslint/boundedTimeout.js"

export default tseslint.config(
  { ignores: ["dist/**", "node_modules/**", "bench/results/**", ".tmp/**", ".scratch/**"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ["**/*.ts"],
    plugins: { "@effect": effect },
    rules: {
      // The formatting Effect's own packages use.
      "@effect/dprint": [
        "error",
        {
          config: {
            indentWidth: 2,
            lineWidth: 120,
            semiColons: "asi",
            quoteStyle: "alwaysDouble",
            trailingCommas: "never",
            operatorPosition: "maintain",
            "arrowFunction.useParentheses": "force"
          }
        }
      ],
      "@typescript-eslint/no-unused-vars": ["error", { argsIgnorePattern: "^_", varsIgnorePattern: "^_" }],
      "@typescript-eslint/no-empty-function": "off",
      "no-constant-condition": ["error", { checkLoops: false }],
      "require-yield": "off"
    }
  },
  {
    // A bare Effect.timeout never fires in a finalizer: the library bounds its waits with src/internal/bounded.ts.
    files: ["src/**/*.ts"],
    plugins: { etcdseq },
    rules: { "etcdseq/bounded-timeout": "error" }
  }
)
