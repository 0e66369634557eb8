/**
 * Message handling against the real broker: acks, decode failures, typed
 * failures and defects, and the concurrency limit.
 */
import { assert, describe, it } from "@effect/vitest"
import { Data, Effect, Schema } from "effect"
import * as Consumer from "../src/Consumer.ts"
import * as broker from "./support/broker.ts"
import * as logs from "./support/logs.ts"
import { startWorker } from "./support/worker.ts"

const Task = Schema.Struct({ id: Schema.String })
class Flaky extends Data.TaggedError("Flaky")<{ readonly id: string }> {}

const ids = (n: number, prefix = "t") => Array.from({ length: n }, (_, i) => `${prefix}-${i}`)

/** A queue whose rejected messages dead-letter into a second queue. */
const queueWithDeadLetters = (admin: broker.Admin) =>
  Effect.gen(function*() {
    const dlq = yield* admin.queue("dlq", {})
    const queue = yield* admin.queue("work", { deadLetterExchange: "", deadLetterRoutingKey: dlq })
    const queueOptions = { arguments: { "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq } }
    return { queue, dlq, queueOptions }
  })

describe("Consumer", () => {
  it.live("acks every message its handler handled", () =>
    Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("ack")
      const handled: Array<string> = []
      const consumer = Consumer.make({
        queue,
        schema: Task,
        handler: (task) => Effect.sync(() => handled.push(task.id))
      })
      const { worker } = yield* startWorker([consumer])
      yield* worker.awaitReady
      yield* admin.publishTasks(queue, ids(200))
      yield* broker.eventually("200 handled", Effect.sync(() => handled.length), (n) => n >= 200)
      const counts = yield* broker.eventually("queue settled", broker.queueCounts(queue), (c) => c.unacked === 0)
      assert.deepStrictEqual(counts, { ready: 0, unacked: 0, consumers: 1 })
      assert.deepStrictEqual([...handled].sort(), ids(200).sort())
    }))

  it.live("policy reject: bodies that do not decode are rejected without requeue (to the queue's own DLX), logged with the reason and message id", () =>
    Effect.gen(function*() {
      const captured = logs.capture()
      yield* Effect.gen(function*() {
        const admin = yield* broker.admin
        const { dlq, queue, queueOptions } = yield* queueWithDeadLetters(admin)
        const handled: Array<string> = []
        const consumer = Consumer.make({
          queue,
          queueOptions,
          schema: Task,
          onFailure: "reject",
          handler: (task) => Effect.sync(() => handled.push(task.id))
        })
        const { worker } = yield* startWorker([consumer])
        yield* worker.awaitReady
        yield* admin.publish(queue, [
          { body: "{not json", options: { messageId: "bad-json" } },
          { body: JSON.stringify({ id: 42 }), options: { messageId: "bad-shape" } },
          { body: "", options: { messageId: "empty" } },
          { body: JSON.stringify({ id: "good" }), options: { messageId: "good" } }
        ])
        const deadLettered = yield* broker.eventually("3 dead-lettered", admin.ready(dlq), (n) => n === 3)
        assert.strictEqual(deadLettered, 3)
        yield* broker.eventually("the good one handled", Effect.sync(() => handled), (h) => h.length === 1)
        assert.deepStrictEqual(handled, ["good"])
        const counts = yield* broker.queueCounts(queue)
        assert.deepStrictEqual(counts, { ready: 0, unacked: 0, consumers: 1 })
        const dead = yield* admin.drainQueue(dlq)
        assert.deepStrictEqual(dead.map((m) => m.properties.messageId).sort(), ["bad-json", "bad-shape", "empty"])
      }).pipe(Effect.provide(captured.layer))

      const rejected = captured.matching(/message rejected: cannot decode the message \(InvalidBody\)/)
      assert.deepStrictEqual(rejected.map((line) => line.annotations.messageId).sort(), ["bad-json", "bad-shape", "empty"])
      const shape = rejected.find((line) => line.annotations.messageId === "bad-shape")
      assert.match(shape!.message, /InvalidBody.*Expected string/)
      const json = rejected.find((line) => line.annotations.messageId === "bad-json")
      assert.match(json!.message, /JSON/)
    }))

  it.live("requeues a message whose handler failed when the policy is requeue", () =>
    Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("requeue")
      const attempts: Array<{ id: string; redelivered: boolean }> = []
      const consumer = Consumer.make({
        queue,
        schema: Task,
        onFailure: "requeue",
        handler: (task, message) =>
          Effect.gen(function*() {
            attempts.push({ id: task.id, redelivered: message.redelivered })
            if (task.id === "flaky" && !message.redelivered) return yield* Effect.fail(new Flaky({ id: task.id }))
          })
      })
      const { worker } = yield* startWorker([consumer])
      yield* worker.awaitReady
      yield* admin.publishTasks(queue, ["flaky"])
      yield* broker.eventually("handled twice", Effect.sync(() => attempts.length), (n) => n >= 2)
      const counts = yield* broker.eventually("queue settled", broker.queueCounts(queue), (c) => c.unacked === 0)
      assert.deepStrictEqual(attempts, [{ id: "flaky", redelivered: false }, { id: "flaky", redelivered: true }])
      assert.deepStrictEqual(counts, { ready: 0, unacked: 0, consumers: 1 })
    }))

  it.live("rejects a failed message when the policy is reject, so it dead-letters", () =>
    Effect.gen(function*() {
      const admin = yield* broker.admin
      const { dlq, queue, queueOptions } = yield* queueWithDeadLetters(admin)
      const consumer = Consumer.make({
        queue,
        queueOptions,
        schema: Task,
        onFailure: "reject",
        handler: (task) => Effect.fail(new Flaky({ id: task.id }))
      })
      const { worker } = yield* startWorker([consumer])
      yield* worker.awaitReady
      yield* admin.publishTasks(queue, ["doomed"])
      yield* broker.eventually("dead-lettered", admin.ready(dlq), (n) => n === 1)
      const [dead] = yield* admin.drainQueue(dlq)
      assert.strictEqual(dead?.properties.messageId, "doomed")
      assert.deepStrictEqual(yield* broker.queueCounts(queue), { ready: 0, unacked: 0, consumers: 1 })
    }))

  it.live("a handler defect does not stop the worker; the message is settled by the policy", () =>
    Effect.gen(function*() {
      const admin = yield* broker.admin
      const { dlq, queue, queueOptions } = yield* queueWithDeadLetters(admin)
      const handled: Array<string> = []
      const consumer = Consumer.make({
        queue,
        queueOptions,
        schema: Task,
        onFailure: "reject",
        handler: (task) => {
          // A bug before any effect is built: the same outcome as a defect inside one.
          if (task.id === "throws") throw new Error("a bug before the effect")
          return Effect.sync(() => {
            if (task.id === "boom") throw new Error("a bug in the handler")
            handled.push(task.id)
          })
        }
      })
      const { worker } = yield* startWorker([consumer])
      yield* worker.awaitReady
      yield* admin.publishTasks(queue, ["before", "boom", "throws", "after"])
      yield* broker.eventually("dead-lettered", admin.ready(dlq), (n) => n === 2)
      yield* broker.eventually("others handled", Effect.sync(() => handled.length), (n) => n === 2)
      assert.deepStrictEqual(handled.sort(), ["after", "before"])
      const dead = yield* admin.drainQueue(dlq)
      assert.deepStrictEqual(dead.map((m) => m.properties.messageId).sort(), ["boom", "throws"])
      const counts = yield* broker.eventually("queue settled", broker.queueCounts(queue), (c) => c.unacked === 0)
      assert.deepStrictEqual(counts, { ready: 0, unacked: 0, consumers: 1 })
      const status = yield* worker.status
      assert.strictEqual(status.connection, "connected")
    }))

  it.live("bodies are decoded by the schema, transformations included (a date from its string)", () =>
    Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("decode")
      const seen: Array<{ id: string; at: Date }> = []
      const consumer = Consumer.make({
        queue,
        schema: Schema.Struct({ id: Schema.String, at: Schema.DateFromString }),
        handler: (event) => Effect.sync(() => seen.push(event))
      })
      const { worker } = yield* startWorker([consumer])
      yield* worker.awaitReady
      yield* admin.publish(queue, [{ body: JSON.stringify({ id: "e1", at: "2026-11-25T10:00:00.000Z" }) }])
      yield* broker.eventually("handled", Effect.sync(() => seen.length), (n) => n === 1)
      assert.strictEqual(seen[0]!.id, "e1")
      assert.instanceOf(seen[0]!.at, Date)
      assert.strictEqual(seen[0]!.at.toISOString(), "2026-11-25T10:00:00.000Z")
    }).pipe(Effect.provide(logs.capture().layer)))

  it.live("runs at most `concurrency` handlers at once, and at most `prefetch` by default", () =>
    Effect.gen(function*() {
      const admin = yield* broker.admin
      const measure = (queue: string, options: { prefetch: number; concurrency?: number }) =>
        Effect.gen(function*() {
          let running = 0
          let peak = 0
          let done = 0
          const consumer = Consumer.make({
            queue,
            schema: Task,
            ...options,
            handler: () =>
              Effect.gen(function*() {
                running++
                peak = Math.max(peak, running)
                yield* Effect.sleep("50 millis")
                running--
                done++
              })
          })
          const { worker } = yield* startWorker([consumer])
          yield* worker.awaitReady
          yield* admin.publishTasks(queue, ids(30))
          yield* broker.eventually("all handled", Effect.sync(() => done), (n) => n === 30)
          return peak
        }).pipe(Effect.scoped)
      assert.strictEqual(yield* measure(yield* admin.queue("conc"), { prefetch: 10, concurrency: 2 }), 2)
      assert.strictEqual(yield* measure(yield* admin.queue("prefetch"), { prefetch: 4 }), 4)
    }))
})
