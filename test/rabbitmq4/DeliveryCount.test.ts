/**
 * RabbitMQ 4.3's delivery count on quorum queues (runs against 4.3 only: on
 * older brokers `x-delivery-count` also counts the worker's own requeues, so
 * attempts do not use it; see Outcome.countsFailedDeliveries).
 *
 * - A message that crashes the worker on every attempt runs its handler
 *   `maxAttempts` times, then is parked, instead of crash-looping forever or
 *   being dropped by the broker's delivery limit.
 * - A graceful shutdown gives messages back without using up an attempt; a
 *   killed worker uses one.
 * - The broker's own delivery limit dead-letters into the consumer's
 *   dead-letter queue, with its reason: nothing is dropped.
 */
import { assert, describe, it } from "@effect/vitest"
import * as amqp from "amqplib"
import { Effect, Schema } from "effect"
import * as Consumer from "../../src/Consumer.ts"
import * as DeadLetters from "../../src/DeadLetters.ts"
import * as broker from "../support/broker.ts"
import { spawnWorker, type WorkerProcess } from "../support/process.ts"

const script = "test/fixtures/crashing-worker.ts"

/** The fixture logs as a library user's worker does (not JSON): its output lines. */
const consuming = (worker: WorkerProcess) =>
  broker.eventually("consuming", Effect.sync(() => worker.output.some((line) => line.includes("consuming from"))), Boolean, 30_000)

/** Runs the crashing worker once on `queue`: until it exits (crashed) or `done` holds; its handling lines. */
const runOnce = (env: Record<string, string>, done: Effect.Effect<boolean>, publish?: Effect.Effect<void>) =>
  Effect.scoped(Effect.gen(function*() {
    const worker = yield* spawnWorker({ AMQP_URL: broker.URL, ...env }, { script })
    yield* consuming(worker)
    if (publish !== undefined) yield* publish
    const deadline = Date.now() + 20_000
    let exited = false
    while (Date.now() < deadline) {
      if (yield* done) break
      const code = yield* worker.exit(200).pipe(Effect.catchDefect(() => Effect.succeed(undefined)))
      if (code !== undefined) {
        exited = true
        break
      }
    }
    if (!exited) {
      worker.signal("SIGTERM")
      assert.strictEqual(yield* worker.exit(30_000), 0)
    }
    return { handlings: worker.output.filter((line) => line.startsWith("handling ")), exited }
  }))

describe("RabbitMQ 4.3 delivery count", () => {
  it.live("a message that crashes the worker every time runs maxAttempts times, then is parked with DeliveryLimit", () =>
    Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("crashloop")
      const parked = admin.readyIfExists(`${queue}.dlq`).pipe(Effect.map((n) => n === 1))
      const handlings: Array<string> = []
      let runs = 0
      while (!(yield* parked) && runs < 6) {
        const publish = runs === 0
          ? admin.publish(queue, [{ body: JSON.stringify({ id: "poison", crash: true }), options: { messageId: "poison" } }])
          : undefined
        const run = yield* runOnce({ AMQP_QUEUE: queue, MAX_ATTEMPTS: "3" }, parked, publish)
        handlings.push(...run.handlings)
        runs++
      }
      // Three handlings, each one a crash, then the fourth delivery parked without running.
      assert.deepStrictEqual(handlings, ["handling poison attempt 1", "handling poison attempt 2", "handling poison attempt 3"])
      assert.strictEqual(runs, 4)
      const [copy] = yield* admin.drainQueue(`${queue}.dlq`)
      assert.strictEqual(copy!.properties.headers?.["x-error-tag"], "DeliveryLimit")
      assert.strictEqual(copy!.properties.headers?.["x-attempts"], 3)
      assert.isUndefined(copy!.properties.headers?.["x-delivery-count"])
      assert.strictEqual(yield* admin.ready(queue), 0)
    }), 180_000)

  it.live("a graceful shutdown gives messages back without using an attempt; a killed worker uses one", () =>
    Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("shutdowncount")
      const ids = ["a", "b", "c"]
      const started = (n: number) => (h: ReadonlyArray<string>) => h.length >= n
      // 1. Handlers outlast the shutdown grace: interrupted and nacked back.
      yield* Effect.scoped(Effect.gen(function*() {
        const worker = yield* spawnWorker({ AMQP_URL: broker.URL, AMQP_QUEUE: queue, HANDLER_MS: "60000", SHUTDOWN_GRACE_MS: "200" }, { script })
        yield* consuming(worker)
        yield* admin.publishTasks(queue, ids)
        yield* broker.eventually("all started", Effect.sync(() => worker.output.filter((l) => l.startsWith("handling "))), started(3))
        worker.signal("SIGTERM")
        assert.strictEqual(yield* worker.exit(30_000), 0)
      }))
      // 2. Started again, then killed while handling.
      const second = yield* Effect.scoped(Effect.gen(function*() {
        const worker = yield* spawnWorker({ AMQP_URL: broker.URL, AMQP_QUEUE: queue, HANDLER_MS: "60000" }, { script })
        yield* broker.eventually("all started", Effect.sync(() => worker.output.filter((l) => l.startsWith("handling "))), started(3))
        worker.signal("SIGKILL")
        yield* worker.exit(30_000)
        return worker.output.filter((l) => l.startsWith("handling ")).sort()
      }))
      assert.deepStrictEqual(second, ids.map((id) => `handling ${id} attempt 1`))
      // 3. The kill counted: each is on its second attempt.
      const third = yield* Effect.scoped(Effect.gen(function*() {
        const worker = yield* spawnWorker({ AMQP_URL: broker.URL, AMQP_QUEUE: queue }, { script })
        yield* broker.eventually("all handled", Effect.sync(() => worker.output.filter((l) => l.startsWith("handled "))), started(3))
        worker.signal("SIGTERM")
        assert.strictEqual(yield* worker.exit(30_000), 0)
        return worker.output.filter((l) => l.startsWith("handling ")).sort()
      }))
      assert.deepStrictEqual(third, ids.map((id) => `handling ${id} attempt 2`))
    }), 120_000)

  it.live("the broker's own delivery limit dead-letters into the consumer's dead-letter queue, with its reason", () =>
    Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("brokerlimit")
      // A consumer without retries on a quorum queue whose limit is one delivery.
      const consumer = Consumer.make({
        queue,
        schema: Schema.Struct({ id: Schema.String }),
        onFailure: "dead-letter",
        queueOptions: { type: "quorum", arguments: { "x-delivery-limit": 1 } },
        handler: () => Effect.void
      })
      yield* admin.declare(consumer.topology)
      yield* admin.publishTasks(queue, ["limited"])
      // Two deliveries lost with their connection (as when a worker dies).
      for (let i = 0; i < 2; i++) {
        yield* Effect.promise(async () => {
          const connection = await amqp.connect(broker.URL)
          connection.on("error", () => {})
          const channel = await connection.createChannel()
          let message: amqp.GetMessage | false = false
          while (message === false) {
            message = await channel.get(queue)
            if (message === false) await new Promise((resolve) => setTimeout(resolve, 50))
          }
          await connection.close()
        })
      }
      yield* broker.eventually("dead-lettered by the broker", admin.ready(`${queue}.dlq`), (n) => n === 1)
      assert.strictEqual(yield* admin.ready(queue), 0)
      const parked = yield* DeadLetters.list({ url: broker.url }, queue)
      assert.strictEqual(parked.length, 1)
      assert.strictEqual(parked[0]!.messageId, "limited")
      assert.strictEqual(parked[0]!.reason, "broker:delivery_limit")
    }), 60_000)
})
