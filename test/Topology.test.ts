/**
 * Topology: declared from one description in every session, and a conflict
 * with the broker stops the worker with a clear error instead of a loop.
 */
import { assert, describe, it } from "@effect/vitest"
import { Cause, Effect, Exit, Redacted, Schema } from "effect"
import * as Consumer from "../src/Consumer.ts"
import * as Topology from "../src/Topology.ts"
import * as Worker from "../src/Worker.ts"
import * as broker from "./support/broker.ts"
import * as logs from "./support/logs.ts"
import { messageText, spawnWorker } from "./support/process.ts"
import { startWorker } from "./support/worker.ts"

const Event = Schema.Struct({ id: Schema.String })

/** Worker.make's own exit, for a worker that must not start. */
const startWorkerExit = (consumers: ReadonlyArray<Consumer.Consumer>, topology: Topology.Topology) =>
  Effect.scoped(Worker.make({ connection: { url: Redacted.make(broker.URL) }, topology }, consumers))

const queueTypes = (names: ReadonlyArray<string>) =>
  Effect.map(
    broker.rabbitmqctl("list_queues", "name", "type", "--quiet", "--no-table-headers"),
    (out) =>
      Object.fromEntries(
        out.split("\n").map((line) => line.split("\t")).filter(([name]) => names.includes(name!))
      )
  )

describe("Topology", () => {
  it.live("declares exchanges, classic and quorum queues, bindings and dead-letter settings; again after a reconnect", () =>
    Effect.gen(function*() {
      const admin = yield* broker.admin
      const exchange = yield* admin.exchange("events")
      const quorum = yield* admin.queue("quorum")
      const classic = yield* admin.queue("classic")
      const parked = yield* admin.queue("parked")
      const topology = Topology.make({
        exchanges: [{ name: exchange, type: "topic" }],
        queues: [
          { name: quorum, type: "quorum" },
          { name: classic, deadLetter: { exchange: "", routingKey: parked }, messageTtlMs: 200 },
          { name: parked }
        ],
        bindings: [
          { exchange, queue: quorum, routingKey: "order.*" },
          { exchange, queue: classic, routingKey: "#" }
        ]
      })
      const { name, worker } = yield* startWorker([], { topology })
      yield* worker.awaitReady
      assert.deepStrictEqual(yield* queueTypes([quorum, classic, parked]), {
        [quorum]: "quorum",
        [classic]: "classic",
        [parked]: "classic"
      })
      const publish = (routingKey: string, id: string) =>
        worker.publisher.publish({ exchange, routingKey, schema: Event, body: { id }, messageId: id })
      yield* publish("order.paid", "e1")
      assert.strictEqual(yield* admin.ready(quorum), 1)
      // The classic queue's messages expire after 200 ms into the parked queue.
      yield* broker.eventually("expired into the parked queue", admin.ready(parked), (n) => n === 1)

      // Remove some of it, drop the connection: the next session declares it all again.
      yield* Effect.promise(() => admin.channel.deleteQueue(quorum))
      yield* Effect.promise(() => admin.channel.deleteExchange(exchange))
      yield* broker.closeConnectionsNamed(name)
      yield* broker.eventually("reconnected", worker.status, (s) => s.connection === "connected" && s.reconnects > 0, 20_000)
      yield* worker.awaitReady
      yield* publish("order.shipped", "e2")
      const [again] = yield* admin.drainQueue(quorum)
      assert.strictEqual(again?.properties.messageId, "e2")
    }).pipe(Effect.provide(logs.capture().layer)))

  it.live("a declaration that conflicts with the broker stops the worker with an error naming the queue and argument", () => {
    const captured = logs.capture()
    return Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("conflict", {})
      const { worker } = yield* startWorker([], {
        topology: Topology.make({ queues: [{ name: queue, type: "quorum" }] })
      })
      const exit = yield* Effect.exit(worker.join)
      assert.isTrue(Exit.isFailure(exit))
      const error = Exit.isFailure(exit) ? Exit.findErrorOption(exit) : undefined
      assert.strictEqual(error?._tag, "Some")
      if (error?._tag === "Some") {
        assert.strictEqual(error.value._tag, "TopologyConflict")
        assert.strictEqual(error.value.name, queue)
        assert.strictEqual(error.value.argument, "x-queue-type")
        assert.include(error.value.message, queue)
      }
      // Stopped at the first attempt: no reconnect loop.
      assert.deepStrictEqual(captured.matching(/reconnecting in/).map((l) => l.message), [])
    }).pipe(Effect.provide(captured.layer))
  })

  it.live("the worker process exits 1 naming the queue and the argument when its queue conflicts", () =>
    Effect.gen(function*() {
      const admin = yield* broker.admin
      // An existing queue without the dead-letter target the retry policy needs.
      const queue = yield* admin.queue("legacy", {})
      const worker = yield* spawnWorker({ AMQP_QUEUE: queue })
      const code = yield* worker.exit()
      assert.strictEqual(code, 1)
      const error = worker.logs.find((line) => line.level === "ERROR")
      assert.isDefined(error)
      const text = `${messageText(error!)} ${String(error!.cause ?? "")}`
      assert.include(text, queue)
      assert.include(text, "x-dead-letter-exchange")
      assert.isFalse(worker.logs.some((line) => /reconnecting in/.test(messageText(line))))
    }))
})

