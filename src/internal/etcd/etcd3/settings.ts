/** The client's settings, as `Etcd.make` checked them (internal/etcd/options.ts). */
import type { Duration } from "effect"
import type { IOptions } from "etcd3"

/** The TLS material as etcd3 takes it. */
export type Credentials = NonNullable<IOptions["credentials"]>

/** Client options, validated by `Etcd.make`. */
export interface Settings {
  readonly endpoints: ReadonlyArray<string>
  readonly auth: { readonly username: string; readonly password: string } | undefined
  readonly credentials: IOptions["credentials"] | undefined
  readonly connectTimeout: Duration.Duration
  readonly requestTimeout: Duration.Duration
}
