/**
 * The guards over etcd3's watch stream internals (etcd3 is pinned; these fail if an upgrade moves what they use).
 */
import { describe, expect, it } from "@effect/vitest"
import { Etcd3 } from "etcd3"
import { dropStrayResponses } from "../../src/internal/etcd/etcd3/internals.js"

type Manager = { handleResponse: (response: { watch_id: string; events: Array<unknown> }) => void }

describe("watch stream guards", () => {
  it("a response for a watcher etcd3 no longer knows is dropped, not thrown from the stream's data handler", () => {
    // No connection is made: the watch manager exists from construction, and nothing here sends a request.
    const raw = new Etcd3({ hosts: ["http://127.0.0.1:9"] })
    const guarded = new Etcd3({ hosts: ["http://127.0.0.1:9"] })
    try {
      const stray = { watch_id: "12345", events: [] }
      // What etcd3 1.1.2 does unguarded: the throw that surfaced as an unhandled rejection.
      expect(() => (raw as unknown as { watchManager: Manager }).watchManager.handleResponse(stray)).toThrow(
        "Failed to find watcher for IWatchResponse"
      )
      expect(dropStrayResponses(guarded)).toBe(true)
      expect(() => (guarded as unknown as { watchManager: Manager }).watchManager.handleResponse(stray)).not.toThrow()
    } finally {
      raw.close()
      guarded.close()
    }
  })
})
