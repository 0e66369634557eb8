/**
 * Poison messages: failures retried with a delay up to a maximum counted by
 * the broker, then parked in the dead-letter queue with the reason; bad input
 * parked at once; no hot loop on any path.
 */
import { assert, describe, it } from "@effect/vitest"
import { Data, Effect, Exit, Schema, Scope } from "effect"
import * as Consumer from "../src/Consumer.ts"
import type { Message } from "../src/Message.ts"
import * as Outcome from "../src/Outcome.ts"
import * as Topology from "../src/Topology.ts"
import * as broker from "./support/broker.ts"
import * as logs from "./support/logs.ts"
import { startWorker } from "./support/worker.ts"

const Task = Schema.Struct({ id: Schema.String })
class Flaky extends Data.TaggedError("Flaky")<{ readonly id: string }> {}

interface Attempt {
  readonly id: string
  readonly attempt: number
  readonly at: number
}

/** A consumer whose handler always fails, recording each attempt. */
const alwaysFailing = (queue: string, onFailure: Outcome.FailurePolicy) => {
  const attempts: Array<Attempt> = []
  const consumer = Consumer.make({
    queue,
    schema: Task,
    onFailure,
    handler: (task, message: Message) =>
      Effect.suspend(() => {
        attempts.push({ id: task.id, attempt: message.attempt, at: Date.now() })
        return Effect.fail(new Flaky({ id: task.id }))
      })
  })
  return { attempts, consumer }
}