describe("The example worker's queue type", () => {
  it.live("AMQP_QUEUE_TYPE=quorum: its queue, retry, dead-letter and result queues are quorum queues", () =>
    Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("qtype")
      const worker = yield* spawnWorker({ AMQP_QUEUE: queue, AMQP_QUEUE_TYPE: "quorum", RETRY_DELAY_MS: "1000" })
      yield* worker.waitFor("consuming", (logs) => logs.some((l) => /^consuming from/.test(messageText(l))))
      const names = [queue, `${queue}.retry`, `${queue}.retry.1000ms`, `${queue}.dlq`, `${queue}.done`]
      assert.deepStrictEqual(yield* queueTypes(names), Object.fromEntries(names.map((name) => [name, "quorum"])))
      yield* admin.publishTasks(queue, ["q1"])
      yield* broker.eventually("result", admin.ready(`${queue}.done`), (n) => n === 1)
      worker.signal("SIGTERM")
      assert.strictEqual(yield* worker.exit(), 0)
      const bad = yield* spawnWorker({ AMQP_QUEUE: queue, AMQP_QUEUE_TYPE: "stream" })
      assert.strictEqual(yield* bad.exit(), 1)
      assert.isTrue(bad.output.some((line) => line.includes("AMQP_QUEUE_TYPE")))
    }))
})

describe("Topology.combine", () => {
  it("a field one declaration leaves out never overrides one that another sets", () => {
    const { mismatches, topology } = Topology.combine([
      Topology.make({ queues: [{ name: "q", type: "quorum", arguments: { "x-max-length": 10 } }] }),
      Topology.make({ queues: [{ name: "q", type: undefined, durable: undefined, deadLetter: { exchange: "", routingKey: "q.retry" } }] })
    ])
    assert.deepStrictEqual(mismatches, [])
    assert.deepStrictEqual(topology.queues, [{
      name: "q",
      type: "quorum",
      durable: undefined,
      deadLetter: { exchange: "", routingKey: "q.retry" },
      arguments: { "x-max-length": 10 }
    }])
  })

  it("two declarations that disagree are a mismatch naming both values; identical bindings are declared once", () => {
    const binding = { exchange: "e", queue: "q", routingKey: "k" }
    const { mismatches, topology } = Topology.combine([
      Topology.make({
        exchanges: [{ name: "e", type: "topic" }],
        queues: [{ name: "q", type: "quorum", messageTtlMs: 100, arguments: { "x-max-length": 10 } }],
        bindings: [binding]
      }),
      Topology.make({
        exchanges: [{ name: "e", type: "direct" }],
        queues: [{ name: "q", type: "classic", messageTtlMs: 100, arguments: { "x-max-length": 20 } }],
        bindings: [{ ...binding }]
      })
    ])
    assert.deepStrictEqual(mismatches.map((m) => [m.kind, m.name, m.field, m.values]), [
      ["queue", "q", "type", ["quorum", "classic"]],
      ["queue", "q", "arguments.x-max-length", [10, 20]],
      ["exchange", "e", "type", ["topic", "direct"]]
    ])
    assert.strictEqual(topology.bindings.length, 1)
  })
})

