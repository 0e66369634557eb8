/**
 * What an operator sees and relies on: health and readiness over real HTTP
 * while faults are injected, Prometheus metrics, several broker addresses,
 * and TLS.
 */
import { assert, describe, it } from "@effect/vitest"
import { readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { Data, Effect, Redacted, Schema } from "effect"
import * as Connection from "../src/Connection.ts"
import * as Consumer from "../src/Consumer.ts"
import * as Outcome from "../src/Outcome.ts"
import * as broker from "./support/broker.ts"
import * as health from "./support/health.ts"
import * as logs from "./support/logs.ts"
import * as Proxy from "./support/proxy.ts"
import { startWorker } from "./support/worker.ts"

const Task = Schema.Struct({ id: Schema.String })
class Boom extends Data.TaggedError("Boom")<{}> {}

const recorder = (queue: string) => {
  const handled: Array<string> = []
  const consumer = Consumer.make({
    queue,
    schema: Task,
    handler: (task) => Effect.sync(() => handled.push(task.id))
  })
  return { consumer, handled }
}

const fixture = (name: string) => readFileSync(fileURLToPath(new URL(`fixtures/tls/${name}`, import.meta.url)))

describe("Health endpoints", () => {
  it.live("/healthz stays 200 while /readyz flips to 503 (saying what is missing) when the broker goes away, and back", () =>
    Effect.gen(function*() {
      const endpoint = yield* health.start
      const admin = yield* broker.admin
      const queue = yield* admin.queue("ready")
      const proxy = yield* Proxy.make()
      const { consumer } = recorder(queue)
      const { worker } = yield* startWorker([consumer], { url: proxy.url, reconnect: { base: "300 millis", max: "300 millis" } })
        .pipe(Effect.provide(endpoint.context))
      yield* worker.awaitReady
      const ready = yield* endpoint.json("/readyz")
      assert.strictEqual(ready.status, 200)
      assert.deepStrictEqual(ready.body, { status: "ready", connection: "connected", consumers: { [queue]: true } })

      yield* proxy.stop()
      const notReady = yield* broker.eventually(
        "readyz 503 with the next retry",
        endpoint.json("/readyz"),
        (r) => r.status === 503 && typeof r.body.nextRetryMs === "number"
      )
      assert.strictEqual(notReady.body.connection, "reconnecting")
      assert.isAtLeast(notReady.body.attempt as number, 1)
      assert.isAtMost(notReady.body.nextRetryMs as number, 300)
      assert.deepStrictEqual(notReady.body.consumers, { [queue]: false })
      assert.match(String(notReady.body.lastError), /ECONNREFUSED|lost/)
      const live = yield* endpoint.json("/healthz")
      assert.strictEqual(live.status, 200)

      yield* proxy.start()
      yield* broker.eventually("ready again", endpoint.get("/readyz"), (r) => r.status === 200)
    }).pipe(Effect.provide(logs.capture().layer)))

  it.live("/metrics: Prometheus text with messages by outcome and queue, durations, connection state, reconnects, publishes", () =>
    Effect.gen(function*() {
      const endpoint = yield* health.start
      const admin = yield* broker.admin
      const queue = yield* admin.queue("metrics")
      const consumer = Consumer.make({
        queue,
        schema: Task,
        onFailure: Outcome.retry({ maxAttempts: 2, delay: "100 millis" }),
        handler: (task) => task.id.startsWith("bad") ? Effect.fail(new Boom()) : Effect.void
      })
      const { name, worker } = yield* startWorker([consumer]).pipe(Effect.provide(endpoint.context))
      yield* worker.awaitReady
      yield* admin.publishTasks(queue, ["ok-1", "ok-2", "ok-3", "bad-1"])
      yield* admin.publish(queue, [{ body: "not json", options: { messageId: "garbage" } }])
      // bad-1: attempt 1 retried, attempt 2 dead-lettered; garbage: dead-lettered.
      yield* broker.eventually("two parked", admin.ready(`${queue}.dlq`), (n) => n === 2)
      yield* broker.closeConnectionsNamed(name)
      yield* broker.eventually("reconnected", worker.status, (s) => s.connection === "connected" && s.reconnects === 1)
      yield* worker.awaitReady
      const { body, status } = yield* endpoint.get("/metrics")
      assert.strictEqual(status, 200)
      const value = (series: string) => {
        const line = body.split("\n").find((l) => l.startsWith(`${series} `))
        return line === undefined ? undefined : Number(line.split(" ")[1])
      }
      const q = `queue="${queue}"`
      assert.strictEqual(value(`rabbitmq_worker_messages_received_total{${q}}`), 6)
      assert.strictEqual(value(`rabbitmq_worker_messages_acked_total{${q}}`), 3)
      assert.strictEqual(value(`rabbitmq_worker_messages_retried_total{${q}}`), 1)
      assert.strictEqual(value(`rabbitmq_worker_messages_dead_lettered_total{${q}}`), 2)
      assert.strictEqual(value(`rabbitmq_worker_messages_nacked_total{${q}}`), 0)
      assert.strictEqual(value(`rabbitmq_worker_messages_rejected_total{${q}}`), 0)
      assert.strictEqual(value(`rabbitmq_worker_messages_in_flight{${q}}`), 0)
      assert.strictEqual(value(`rabbitmq_worker_handler_duration_seconds_count{${q}}`), 6)
      assert.strictEqual(value(`rabbitmq_worker_connection_state{state="connected"}`), 1)
      assert.strictEqual(value(`rabbitmq_worker_connection_state{state="reconnecting"}`), 0)
      assert.strictEqual(value("rabbitmq_worker_reconnects_total"), 1)
      // The two dead-letter copies and the retry's copy were confirmed publishes.
      assert.strictEqual(value("rabbitmq_worker_publishes_confirmed_total"), 3)
      assert.include(body, "# TYPE rabbitmq_worker_messages_acked_total counter")
      assert.include(body, "# TYPE rabbitmq_worker_handler_duration_seconds histogram")
    }).pipe(health.isolatedMetrics, Effect.provide(logs.capture().layer)))
})

describe("Broker addresses", () => {
  it.live("with one dead address and one live one, the worker connects to the live one", () =>
    Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("failover")
      const dead = yield* Proxy.make(undefined, { listening: false })
      const { consumer, handled } = recorder(queue)
      const { worker } = yield* startWorker([consumer], { url: `${dead.url},${broker.URL}` })
      yield* worker.awaitReady
      yield* admin.publishTasks(queue, ["a", "b"])
      yield* broker.eventually("handled", Effect.sync(() => handled.length), (n) => n === 2)
    }).pipe(Effect.provide(logs.capture().layer)))

  it.live("when the node it is connected to goes away, the worker fails over to another address; replicas start at a random one", () => {
    const captured = logs.capture()
    return Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("failover2")
      const nodeA = yield* Proxy.make()
      const nodeB = yield* Proxy.make()
      const { consumer, handled } = recorder(queue)
      const { worker } = yield* startWorker([consumer], { url: `${nodeA.url},${nodeB.url}` })
      yield* worker.awaitReady
      // It starts at a random one of the two.
      const [first, second] = nodeA.accepted() === 1 ? [nodeA, nodeB] : [nodeB, nodeA]
      assert.deepStrictEqual([first.accepted(), second.accepted()], [1, 0])
      yield* first.stop()
      yield* broker.eventually("connected through the other", worker.status, (s) => s.connection === "connected" && s.reconnects > 0)
      yield* worker.awaitReady
      assert.strictEqual(second.accepted(), 1)
      yield* admin.publishTasks(queue, ["after"])
      yield* broker.eventually("handled", Effect.sync(() => handled.length), (n) => n === 1)
      assert.isAtLeast(captured.matching(new RegExp(`connected to amqp://127.0.0.1:${second.port}`)).length, 1)
      // The lost node comes back; the next loss goes to it, not round to the one just lost.
      yield* first.start()
      yield* second.stop()
      yield* broker.eventually("back on the first", worker.status, (s) => s.connection === "connected" && s.reconnects > 1)
      assert.strictEqual(first.accepted(), 2)
    }).pipe(Effect.provide(captured.layer))
  })

  it.live("workers given the same addresses spread over them: each starts at a random one", () =>
    Effect.gen(function*() {
      const nodeA = yield* Proxy.make()
      const nodeB = yield* Proxy.make()
      // Twelve replicas all on one node by chance: about one run in 2,000.
      for (let i = 0; i < 12; i++) {
        const { worker } = yield* startWorker([], { url: `${nodeA.url},${nodeB.url}` })
        yield* worker.awaitReady
      }
      assert.strictEqual(nodeA.accepted() + nodeB.accepted(), 12)
      assert.isAtLeast(nodeA.accepted(), 1)
      assert.isAtLeast(nodeB.accepted(), 1)
    }))

  it("describes every address without credentials", () => {
    assert.strictEqual(
      Connection.describeUrl(Redacted.make("amqp://u:secret@a:5672, amqps://u:secret@b:5671/vh")),
      "amqp://a:5672, amqps://b:5671/vh"
    )
  })
})

