/**
 * The worker process seen from outside: readiness during shutdown (503 at
 * once, the server closing last), structured JSON logs with stable fields,
 * and spans exported over OTLP that follow a message from publisher to
 * consumer through the `traceparent` header.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as broker from "./support/broker.ts"
import { receiver } from "./support/otlp.ts"
import { freePort } from "./support/ports.ts"
import { messageText, spawnWorker } from "./support/process.ts"

const ids = (n: number) => Array.from({ length: n }, (_, i) => `task-${i}`)

const get = (port: number, path: string) =>
  Effect.promise(() =>
    fetch(`http://127.0.0.1:${port}${path}`).then(
      async (response) => ({ status: response.status, body: await response.text() }),
      () => ({ status: 0, body: "connection refused" })
    )
  )

describe("Observability (worker process)", () => {
  it.live("/readyz turns 503 as soon as shutdown begins, while in-flight messages drain; the server closes last", () =>
    Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("readyz")
      const port = yield* freePort
      // Handlers long enough that the drain outlasts the checks below, even when
      // seeing the tasks in flight (rabbitmqctl) takes a second or two on a busy machine.
      const worker = yield* spawnWorker({ AMQP_QUEUE: queue, WORK_MS: "5000", HTTP_PORT: String(port) })
      yield* worker.waitFor("consuming", (logs) => logs.some((l) => /^consuming from/.test(messageText(l))))
      assert.strictEqual((yield* get(port, "/readyz")).status, 200)
      yield* admin.publishTasks(queue, ids(3))
      yield* broker.eventually("in flight", broker.queueCounts(queue), (c) => c.unacked === 3)
      worker.signal("SIGTERM")
      const during = yield* broker.eventually("503 while draining", get(port, "/readyz"), (r) => r.status !== 200, 2000, 20)
      assert.strictEqual(during.status, 503)
      assert.strictEqual(JSON.parse(during.body).connection, "stopping")
      // Still draining: the health server still answers.
      assert.strictEqual((yield* get(port, "/healthz")).status, 200)
      assert.strictEqual(yield* worker.exit(), 0)
      assert.strictEqual((yield* get(port, "/readyz")).status, 0)
      // The three in-flight tasks finished and were acked before the exit.
      assert.deepStrictEqual(yield* broker.queueCounts(queue), { ready: 0, unacked: 0, consumers: 0 })
      const messages = worker.logs.map(messageText)
      assert.strictEqual(messages.filter((m) => m.startsWith("handled task")).length, 3)
    }))

  it.live("JSON logs carry stable fields: queue, message id, attempt, outcome, duration; the URL is redacted", () =>
    Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("fields")
      const worker = yield* spawnWorker({
        AMQP_QUEUE: queue,
        LOG_LEVEL: "Debug",
        HTTP_PORT: String(yield* freePort)
      })
      yield* worker.waitFor("consuming", (logs) => logs.some((l) => /^consuming from/.test(messageText(l))))
      yield* admin.publishTasks(queue, ["t-1"])
      yield* worker.waitFor("acked", (logs) => logs.some((l) => messageText(l) === "message acked"))
      worker.signal("SIGTERM")
      assert.strictEqual(yield* worker.exit(), 0)
      const acked = worker.logs.find((l) => messageText(l) === "message acked")!
      assert.strictEqual(acked.level, "DEBUG")
      assert.strictEqual(acked.annotations?.queue, queue)
      assert.strictEqual(acked.annotations?.messageId, "t-1")
      assert.strictEqual(acked.annotations?.attempt, 1)
      assert.strictEqual(acked.annotations?.outcome, "Ack")
      assert.isNumber(acked.annotations?.durationMs)
      const handled = worker.logs.find((l) => messageText(l) === "handled task t-1")!
      assert.strictEqual(handled.annotations?.messageId, "t-1")
      assert.isFalse(worker.output.some((line) => line.includes("guest:guest")))
    }))

  it.live("with OTEL_EXPORTER_OTLP_ENDPOINT, consume/handle/publish spans are exported and continue the publisher's trace", () =>
    Effect.gen(function*() {
      const otlp = yield* receiver
      const admin = yield* broker.admin
      const queue = yield* admin.queue("traced")
      const worker = yield* spawnWorker({
        AMQP_QUEUE: queue,
        HTTP_PORT: String(yield* freePort),
        OTEL_EXPORTER_OTLP_ENDPOINT: otlp.url,
        OTEL_SERVICE_NAME: "traced-worker",
        OTEL_BSP_SCHEDULE_DELAY: "200"
      })
      yield* worker.waitFor("consuming", (logs) => logs.some((l) => /^consuming from/.test(messageText(l))))
      // The publisher's side of the trace, as any W3C-propagating client writes it.
      const traceId = "4bf92f3577b34da6a3ce929d0e0e4736"
      const publisherSpanId = "00f067aa0ba902b7"
      yield* admin.publish(queue, [{
        body: JSON.stringify({ id: "traced-1" }),
        options: { messageId: "traced-1", headers: { traceparent: `00-${traceId}-${publisherSpanId}-01` } }
      }])
      yield* worker.waitFor("handled", (logs) => logs.some((l) => messageText(l) === "handled task traced-1"))
      worker.signal("SIGTERM")
      assert.strictEqual(yield* worker.exit(), 0)
      const spans = yield* broker.eventually("spans exported", Effect.sync(() => otlp.spans), (s) => s.length >= 3, 5000)
      const trace = spans.filter((s) => s.traceId === traceId)
      const process = trace.find((s) => s.name === `${queue} process`)
      const handle = trace.find((s) => s.name === "handle")
      const publish = trace.find((s) => s.name === `${queue}.done publish`)
      assert.isDefined(process, JSON.stringify(spans.map((s) => s.name)))
      assert.isDefined(handle)
      assert.isDefined(publish)
      assert.strictEqual(process!.parentSpanId, publisherSpanId)
      assert.strictEqual(process!.attributes["messaging.destination.name"], queue)
      assert.strictEqual(process!.attributes["messaging.message.id"], "traced-1")
      assert.strictEqual(process!.service, "traced-worker")
      assert.strictEqual(handle!.parentSpanId, process!.spanId)
      assert.strictEqual(publish!.parentSpanId, handle!.spanId)
      // The result carries the trace on: its traceparent names the publish span.
      const [result] = yield* admin.drainQueue(`${queue}.done`)
      assert.strictEqual(result?.properties.headers?.traceparent, `00-${traceId}-${publish!.spanId}-01`)
    }))
})
