/**
 * `effect-etcdseq/sql`: fences checked by a SQL database, over `@effect/sql` (an optional peer dependency: install
 * `@effect/sql` and a driver such as `@effect/sql-pg` to use it).
 *
 * @since 0.1.0
 */

/**
 * `FenceSql.setup` creates the fences table; `FenceSql.check(resource, fence)`, inside the transaction of the writes it
 * guards, refuses a fence below the highest recorded for the resource.
 *
 * @since 0.1.0
 */
export * as FenceSql from "./FenceSql.js"
