/**
 * The short cluster chaos run, on the three-node RabbitMQ 4.3 cluster
 * (`npm run chaos -- --cluster` is the long one): two worker processes with
 * every node's address, quorum queues, some tasks retried through the
 * broker's retry queue, every node's app stopped in turn (the main queue's
 * leader first), one node killed outright, connections closed, workers
 * stopped and killed. Nothing may be lost, every queue ends empty, and
 * handling never stalls over 5 s while the broker serves (a majority of
 * nodes is always up; the time RabbitMQ itself withholds confirms during a
 * leader change is reported apart).
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Chaos from "../../chaos/Chaos.ts"
import * as Cluster from "../support/cluster.ts"

describe("Cluster chaos", () => {
  it.live("node stops (every node, the leader first), a node kill, closes: nothing lost, no stall over 5 s", () =>
    Effect.gen(function*() {
      yield* Effect.addFinalizer(() => Cluster.up.pipe(Effect.ignore))
      const prefetch = 10
      const faults = ["close", "node-stop", "node-kill", "sigterm", "sigkill"] as const
      const report = yield* Chaos.run({
        tasks: 3000,
        workers: 2,
        publishRate: 150,
        prefetch,
        workMs: 20,
        faults,
        cluster: true,
        failEvery: 10,
        retryDelayMs: 1000,
        timeoutMs: 240_000,
        log: (line) => console.log(line)
      })
      console.log(Chaos.summary(report, prefetch))
      assert.deepStrictEqual(report.problems, [])
      assert.deepStrictEqual(report.lost, [])
      assert.strictEqual(report.confirmed, 3000)
      assert.strictEqual(report.distinctHandled, 3000)
      assert.deepStrictEqual(report.final, { ready: 0, unacked: 0, deadLettered: 0, retrying: 0 })
      // Retries went through the broker's retry queue while nodes went down.
      assert.isAtLeast(report.retried, 100)
      for (const kind of faults) assert.isAtLeast(report.faultCounts[kind]?.count ?? 0, 1, kind)
      // Every node was stopped once, the main queue's leader first.
      const stopped = report.faults.filter((f) => f.kind === "node-stop").slice(0, 3).map((f) => f.detail?.split(",")[0])
      assert.sameMembers(stopped, Cluster.nodes.map((n) => n.name))
      assert.include(report.faults.find((f) => f.kind === "node-stop")?.detail ?? "", "(main)")
      // Handling never stalled over 5 s while the broker served (see Chaos.ts).
      assert.isAtMost(report.longestWorkerStallMs, Chaos.maxStallMs)
    }), 300_000)
})