describe("Topology with consumers", () => {
  it.live("a topology that declares the consumer's queue quorum gets a quorum queue (the consumer's undefined type does not override it)", () =>
    Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("merged")
      const handled: Array<string> = []
      const consumer = Consumer.make({ queue, schema: Event, handler: (e) => Effect.sync(() => handled.push(e.id)) })
      const { worker } = yield* startWorker([consumer], { topology: Topology.make({ queues: [{ name: queue, type: "quorum" }] }) })
      yield* worker.awaitReady
      assert.deepStrictEqual(yield* queueTypes([queue]), { [queue]: "quorum" })
      yield* admin.publishTasks(queue, ["a"])
      yield* broker.eventually("handled", Effect.sync(() => handled), (h) => h.length === 1)
    }))

  it.live("a topology that disagrees with a consumer's own declaration stops the worker before it connects, naming both values", () =>
    Effect.gen(function*() {
      const consumer = Consumer.make({
        queue: "merge-conflict",
        schema: Event,
        handler: () => Effect.void,
        queueOptions: { type: "classic" }
      })
      const exit = yield* Effect.exit(startWorkerExit([consumer], Topology.make({ queues: [{ name: "merge-conflict", type: "quorum" }] })))
      assert.isTrue(Exit.isFailure(exit))
      const message = Exit.isFailure(exit) ? String(Cause.squash(exit.cause)) : ""
      assert.include(message, `topology: queue "merge-conflict" type`)
      assert.include(message, `["quorum","classic"]`)
    }))
})

describe("A quorum consumer's dead-lettering", () => {
  const argsOf = (consumer: Consumer.Consumer<never>) =>
    Object.fromEntries(consumer.topology.queues.map((q) => [q.name.slice("orders".length) || "(main)", Topology.queueArguments(q)]))
  const make = (queueOptions: Consumer.QueueOptions, onFailure?: Parameters<typeof Consumer.make>[0]["onFailure"]) =>
    Consumer.make({ queue: "orders", schema: Schema.Struct({ id: Schema.String }), handler: () => Effect.void, queueOptions, onFailure })

  it("is at least once wherever the broker dead-letters: into q.dlq from q, back into q from the retry queues", () => {
    const args = argsOf(make({ type: "quorum" }))
    const atLeastOnce = { "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish" }
    assert.deepInclude(args["(main)"]!, { ...atLeastOnce, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "orders.dlq" })
    assert.deepInclude(args[".retry"]!, { ...atLeastOnce, "x-dead-letter-routing-key": "orders" })
    assert.deepInclude(args[".retry.5000ms"]!, { ...atLeastOnce, "x-dead-letter-routing-key": "orders" })
    assert.isUndefined(args[".dlq"]!["x-dead-letter-strategy"])
    // Without retries the main queue still dead-letters into q.dlq: the delivery limit drops nothing.
    assert.deepInclude(argsOf(make({ type: "quorum" }, "dead-letter"))["(main)"]!, { "x-dead-letter-routing-key": "orders.dlq" })
  })

  it("leaves a user's overflow choice alone, and classic queues as they were", () => {
    const own = argsOf(make({ type: "quorum", arguments: { "x-overflow": "drop-head", "x-max-length": 10 } }))
    assert.strictEqual(own["(main)"]!["x-overflow"], "drop-head")
    assert.isUndefined(own["(main)"]!["x-dead-letter-strategy"])
    const classic = argsOf(make({}))
    assert.isUndefined(classic["(main)"]!["x-dead-letter-strategy"])
    assert.strictEqual(classic["(main)"]!["x-dead-letter-routing-key"], "orders.retry")
  })
})
