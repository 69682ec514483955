/**
 * effect-etcdseq: every member of a group of processes gets an `(index, count)` pair through etcd.
 *
 * @since 0.1.0
 */
/**
 * @since 0.1.0
 */
export * from "./Assignment.js"
/**
 * @since 0.1.0
 */
export * from "./Etcd.js"
/**
 * @since 0.1.0
 */
export * from "./EtcdSeq.js"
/**
 * @since 0.1.0
 */
export * from "./EtcdSeqError.js"
/**
 * @since 0.1.0
 */
export * from "./Fence.js"
/**
 * Guarded writes to etcd: `FenceEtcd.commit(FenceEtcd.ofShard(shard), writes)`.
 *
 * @since 0.1.0
 */
export * as FenceEtcd from "./FenceEtcd.js"
/**
 * @since 0.1.0
 */
export * from "./GroupView.js"
/**
 * @since 0.1.0
 */
export * from "./Info.js"
/**
 * @since 0.1.0
 */
export * from "./MemoryEtcd.js"
/**
 * @since 0.1.0
 */
export * from "./Shard.js"