describe("Poison messages", () => {
  it.live("a new retry delay deploys beside the old one: no conflict, nothing lost from the old retry queue, attempts go on", () =>
    Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("redeploy")
      const attempts: Array<{ id: string; attempt: number; delay: string }> = []
      const consumer = (delay: "1500 millis" | "200 millis", maxAttempts: number) =>
        Consumer.make({
          queue,
          schema: Task,
          onFailure: Outcome.retry({ maxAttempts, delay }),
          handler: (task, message: Message) =>
            Effect.suspend(() => {
              attempts.push({ id: task.id, attempt: message.attempt, delay })
              return Effect.fail(new Flaky({ id: task.id }))
            })
        })
      // An old deployment: its messages wait out a 1.5 s delay.
      const old = yield* Scope.make()
      const first = yield* startWorker([consumer("1500 millis", 3)]).pipe(Scope.provide(old))
      yield* first.worker.awaitReady
      yield* admin.publishTasks(queue, ["a", "b"])
      yield* broker.eventually("both waiting in the old retry queue", admin.ready(`${queue}.retry.1500ms`), (n) => n === 2)
      // The new deployment comes up beside it (no TopologyConflict), then the old one goes.
      const second = yield* startWorker([consumer("200 millis", 3)])
      yield* second.worker.awaitReady
      yield* Scope.close(old, Exit.void)
      yield* broker.eventually("both parked", admin.ready(`${queue}.dlq`), (n) => n === 2, 20_000)
      // Attempt 1 under the old delay; 2 and 3 under the new one, after the old queue gave them back.
      for (const id of ["a", "b"]) {
        assert.deepStrictEqual(attempts.filter((a) => a.id === id).map((a) => a.attempt), [1, 2, 3])
      }
      assert.strictEqual(yield* admin.ready(`${queue}.retry.1500ms`), 0)
      assert.strictEqual(yield* admin.ready(`${queue}.retry.200ms`), 0)
      const parked = yield* admin.drainQueue(`${queue}.dlq`)
      assert.deepStrictEqual(parked.map((m) => m.properties.headers?.["x-attempts"]), [3, 3])
      assert.deepStrictEqual(yield* broker.queueCounts(queue), { ready: 0, unacked: 0, consumers: 1 })
      assert.strictEqual((yield* second.worker.status).connection, "connected")
    }))

  it.live("a retry queue left by an earlier version with another delay is kept as it is and drains; the worker starts", () =>
    Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("legacy")
      // As an earlier version declared them: q dead-letters to q.retry, which waits 700 ms.
      yield* Effect.promise(async () => {
        await admin.channel.assertQueue(queue, { durable: true, deadLetterExchange: "", deadLetterRoutingKey: `${queue}.retry` })
        await admin.channel.assertQueue(`${queue}.retry`, { durable: true, messageTtl: 700, deadLetterExchange: "", deadLetterRoutingKey: queue })
        admin.channel.sendToQueue(`${queue}.retry`, Buffer.from(JSON.stringify({ id: "waiting" })), { messageId: "waiting", persistent: true })
        await admin.channel.waitForConfirms()
      })
      const handled: Array<string> = []
      const consumer = Consumer.make({
        queue,
        schema: Task,
        onFailure: Outcome.retry({ maxAttempts: 3, delay: "5 seconds" }),
        handler: (task) => Effect.sync(() => handled.push(task.id))
      })
      const { worker } = yield* startWorker([consumer])
      yield* worker.awaitReady
      yield* broker.eventually("the waiting message came back", Effect.sync(() => handled), (h) => h.includes("waiting"))
      yield* admin.deleteQueue(`${queue}.retry.5000ms`)
    }))

  it.live("the parked copy is faithful: every property kept, and the first route (not the retry queue's) on every attempt and in the copy", () =>
    Effect.gen(function*() {
      const admin = yield* broker.admin
      const exchange = yield* admin.exchange("orders")
      const queue = yield* admin.queue("faithful")
      const routes: Array<string> = []
      const consumer = Consumer.make({
        queue,
        schema: Task,
        onFailure: Outcome.retry({ maxAttempts: 2, delay: "100 millis" }),
        handler: (task, message: Message) =>
          Effect.suspend(() => {
            routes.push(`${message.exchange}/${message.routingKey}`)
            return Effect.fail(new Flaky({ id: task.id }))
          })
      })
      const { worker } = yield* startWorker([consumer], {
        topology: Topology.make({
          exchanges: [{ name: exchange, type: "topic" }],
          bindings: [{ exchange, queue, routingKey: "order.#" }]
        })
      })
      yield* worker.awaitReady
      const timestamp = Math.floor(Date.now() / 1000) - 60
      yield* Effect.promise(async () => {
        admin.channel.publish(exchange, "order.paid", Buffer.from(JSON.stringify({ id: "p1" })), {
          persistent: true,
          messageId: "p1",
          correlationId: "c1",
          replyTo: "replies",
          contentType: "application/json",
          contentEncoding: "utf-8",
          type: "order.paid",
          appId: "shop",
          priority: 4,
          timestamp,
          expiration: "600000",
          headers: { tenant: "acme" }
        })
        await admin.channel.waitForConfirms()
      })
      yield* broker.eventually("parked", admin.ready(`${queue}.dlq`), (n) => n === 1)
      assert.deepStrictEqual(routes, [`${exchange}/order.paid`, `${exchange}/order.paid`])
      const [parked] = yield* admin.drainQueue(`${queue}.dlq`)
      const p = parked!.properties
      assert.deepStrictEqual(
        [p.messageId, p.correlationId, p.replyTo, p.contentType, p.contentEncoding, p.type, p.appId, p.priority, p.timestamp],
        ["p1", "c1", "replies", "application/json", "utf-8", "order.paid", "shop", 4, timestamp]
      )
      // Not the expiration: the copy must not expire from the dead-letter queue.
      assert.isUndefined(p.expiration)
      assert.strictEqual(p.headers?.tenant, "acme")
      assert.strictEqual(p.headers?.["x-original-exchange"], exchange)
      assert.strictEqual(p.headers?.["x-original-routing-key"], "order.paid")
      assert.strictEqual(p.headers?.["x-attempts"], 2)
    }))

  it.live("a handler that always fails: retried after the delay up to the maximum, then parked with the reason", () =>
    Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("retry")
      const { attempts, consumer } = alwaysFailing(queue, Outcome.retry({ maxAttempts: 3, delay: "400 millis" }))
      const { worker } = yield* startWorker([consumer])
      yield* worker.awaitReady
      yield* admin.publishTasks(queue, ["doomed"])
      yield* broker.eventually("parked", admin.ready(`${queue}.dlq`), (n) => n === 1)
      // Nothing more happens: no fourth attempt, nothing waiting anywhere.
      yield* Effect.sleep("1200 millis")
      assert.deepStrictEqual(attempts.map((a) => a.attempt), [1, 2, 3])
      const gaps = attempts.slice(1).map((a, i) => a.at - attempts[i]!.at)
      for (const gap of gaps) {
        assert.isAtLeast(gap, 400)
        assert.isBelow(gap, 1400)
      }
      assert.deepStrictEqual(yield* broker.queueCounts(queue), { ready: 0, unacked: 0, consumers: 1 })
      assert.strictEqual(yield* admin.ready(`${queue}.retry`), 0)
      const [parked] = yield* admin.drainQueue(`${queue}.dlq`)
      assert.strictEqual(parked?.properties.messageId, "doomed")
      assert.strictEqual(parked?.content.toString(), JSON.stringify({ id: "doomed" }))
      const headers = parked?.properties.headers ?? {}
      assert.strictEqual(headers["x-error-tag"], "Flaky")
      assert.include(String(headers["x-error-message"]), "doomed")
      assert.strictEqual(headers["x-attempts"], 3)
      assert.strictEqual(headers["x-original-queue"], queue)
    }).pipe(Effect.provide(logs.capture().layer)))

  it.live("attempts are the broker's record: a new worker carries on the count", () =>
    Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("survive")
      const policy = Outcome.retry({ maxAttempts: 3, delay: "1500 millis" })
      const first = alwaysFailing(queue, policy)
      yield* Effect.gen(function*() {
        const { worker } = yield* startWorker([first.consumer])
        yield* worker.awaitReady
        yield* admin.publishTasks(queue, ["carried"])
        yield* broker.eventually("first attempt", Effect.sync(() => first.attempts.length), (n) => n === 1)
      }).pipe(Effect.scoped)
      // The first worker is gone; the message waits in the retry queue.
      const second = alwaysFailing(queue, policy)
      const { worker } = yield* startWorker([second.consumer])
      yield* worker.awaitReady
      yield* broker.eventually("parked", admin.ready(`${queue}.dlq`), (n) => n === 1)
      assert.deepStrictEqual(first.attempts.map((a) => a.attempt), [1])
      assert.deepStrictEqual(second.attempts.map((a) => a.attempt), [2, 3])
    }).pipe(Effect.provide(logs.capture().layer)))

  it.live("policy requeue: requeued once, then parked; never a hot loop", () =>
    Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("requeue")
      const { attempts, consumer } = alwaysFailing(queue, "requeue")
      const { worker } = yield* startWorker([consumer])
      yield* worker.awaitReady
      yield* admin.publishTasks(queue, ["loop?"])
      yield* broker.eventually("parked", admin.ready(`${queue}.dlq`), (n) => n === 1)
      yield* Effect.sleep("500 millis")
      assert.strictEqual(attempts.length, 2)
      assert.deepStrictEqual(yield* broker.queueCounts(queue), { ready: 0, unacked: 0, consumers: 1 })
    }).pipe(Effect.provide(logs.capture().layer)))

  it.live("bad input goes to the dead-letter queue at once with the reason, and the worker keeps consuming", () => {
    const captured = logs.capture()
    return Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("bad")
      const handled: Array<string> = []
      const consumer = Consumer.make({
        queue,
        schema: Task,
        headers: Schema.Struct({ tenant: Schema.String }),
        maxBodyBytes: 100,
        handler: (task, message) => Effect.sync(() => handled.push(`${task.id}@${message.headers.tenant}`))
      })
      const { worker } = yield* startWorker([consumer])
      yield* worker.awaitReady
      const good = { tenant: "acme" }
      yield* admin.publish(queue, [
        { body: "{not json", options: { messageId: "invalid-json", headers: good } },
        { body: JSON.stringify({ id: 42 }), options: { messageId: "wrong-shape", headers: good } },
        { body: "", options: { messageId: "empty", headers: good } },
        { body: JSON.stringify({ id: "x" }), options: { messageId: "text-plain", contentType: "text/plain", headers: good } },
        { body: JSON.stringify({ id: "x".repeat(200) }), options: { messageId: "too-large", headers: good } },
        { body: JSON.stringify({ id: "x" }), options: { messageId: "bad-header", headers: { tenant: 42 } } },
        // {"id":"é"} in Latin-1: as UTF-8 the é would become a replacement character.
        { body: Buffer.from([...Buffer.from('{"id":"'), 0xe9, ...Buffer.from('"}')]), options: { messageId: "not-utf8", headers: good } },
        { body: JSON.stringify({ id: "x" }), options: { messageId: "gzip", contentEncoding: "gzip", headers: good } },
        { body: JSON.stringify({ id: "fine" }), options: { messageId: "fine", contentType: "application/json", headers: good } },
        // A byte order mark, and a content encoding that only names the charset: both fine.
        { body: Buffer.from("\uFEFF" + JSON.stringify({ id: "bom-é" })), options: { messageId: "bom", headers: good } },
        { body: JSON.stringify({ id: "labelled" }), options: { messageId: "labelled", contentEncoding: "UTF-8", headers: good } },
        { body: JSON.stringify({ id: "ascii" }), options: { messageId: "ascii", contentEncoding: "us-ascii", headers: good } }
      ])
      yield* broker.eventually("eight parked", admin.ready(`${queue}.dlq`), (n) => n === 8)
      yield* broker.eventually("the good ones handled", Effect.sync(() => handled.length), (n) => n === 4)
      assert.deepStrictEqual([...handled].sort(), ["ascii@acme", "bom-é@acme", "fine@acme", "labelled@acme"])
      const parked = yield* admin.drainQueue(`${queue}.dlq`)
      const why = Object.fromEntries(
        parked.map((m) => [m.properties.messageId, [m.properties.headers?.["x-error-tag"], m.properties.headers?.["x-attempts"]]])
      )
      assert.deepStrictEqual(why, {
        "invalid-json": ["InvalidBody", 1],
        "wrong-shape": ["InvalidBody", 1],
        "empty": ["InvalidBody", 1],
        "text-plain": ["UnsupportedContentType", 1],
        "too-large": ["BodyTooLarge", 1],
        "bad-header": ["InvalidHeaders", 1],
        "not-utf8": ["InvalidBody", 1],
        "gzip": ["UnsupportedContentType", 1]
      })
      const latin1 = parked.find((m) => m.properties.messageId === "not-utf8")
      assert.match(String(latin1?.properties.headers?.["x-error-message"]), /not valid UTF-8/)
      assert.deepStrictEqual(latin1?.content, Buffer.from([...Buffer.from('{"id":"'), 0xe9, ...Buffer.from('"}')]))
      const shape = parked.find((m) => m.properties.messageId === "wrong-shape")
      assert.match(String(shape?.properties.headers?.["x-error-message"]), /Expected string/)
      // The original body is kept as it came.
      assert.strictEqual(shape?.content.toString(), JSON.stringify({ id: 42 }))
      assert.deepStrictEqual(yield* broker.queueCounts(queue), { ready: 0, unacked: 0, consumers: 1 })
      assert.strictEqual(captured.matching(/dead-lettered to .*after 1 attempt/).length, 8)
    }).pipe(Effect.provide(captured.layer))
  })
})
