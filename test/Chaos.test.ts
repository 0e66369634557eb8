/**
 * The short chaos run: a few thousand tasks, two worker processes, every kind
 * of fault at least once (see chaos/Chaos.ts; `npm run chaos` is the full run).
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Chaos from "../chaos/Chaos.ts"

describe("Chaos", () => {
  it.live("every fault at least once, two workers side by side: no task lost, no worker crashed", () =>
    Effect.gen(function*() {
      const prefetch = 20
      const report = yield* Chaos.run({
        tasks: 2000,
        workers: 2,
        publishRate: 100,
        prefetch,
        workMs: 5,
        faults: ["close", "pause", "restart", "channel", "sigterm", "sigkill"],
        timeoutMs: 120_000,
        log: (line) => console.log(line)
      })
      console.log(Chaos.summary(report, prefetch))
      assert.deepStrictEqual(report.problems, [])
      assert.deepStrictEqual(report.lost, [])
      assert.strictEqual(report.confirmed, 2000)
      assert.strictEqual(report.distinctHandled, 2000)
      assert.deepStrictEqual(report.unexpectedExits, [])
      assert.deepStrictEqual(report.final, { ready: 0, unacked: 0, deadLettered: 0, retrying: 0 })
      for (const kind of ["close", "pause", "restart", "channel", "sigterm", "sigkill"]) {
        assert.isAtLeast(report.faultCounts[kind]?.count ?? 0, 1, kind)
      }
    }), 240_000)
})