describe("TLS", () => {
  const serverTls = {
    key: fixture("server.key"),
    cert: fixture("server.pem"),
    ca: fixture("ca.pem"),
    requestCert: true,
    rejectUnauthorized: true
  }

  it.live("amqps:// with the CA, client certificate and key: connects and consumes", () =>
    Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("tls")
      const proxy = yield* Proxy.make(undefined, { tls: serverTls })
      const { consumer, handled } = recorder(queue)
      const { worker } = yield* startWorker([consumer], {
        url: proxy.url,
        tls: { ca: fixture("ca.pem"), cert: fixture("client.pem"), key: fixture("client.key") }
      })
      yield* worker.awaitReady
      yield* admin.publishTasks(queue, ["secure"])
      yield* broker.eventually("handled", Effect.sync(() => handled.length), (n) => n === 1)
    }).pipe(Effect.provide(logs.capture().layer)))

  it.live("amqps:// without the CA does not trust the broker: no connection, the reason in the status", () =>
    Effect.gen(function*() {
      const proxy = yield* Proxy.make(undefined, { tls: serverTls })
      const { worker } = yield* startWorker([], { url: proxy.url })
      const status = yield* broker.eventually("refused", worker.status, (s) => s.attempt >= 1)
      assert.strictEqual(status.connection, "reconnecting")
      assert.match(status.lastError ?? "", /certificate/i)
    }).pipe(Effect.provide(logs.capture().layer)))
})
