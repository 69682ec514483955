/**
 * effect-etcdseq: every member of a group of processes gets an `(index, count)` pair through etcd.
 *
 * @since 0.1.0
 */
export * from "./Assignment.js"
export * from "./Etcd.js"
export * from "./EtcdSeq.js"
export * from "./EtcdSeqError.js"
export * from "./GroupView.js"
export * from "./Info.js"
export * from "./MemoryEtcd.js"
export * from "./Shard.js"
