/**
 * The worker as a process: graceful shutdown on SIGTERM/SIGINT with messages
 * in flight, the grace period, start-up with the broker unreachable, and
 * invalid configuration. The process is `node src/main.ts`, run directly.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as broker from "./support/broker.ts"
import { type LogLine, messageText, spawnWorker } from "./support/process.ts"
import * as Proxy from "./support/proxy.ts"

const ids = (n: number) => Array.from({ length: n }, (_, i) => `task-${i}`)

const handledIds = (logs: ReadonlyArray<LogLine>) =>
  logs.filter((line) => /^handled task /.test(messageText(line))).map((line) => String(line.annotations?.messageId))

describe("Shutdown (worker process)", () => {
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    it.live(`${signal} with messages in flight: in-flight handlers finish and are acked, the rest stay queued, exit 0`, () =>
      Effect.gen(function*() {
        const admin = yield* broker.admin
        const queue = yield* admin.queue("shutdown")
        const all = ids(40)
        const worker = yield* spawnWorker({ AMQP_QUEUE: queue, WORK_MS: "400", AMQP_PREFETCH: "10" })
        yield* worker.waitFor("consuming", (logs) => logs.some((l) => /^consuming from/.test(messageText(l))))
        yield* admin.publishTasks(queue, all)
        // The first batch of 10 is done and the second is in flight.
        yield* worker.waitFor("a first batch", (logs) => handledIds(logs).length >= 10)
        yield* Effect.sleep("100 millis")
        const beforeSignal = handledIds(worker.logs).length
        worker.signal(signal)
        const code = yield* worker.exit()
        assert.strictEqual(code, 0, worker.output.join("\n"))

        const handled = handledIds(worker.logs)
        const remaining = (yield* admin.drainQueue(queue)).map((m) => String(m.properties.messageId))
        // In-flight handlers finished after the signal...
        assert.isAbove(handled.length, beforeSignal)
        // ...every message was handled exactly once (acked) or is back in the queue, never both...
        assert.strictEqual(new Set(handled).size, handled.length)
        assert.deepStrictEqual([...handled, ...remaining].sort(), [...all].sort())
        // ...and the broker holds nothing unacked.
        assert.deepStrictEqual(yield* broker.queueCounts(queue), { ready: 0, unacked: 0, consumers: 0 })
        // Every handled task published exactly one confirmed result.
        const results = (yield* admin.drainQueue(`${queue}.done`)).map((m) => String(m.properties.messageId))
        assert.deepStrictEqual(results.sort(), [...handled].sort())
        // Every stdout line is one JSON object; handled lines carry the message id.
        const stdoutLines = worker.output.filter((line) => line.startsWith("{"))
        assert.strictEqual(worker.logs.length, stdoutLines.length)
        const messages = worker.logs.map(messageText)
        assert.isBelow(messages.indexOf("shutting down: draining consumers"), messages.indexOf("stopped: consumers drained, channels and connection closed"))
      }))
  }

  it.live("handlers still running when the grace period ends are interrupted; their messages go back to the queue", () =>
    Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("grace")
      const worker = yield* spawnWorker({ AMQP_QUEUE: queue, WORK_MS: "20000", SHUTDOWN_GRACE_MS: "500" })
      yield* worker.waitFor("consuming", (logs) => logs.some((l) => /^consuming from/.test(messageText(l))))
      yield* admin.publishTasks(queue, ids(5))
      yield* broker.eventually("5 in flight", broker.queueCounts(queue), (c) => c.unacked === 5)
      const signalledAt = Date.now()
      worker.signal("SIGTERM")
      const code = yield* worker.exit()
      const tookMs = Date.now() - signalledAt
      assert.strictEqual(code, 0)
      // It did not wait for the 20 s handlers.
      assert.isBelow(tookMs, 10_000)
      assert.deepStrictEqual(handledIds(worker.logs), [])
      assert.isTrue(worker.logs.some((l) => /^shutdown: the grace period of .* is over/.test(messageText(l))))
      assert.deepStrictEqual(yield* broker.queueCounts(queue), { ready: 5, unacked: 0, consumers: 0 })
    }))

  it.live("a handler that ignores interruption does not hold up the exit: abandoned 5 s after the grace period, its message back in the queue, exit 0", () =>
    Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("hang")
      const worker = yield* spawnWorker(
        { AMQP_QUEUE: queue, SHUTDOWN_GRACE_MS: "500" },
        { script: "test/fixtures/crashing-worker.ts" }
      )
      yield* broker.eventually("consuming", Effect.sync(() => worker.output.some((line) => line.includes("consuming from"))), Boolean, 30_000)
      yield* admin.publish(queue, [{ body: JSON.stringify({ id: "h", hang: true }), options: { messageId: "h" } }])
      yield* broker.eventually("handling", Effect.sync(() => worker.output), (lines) => lines.includes("handling h attempt 1"))
      const signalledAt = Date.now()
      worker.signal("SIGTERM")
      const code = yield* worker.exit(30_000)
      const tookMs = Date.now() - signalledAt
      assert.strictEqual(code, 0, worker.output.join("\n"))
      // The grace period (0.5 s), then 5 s for the interrupted handler, then closing.
      assert.isAtLeast(tookMs, 5_000)
      assert.isBelow(tookMs, 15_000)
      assert.isTrue(worker.output.some((line) => line.includes("1 handler(s) still running 5s after being interrupted")), worker.output.join("\n"))
      assert.deepStrictEqual(
        yield* broker.eventually("given back", broker.queueCounts(queue), (c) => c.ready === 1),
        { ready: 1, unacked: 0, consumers: 0 }
      )
    }), 60_000)

  it.live("the broker unreachable at start-up: retries with growing delays, never crashes, never logs the password", () =>
    Effect.gen(function*() {
      const closed = yield* Proxy.make(undefined, { listening: false })
      const worker = yield* spawnWorker({
        AMQP_URL: `amqp://guest:s3cret-pw@127.0.0.1:${closed.port}`,
        RECONNECT_BASE_MS: "50",
        RECONNECT_MAX_MS: "400"
      })
      const retries = (logs: ReadonlyArray<LogLine>) =>
        logs.filter((l) => /reconnecting in \d+ ms \(attempt \d+\)/.test(messageText(l)))
      yield* worker.waitFor("six attempts", (logs) => retries(logs).length >= 6)
      const delays = retries(worker.logs).map((l) => Number(/in (\d+) ms/.exec(messageText(l))![1]))
      assert.isAtMost(delays[0]!, 60)
      assert.isAtMost(Math.max(...delays), 400)
      assert.isAtLeast(delays[5]!, 400 / 1.2 * 0.8 - 1)
      worker.signal("SIGTERM")
      assert.strictEqual(yield* worker.exit(), 0)
      assert.isFalse(worker.output.some((line) => line.includes("s3cret-pw")))
      assert.isTrue(worker.output.some((line) => line.includes(`amqp://127.0.0.1:${closed.port}`)))
    }))

  for (
    const [variable, value] of [
      ["AMQP_PREFETCH", "abc"],
      ["AMQP_PREFETCH", "0"],
      ["AMQP_URL", "http://guest:s3cret-pw@localhost"],
      ["SHUTDOWN_GRACE_MS", "-1"],
      ["LOG_FORMAT", "xml"]
    ] as const
  ) {
    it.live(`${variable}=${value} stops start-up with an error naming the variable`, () =>
      Effect.gen(function*() {
        const worker = yield* spawnWorker({ [variable]: value })
        const code = yield* worker.exit()
        assert.strictEqual(code, 1)
        const text = worker.output.join("\n")
        assert.include(text, variable)
        assert.notInclude(text, "s3cret-pw")
      }))
  }
})
