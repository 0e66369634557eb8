/**
 * Confirmed publishing against the real broker: confirms, nacks, unroutable
 * messages, encoding, waiting while disconnected or blocked (bounded), and a
 * broker restart in the middle of publishing.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Metric, Schema } from "effect"
import type * as PublishError from "../src/PublishError.ts"
import * as broker from "./support/broker.ts"
import * as health from "./support/health.ts"
import * as logs from "./support/logs.ts"
import * as Proxy from "./support/proxy.ts"
import { startWorker } from "./support/worker.ts"

const Result = Schema.Struct({ id: Schema.String, total: Schema.Int })

/** A publisher counter's value now (the publisher hands its tallies to the metrics once a turn). */
const publishCount = (id: string, error?: string) =>
  Effect.andThen(
    Effect.sleep("20 millis"),
    Effect.map(Metric.snapshot, (snapshots) => {
      const found = snapshots.find((s) => s.id === id && (error === undefined || s.attributes?.["error"] === error))
      return found?.type === "Counter" ? Number(found.state.count) : 0
    })
  )

const errorTag = <A, E extends { readonly _tag: string }>(exit: Exit.Exit<A, E>) =>
  Exit.isFailure(exit) ? Exit.findErrorOption(exit).pipe((o) => o._tag === "Some" ? o.value._tag : "defect") : "success"

