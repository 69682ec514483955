/** The real-etcd harness is the library's own testing entry point (`effect-etcdseq/testing`). */
export * from "../../src/testing.js"
