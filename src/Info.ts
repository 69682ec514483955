/**
 * `Info`: what a member knows of its place in the group.
 *
 * @since 0.1.0
 */
import { Equal, Hash, Inspectable } from "effect"

const TypeId: unique symbol = Symbol.for("effect-etcdseq/Info")

/**
 * A member's `(index, count)` in its group, and the `revision` that names the view it comes from.
 *
 * - `index`: the member's position in join order among the live members (0-based), `-1` when invalid.
 * - `count`: the number of live members, `0` when invalid.
 * - `revision`: the etcd revision of the last membership change (a join or a leave) the view includes. Every
 *   member holding the same view holds the same revision, so it names the view across the group.
 *
 * Two Infos are `Equal.equals` when index and count are equal; the revision is ignored, so
 * `Stream.changes` drops a view change that leaves a member's share untouched.
 *
 * @example
 * ```ts
 * import { Info } from "effect-etcdseq"
 * const mine = (hash: number, info: Info) => Info.isValid(info) && hash % info.count === info.index
 * ```
 * @since 0.1.0
 * @category models
 */
export class Info implements Equal.Equal, Inspectable.Inspectable {
  /** @internal */
  readonly [TypeId]: typeof TypeId = TypeId

  private constructor(
    readonly index: number,
    readonly count: number,
    readonly revision: number
  ) {}

  /**
   * Builds a valid Info. Most code receives Infos from `EtcdSeq.changes`; this is for tests and test layers.
   *
   * @example
   * ```ts
   * import { Info } from "effect-etcdseq"
   *
   * console.log(Info.make(1, 3, 42).toString()) // "1/3@42"
   * ```
   * @since 0.1.0
   * @category constructors
   */
  static make(index: number, count: number, revision: number): Info {
    return new Info(index, count, revision)
  }

  /**
   * The Info of a member that holds no membership: index -1, count 0, revision 0. A member that sees it must stop
   * its work.
   *
   * @since 0.1.0
   * @category constructors
   */
  static readonly invalid: Info = new Info(-1, 0, 0)

  /**
   * True when the member holds a membership (`0 <= index < count`).
   *
   * @example
   * ```ts
   * import { Stream } from "effect"
   * import { EtcdSeq, Info } from "effect-etcdseq"
   *
   * const held = EtcdSeq.changes.pipe(Stream.filter(Info.isValid))
   * ```
   * @since 0.1.0
   * @category predicates
   */
  static isValid(info: Info): boolean {
    return info.count > 0 && info.index >= 0 && info.index < info.count
  }

  /**
   * True when `u` is an Info.
   *
   * @since 0.1.0
   * @category predicates
   */
  static isInfo(u: unknown): u is Info {
    return typeof u === "object" && u !== null && TypeId in u
  }

  /**
   * Whether two Infos hold the same share of the same view: index, count and revision all equal. `Equal.equals`
   * ignores the revision (the same share across views); this tells a view change apart as well, as a runner that
   * follows views (the group handover) needs.
   *
   * @since 0.1.0
   * @category equivalence
   * @example
   * ```ts
   * import { Equal } from "effect"
   * import { Info } from "effect-etcdseq"
   *
   * const before = Info.make(1, 3, 10)
   * const after = Info.make(1, 3, 12)
   * console.log(Equal.equals(before, after), Info.sameView(before, after)) // true false
   * ```
   */
  static sameView(a: Info, b: Info): boolean {
    return a.index === b.index && a.count === b.count && a.revision === b.revision
  }

  /**
   * Equal when index and count are: two Infos of one member that differ only in `revision` hold the same share.
   *
   * @since 0.1.0
   */
  [Equal.symbol](that: Equal.Equal): boolean {
    return Info.isInfo(that) && that.index === this.index && that.count === this.count
  }

  /**
   * @since 0.1.0
   */
  [Hash.symbol](): number {
    return Hash.cached(this, Hash.combine(Hash.number(this.index))(Hash.number(this.count)))
  }

  /**
   * `"2/5@1234"`, or `"invalid"`.
   *
   * @since 0.1.0
   */
  toString(): string {
    return Info.isValid(this) ? `${this.index}/${this.count}@${this.revision}` : "invalid"
  }

  /**
   * @since 0.1.0
   */
  toJSON(): unknown {
    return { _id: "Info", index: this.index, count: this.count, revision: this.revision }
  }

  /**
   * @since 0.1.0
   */
  [Inspectable.NodeInspectSymbol](): unknown {
    return this.toJSON()
  }
}