describe("Publisher", () => {
  it.live("publish succeeds once confirmed; id, content type, timestamp, correlation id, headers and persistence are set", () =>
    Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("results", {})
      const { worker } = yield* startWorker([])
      yield* worker.awaitReady
      yield* worker.publisher.publish({
        routingKey: queue,
        schema: Result,
        body: { id: "r1", total: 3 },
        messageId: "r1",
        correlationId: "c1",
        headers: { tenant: "acme" }
      })
      const before = Math.floor(Date.now() / 1000)
      yield* worker.publisher.publish({ routingKey: queue, schema: Result, body: { id: "r2", total: 4 }, persistent: false })
      const [first, second] = yield* admin.drainQueue(queue)
      assert.deepStrictEqual(JSON.parse(first!.content.toString()), { id: "r1", total: 3 })
      assert.strictEqual(first!.properties.messageId, "r1")
      assert.strictEqual(first!.properties.contentType, "application/json")
      assert.strictEqual(first!.properties.deliveryMode, 2)
      assert.strictEqual(first!.properties.headers?.tenant, "acme")
      assert.strictEqual(first!.properties.correlationId, "c1")
      assert.match(String(second!.properties.messageId), /^[0-9a-f-]{36}$/)
      assert.strictEqual(second!.properties.deliveryMode, 1)
      assert.strictEqual(second!.properties.correlationId, undefined)
      assert.strictEqual(second!.properties.contentType, "application/json")
      const stamp = Number(second!.properties.timestamp)
      assert.isTrue(stamp >= before && stamp <= Math.floor(Date.now() / 1000) + 1, `timestamp ${stamp}`)
    }).pipe(Effect.provide(logs.capture().layer)))

  it.live("a burst of publishes in one tick (one socket write) arrives whole and in order, large bodies included", () =>
    Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("burst", {})
      const { worker } = yield* startWorker([])
      yield* worker.awaitReady
      const Padded = Schema.Struct({ id: Schema.String, total: Schema.Int, pad: Schema.String })
      // Bodies of many sizes, two of them past the frame size (sent as several body frames).
      const pad = (i: number) => "x".repeat(i === 300 || i === 700 ? 300_000 : (i * 37) % 2000)
      const count = 1000
      // Unbounded: every publish is handed to the socket before any confirm comes back.
      yield* Effect.forEach(
        Array.from({ length: count }, (_, i) => i),
        (i) => worker.publisher.publish({ routingKey: queue, schema: Padded, body: { id: `m${i}`, total: i, pad: pad(i) }, messageId: `m${i}` }),
        { concurrency: "unbounded", discard: true }
      )
      const messages = yield* admin.drainQueue(queue)
      assert.strictEqual(messages.length, count)
      messages.forEach((message, i) => {
        assert.strictEqual(message.properties.messageId, `m${i}`)
        assert.deepStrictEqual(JSON.parse(message.content.toString()), { id: `m${i}`, total: i, pad: pad(i) })
      })
    }).pipe(Effect.provide(logs.capture().layer)))

  it.live("a value of the wrong shape is not published: PublishEncodeError", () =>
    Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("encode", {})
      const { worker } = yield* startWorker([])
      yield* worker.awaitReady
      const exit = yield* Effect.exit(worker.publisher.publish({
        routingKey: queue,
        schema: Result,
        // what a bug (or an `as`) could smuggle past the types
        body: { id: "r1", total: 1.5 }
      }))
      assert.strictEqual(errorTag(exit), "PublishEncodeError")
      assert.strictEqual(yield* admin.ready(queue), 0)
    }).pipe(Effect.provide(logs.capture().layer)))

  it.live("a value JSON cannot carry fails with PublishEncodeError, not a defect, and nothing is sent", () =>
    Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("unserializable", {})
      const { worker } = yield* startWorker([])
      yield* worker.awaitReady
      const cycle: Record<string, unknown> = {}
      cycle["self"] = cycle
      const Loose = Schema.Struct({ id: Schema.String, data: Schema.Unknown })
      const bodies: ReadonlyArray<readonly [typeof Loose | typeof Schema.Unknown, unknown]> = [
        [Loose, { id: "cycle", data: cycle }],
        [Loose, { id: "bigint", data: 10n }],
        [Loose, { id: "toJSON", data: { toJSON: () => { throw new Error("no") } } }],
        [Schema.Unknown, undefined],
        [Schema.Unknown, () => 1]
      ]
      for (const [schema, body] of bodies) {
        const exit = yield* Effect.exit(Effect.suspend(() => worker.publisher.publish({ routingKey: queue, schema, body: body as never })))
        assert.strictEqual(errorTag(exit), "PublishEncodeError", `body ${String(body)}`)
        const error = Exit.findErrorOption(exit)
        assert.isTrue(error._tag === "Some" && error.value.message.includes("JSON"), `reason: ${String(exit)}`)
      }
      // The publisher goes on: the next publish is sent and confirmed.
      yield* worker.publisher.publish({ routingKey: queue, schema: Loose, body: { id: "fine", data: [1, "a"] } })
      const messages = yield* admin.drainQueue(queue)
      assert.deepStrictEqual(messages.map((m) => JSON.parse(m.content.toString())), [{ id: "fine", data: [1, "a"] }])
    }).pipe(Effect.provide(logs.capture().layer)))

  it.live("an unroutable message fails with PublishUnroutable; a nack from the broker with PublishNacked", () =>
    Effect.gen(function*() {
      const admin = yield* broker.admin
      // A full queue that refuses more: the broker nacks the publish.
      const full = yield* admin.queue("full", { maxLength: 1, arguments: { "x-overflow": "reject-publish" } })
      const { worker } = yield* startWorker([])
      yield* worker.awaitReady
      const unroutable = yield* Effect.exit(
        worker.publisher.publish({ routingKey: broker.uniqueName("nowhere"), schema: Result, body: { id: "a", total: 1 } })
      )
      assert.strictEqual(errorTag(unroutable), "PublishUnroutable")
      yield* worker.publisher.publish({ routingKey: full, schema: Result, body: { id: "b", total: 1 } })
      const nacked = yield* Effect.exit(
        worker.publisher.publish({ routingKey: full, schema: Result, body: { id: "c", total: 1 } })
      )
      assert.strictEqual(errorTag(nacked), "PublishNacked")
      // Not mandatory: the broker drops it without a word, and that is what was asked.
      yield* worker.publisher.publish({
        routingKey: broker.uniqueName("nowhere"),
        schema: Result,
        body: { id: "d", total: 1 },
        mandatory: false
      })
    }).pipe(Effect.provide(logs.capture().layer)))

  it.live("a return is matched to the publish that caused it, not to another publish with the same message id", () =>
    Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("returns", {})
      const { worker } = yield* startWorker([])
      yield* worker.awaitReady
      // The same message id (a task id, reused as the README advises), interleaved: routable, unroutable, routable.
      const nowhere = broker.uniqueName("nowhere")
      const publish = (routingKey: string) =>
        Effect.exit(worker.publisher.publish({ routingKey, schema: Result, body: { id: "same", total: 1 }, messageId: "same" }))
      const exits = yield* Effect.all(
        [publish(queue), publish(nowhere), publish(queue), publish(nowhere), publish(queue)],
        { concurrency: "unbounded" }
      )
      assert.deepStrictEqual(exits.map(errorTag), ["success", "PublishUnroutable", "success", "PublishUnroutable", "success"])
      assert.strictEqual(yield* admin.ready(queue), 3)
    }).pipe(Effect.provide(logs.capture().layer)))

  it.live("publishing to a missing exchange fails typed; the publisher's channel reopens, the connection stays", () => {
    const captured = logs.capture()
    return Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("after404", {})
      const { name, worker } = yield* startWorker([])
      yield* worker.awaitReady
      const exit = yield* Effect.exit(worker.publisher.publish({
        exchange: broker.uniqueName("no-exchange"),
        routingKey: "x",
        schema: Result,
        body: { id: "a", total: 1 }
      }))
      assert.strictEqual(errorTag(exit), "PublishUnconfirmed")
      assert.match(Exit.isFailure(exit) ? String(Exit.findErrorOption(exit).pipe((o) => o._tag === "Some" ? o.value.message : "")) : "", /NOT_FOUND/)
      yield* worker.publisher.publish({ routingKey: queue, schema: Result, body: { id: "b", total: 1 } })
      assert.strictEqual(yield* admin.ready(queue), 1)
      assert.strictEqual(captured.matching(/^connected to/).length, 1)
      assert.strictEqual((yield* broker.connectionsNamed(name)).length, 1)
      assert.isAtLeast(captured.matching(/publisher channel closed .*NOT_FOUND/).length, 1)
    }).pipe(Effect.provide(captured.layer))
  })

  it.live("a publish the broker refuses (404) fails for good; the publishes caught beside it in the channel's close can be sent again", () =>
    Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("beside404", {})
      const { worker } = yield* startWorker([])
      yield* worker.awaitReady
      const missing = broker.uniqueName("no-exchange")
      const publish = (i: number) =>
        Effect.exit(worker.publisher.publish({
          exchange: i === 100 ? missing : "",
          routingKey: i === 100 ? "x" : queue,
          schema: Result,
          body: { id: `m${i}`, total: i },
          messageId: `m${i}`
        }))
      const exits = yield* Effect.forEach(Array.from({ length: 300 }, (_, i) => i), publish, { concurrency: "unbounded" })
      const failure = (exit: Exit.Exit<void, PublishError.PublishError>) =>
        Exit.isFailure(exit) ? Exit.findErrorOption(exit).pipe((o) => o._tag === "Some" ? o.value : undefined) : undefined
      const refused = failure(exits[100]!)
      assert.strictEqual(refused?._tag, "PublishUnconfirmed")
      assert.isFalse(refused?._tag === "PublishUnconfirmed" && refused.isRetryable)
      // The others went through, or were caught in the close: not refused, so they may be sent again.
      const others = exits.filter((_, i) => i !== 100).map(failure)
      const caught = others.filter((error) => error !== undefined)
      assert.isAbove(caught.length, 0, "no publish was caught in the close: the test proves nothing")
      for (const error of caught) {
        assert.strictEqual(error._tag, "PublishUnconfirmed")
        assert.isTrue(error._tag === "PublishUnconfirmed" && error.isRetryable, error.message)
      }
      // Confirmed ones are in the queue; of those caught, some may be too (the broker took them, the close took their confirms).
      assert.isAtLeast(yield* admin.ready(queue), others.length - caught.length)
    }).pipe(Effect.provide(logs.capture().layer)))

  it.live("while the connection is down, publishes wait (bounded by timeout and count), then go through", () =>
    Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("waiting", {})
      const proxy = yield* Proxy.make()
      const { worker } = yield* startWorker([], {
        url: proxy.url,
        publisher: { timeout: "10 seconds", maxWaiting: 2 },
        reconnect: { base: "200 millis", max: "200 millis" }
      })
      yield* worker.awaitReady
      yield* proxy.stop()
      yield* broker.eventually("disconnected", worker.status, (s) => s.connection === "reconnecting")
      const publish = (id: string) => worker.publisher.publish({ routingKey: queue, schema: Result, body: { id, total: 1 }, messageId: id })
      const waiting = yield* Effect.forkChild(Effect.all([publish("w1"), publish("w2")], { concurrency: "unbounded" }))
      yield* broker.eventually("two waiting", worker.publisher.stats, (s) => s.waiting === 2)
      // A third would pile up past the bound: refused at once.
      assert.strictEqual(errorTag(yield* Effect.exit(publish("w3"))), "PublishBufferFull")
      yield* proxy.start()
      yield* Fiber.join(waiting)
      assert.deepStrictEqual((yield* admin.drainQueue(queue)).map((m) => m.properties.messageId).sort(), ["w1", "w2"])

      // Past the timeout: PublishTimeout, and nothing is sent later.
      const { worker: impatient } = yield* startWorker([], { url: proxy.url, publisher: { timeout: "300 millis" } })
      yield* impatient.awaitReady
      yield* proxy.stop()
      yield* broker.eventually("disconnected", impatient.status, (s) => s.connection === "reconnecting")
      const late = yield* Effect.exit(
        impatient.publisher.publish({ routingKey: queue, schema: Result, body: { id: "late", total: 1 } })
      )
      assert.strictEqual(errorTag(late), "PublishTimeout")
      yield* proxy.start()
      yield* impatient.awaitReady
      yield* Effect.sleep("300 millis")
      assert.strictEqual(yield* admin.ready(queue), 0)
      // Failures that never reached a channel are counted like the others.
      assert.strictEqual(yield* publishCount("rabbitmq_worker_publishes_confirmed_total"), 2)
      assert.strictEqual(yield* publishCount("rabbitmq_worker_publishes_failed_total", "PublishBufferFull"), 1)
      assert.strictEqual(yield* publishCount("rabbitmq_worker_publishes_failed_total", "PublishTimeout"), 1)
    }).pipe(health.isolatedMetrics, Effect.provide(logs.capture().layer)))

  it.live("while the broker blocks the connection (memory alarm), publishing waits instead of piling up", () =>
    Effect.gen(function*() {
      yield* Effect.addFinalizer(() => broker.rabbitmqctl("set_vm_memory_high_watermark", "0.4").pipe(Effect.ignore))
      const admin = yield* broker.admin
      const queue = yield* admin.queue("alarm", {})
      const { worker } = yield* startWorker([])
      yield* worker.awaitReady
      const publish = (id: string) => worker.publisher.publish({ routingKey: queue, schema: Result, body: { id, total: 1 }, messageId: id })
      yield* broker.rabbitmqctl("set_vm_memory_high_watermark", "0.0001")
      // The first publish under the alarm is what makes the broker block the connection.
      const first = yield* Effect.forkChild(publish("m0"))
      yield* broker.eventually("blocked", worker.status, (s) => s.blocked !== undefined, 20_000)
      const rest = yield* Effect.forkChild(
        Effect.forEach(["m1", "m2", "m3", "m4", "m5"], publish, { concurrency: "unbounded" })
      )
      yield* broker.eventually("five waiting", worker.publisher.stats, (s) => s.waiting === 5)
      yield* Effect.sleep("1 second")
      const stats = yield* worker.publisher.stats
      // Only the first went out; the others wait, unsent.
      assert.deepStrictEqual(stats, { waiting: 5, unconfirmed: 1 })
      assert.isUndefined(first.pollUnsafe())
      yield* broker.rabbitmqctl("set_vm_memory_high_watermark", "0.4")
      yield* Fiber.join(first)
      yield* Fiber.join(rest)
      assert.strictEqual((yield* worker.status).blocked, undefined)
      assert.deepStrictEqual(
        (yield* admin.drainQueue(queue)).map((m) => m.properties.messageId).sort(),
        ["m0", "m1", "m2", "m3", "m4", "m5"]
      )
    }).pipe(Effect.provide(logs.capture().layer)))

  it.live("a broker restart while publishing: every publish was confirmed and is in the queue, or failed typed", () =>
    Effect.gen(function*() {
      yield* Effect.addFinalizer(() => broker.rabbitmqctl("start_app").pipe(Effect.ignore))
      const admin = yield* broker.admin
      const queue = yield* admin.queue("restart-publish", { durable: true })
      const { worker } = yield* startWorker([], { publisher: { timeout: "1500 millis" } })
      yield* worker.awaitReady
      const ids = Array.from({ length: 400 }, (_, i) => `p-${i}`)
      const confirmed: Array<string> = []
      const failed: Array<string> = []
      const publishing = yield* Effect.forkChild(Effect.forEach(ids, (id) =>
        worker.publisher.publish({ routingKey: queue, schema: Result, body: { id, total: 1 }, messageId: id }).pipe(
          Effect.matchEffect({
            onSuccess: () => Effect.sync(() => confirmed.push(id)),
            onFailure: (error) => Effect.sync(() => failed.push(`${id}:${error._tag}`))
          }),
          Effect.andThen(Effect.sleep("20 millis"))
        ), { concurrency: 2, discard: true }))
      yield* broker.eventually("some confirmed", Effect.sync(() => confirmed.length), (n) => n >= 50)
      yield* broker.rabbitmqctl("stop_app")
      yield* Effect.sleep("1 second")
      yield* broker.rabbitmqctl("start_app")
      yield* Fiber.join(publishing)
      assert.strictEqual(confirmed.length + failed.length, ids.length)
      // The broker was away longer than the publish timeout: some did fail.
      assert.isAtLeast(failed.length, 1)
      for (const failure of failed) assert.match(failure, /:(PublishTimeout|PublishUnconfirmed)$/)
      // The admin's connection died with the broker: a new one reads the queue.
      const after = yield* broker.admin
      const queued = new Set((yield* after.drainQueue(queue)).map((m) => String(m.properties.messageId)))
      // Nothing confirmed was lost.
      assert.deepStrictEqual(confirmed.filter((id) => !queued.has(id)), [])
    }).pipe(Effect.provide(logs.capture().layer)))
})
