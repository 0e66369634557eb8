/**
 * Faults injected for real against the broker: the broker closing the
 * connection, a dead socket, a silent (half-open) network, the broker down at
 * start-up and restarted while consuming, the queue deleted under a consumer,
 * and a channel error. Each test counts messages: every published id is
 * handled, and the queue ends with nothing ready and nothing unacked.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Logger, Schema } from "effect"
import * as Consumer from "../src/Consumer.ts"
import * as broker from "./support/broker.ts"
import * as logs from "./support/logs.ts"
import * as Proxy from "./support/proxy.ts"
import { startWorker } from "./support/worker.ts"

const Task = Schema.Struct({ id: Schema.String })
const ids = (n: number, prefix = "t") => Array.from({ length: n }, (_, i) => `${prefix}-${i}`)

/** A consumer that records every id it handled, after `workMs` of work. */
const recorder = (queue: string, workMs = 0) => {
  const handled: Array<string> = []
  const consumer = Consumer.make({
    queue,
    schema: Task,
    prefetch: 10,
    handler: (task) =>
      Effect.sleep(workMs).pipe(Effect.andThen(Effect.sync(() => {
        handled.push(task.id)
      })))
  })
  const distinct = Effect.sync(() => new Set(handled).size)
  return { handled, consumer, distinct }
}

/** Every id handled at least once, and the queue left with nothing ready or unacked. */
const assertAllHandled = (queue: string, expected: ReadonlyArray<string>, handled: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    yield* broker.eventually("every id handled", Effect.sync(() => new Set(handled).size), (n) => n >= expected.length, 40_000)
    const counts = yield* broker.eventually("queue settled", broker.queueCounts(queue), (c) => c.ready === 0 && c.unacked === 0)
    assert.deepStrictEqual([...new Set(handled)].sort(), [...expected].sort())
    assert.strictEqual(counts.ready, 0)
    assert.strictEqual(counts.unacked, 0)
  })

const noChannelErrors = (captured: ReturnType<typeof logs.capture>) => {
  assert.deepStrictEqual(captured.matching(/PRECONDITION_FAILED|unknown delivery tag/i).map((l) => l.message), [])
  assert.deepStrictEqual(captured.matching(/^consumer of .* stopped/).map((l) => l.message), [])
}

describe("Faults", () => {
  it.live("the broker closes the connection: the worker reconnects and every message is handled", () => {
    const captured = logs.capture()
    return Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("close")
      const expected = ids(300)
      const { consumer, distinct, handled } = recorder(queue, 5)
      const { name, worker } = yield* startWorker([consumer])
      yield* worker.awaitReady
      yield* admin.publishTasks(queue, expected)
      yield* broker.eventually("some handled", distinct, (n) => n >= 30)
      assert.strictEqual(yield* broker.closeConnectionsNamed(name), 1)
      yield* assertAllHandled(queue, expected, handled)
      // The old connection and its channel are gone, no duplicate was left open.
      assert.strictEqual((yield* broker.connectionsNamed(name)).length, 1)
      // The consumer's channel and the publisher's.
      assert.strictEqual(yield* broker.channelsOf(name), 2)
      assert.isAtLeast(captured.matching(/connection to .* lost: .*reconnecting in \d+ ms \(attempt 1\)/).length, 1)
      noChannelErrors(captured)
    }).pipe(Effect.provide(captured.layer))
  })

  it.live("close_all_connections: the worker reconnects and every message is handled", () =>
    Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("closeall")
      const expected = ids(200)
      const { consumer, distinct, handled } = recorder(queue, 5)
      const { worker } = yield* startWorker([consumer])
      yield* worker.awaitReady
      yield* admin.publishTasks(queue, expected)
      yield* broker.eventually("some handled", distinct, (n) => n >= 20)
      yield* broker.rabbitmqctl("close_all_connections", "test: everyone out")
      yield* assertAllHandled(queue, expected, handled)
    }).pipe(Effect.provide(logs.capture().layer)))

  it.live("a dead socket: the worker reconnects and every message is handled", () =>
    Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("reset")
      const proxy = yield* Proxy.make()
      const expected = ids(200)
      const { consumer, distinct, handled } = recorder(queue, 5)
      const { worker } = yield* startWorker([consumer], { url: proxy.url })
      yield* worker.awaitReady
      yield* admin.publishTasks(queue, expected)
      yield* broker.eventually("some handled", distinct, (n) => n >= 20)
      proxy.cut()
      yield* assertAllHandled(queue, expected, handled)
      assert.isAtLeast(proxy.accepted(), 2)
    }).pipe(Effect.provide(logs.capture().layer)))

  it.live("a half-open connection is noticed by heartbeats, and the worker reconnects", () => {
    const captured = logs.capture()
    return Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("halfopen")
      const proxy = yield* Proxy.make()
      const expected = ids(100)
      const { consumer, distinct, handled } = recorder(queue, 20)
      const { worker } = yield* startWorker([consumer], { url: proxy.url })
      yield* worker.awaitReady
      yield* admin.publishTasks(queue, expected)
      yield* broker.eventually("some handled", distinct, (n) => n >= 10)
      const pausedAt = Date.now()
      proxy.pause()
      // Heartbeats every 2 s: the client gives up after two missed beats.
      yield* broker.eventually(
        "the worker notices",
        worker.status,
        (s) => s.connection === "reconnecting",
        15_000
      )
      const noticedAfter = Date.now() - pausedAt
      proxy.resume()
      yield* assertAllHandled(queue, expected, handled)
      assert.isAtMost(noticedAfter, 10_000)
      assert.isAtLeast(captured.matching(/Heartbeat timeout/).length, 1)
    }).pipe(Effect.provide(captured.layer))
  })

  it.live("the broker is down at start-up: the worker keeps retrying with growing delays, then consumes", () => {
    const captured = logs.capture()
    return Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("down")
      const proxy = yield* Proxy.make(undefined, { listening: false })
      const { consumer, handled } = recorder(queue)
      const { worker } = yield* startWorker([consumer], { url: proxy.url })
      const status = yield* broker.eventually("3 failed attempts", worker.status, (s) => s.attempt >= 3)
      assert.strictEqual(status.connection, "reconnecting")
      assert.match(status.lastError ?? "", /ECONNREFUSED/)
      const retries = captured.matching(/cannot connect to .*; reconnecting in (\d+) ms \(attempt (\d+)\)/)
      const delays = retries.map((line) => Number(/in (\d+) ms/.exec(line.message)![1]))
      assert.deepStrictEqual(retries.slice(0, 3).map((line) => /attempt (\d+)/.exec(line.message)![1]), ["1", "2", "3"])
      // base 100 ms, doubling, ±20 % jitter
      assert.isAtLeast(delays[0]!, 80)
      assert.isAtMost(delays[0]!, 120)
      assert.isAtLeast(delays[2]!, 320)
      assert.isAtMost(delays[2]!, 480)
      yield* proxy.start()
      yield* worker.awaitReady
      yield* admin.publishTasks(queue, ids(20))
      yield* assertAllHandled(queue, ids(20), handled)
    }).pipe(Effect.provide(captured.layer))
  })

  it.live("the broker restarts (stop_app, start_app) while consuming: every persistent message is handled", () =>
    Effect.gen(function*() {
      // Whatever happens, the broker is running again when the test ends.
      yield* Effect.addFinalizer(() => broker.rabbitmqctl("start_app").pipe(Effect.ignore))
      const admin = yield* broker.admin
      const queue = yield* admin.queue("restart")
      const expected = ids(200)
      const { consumer, distinct, handled } = recorder(queue, 10)
      const { worker } = yield* startWorker([consumer])
      yield* worker.awaitReady
      yield* admin.publishTasks(queue, expected)
      yield* broker.eventually("some handled", distinct, (n) => n >= 20)
      yield* broker.rabbitmqctl("stop_app")
      yield* broker.eventually("retrying while down", worker.status, (s) => s.attempt >= 2, 20_000)
      yield* broker.rabbitmqctl("start_app")
      yield* assertAllHandled(queue, expected, handled)
    }).pipe(Effect.provide(logs.capture().layer)))

  it.live("the queue is deleted while consuming: declared and subscribed again on the same connection", () => {
    const captured = logs.capture()
    return Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("deleted")
      const { consumer, handled } = recorder(queue)
      const { name, worker } = yield* startWorker([consumer])
      yield* worker.awaitReady
      yield* admin.publishTasks(queue, ["before"])
      yield* broker.eventually("first handled", Effect.sync(() => handled.length), (n) => n === 1)
      yield* admin.deleteQueue(queue)
      yield* broker.eventually(
        "consuming again",
        broker.queueCounts(queue).pipe(Effect.catchDefect(() => Effect.succeed({ consumers: 0 }))),
        (c) => c.consumers === 1
      )
      yield* admin.publishTasks(queue, ["after"])
      yield* assertAllHandled(queue, ["before", "after"], handled)
      assert.strictEqual(captured.matching(/^connected to/).length, 1)
      assert.strictEqual((yield* broker.connectionsNamed(name)).length, 1)
      assert.strictEqual(captured.matching(/cancelled the consumer/).length, 1)
    }).pipe(Effect.provide(captured.layer))
  })

  it.live("a channel error (405 RESOURCE_LOCKED) reopens the channel after a backoff, without dropping the connection", () => {
    const captured = logs.capture()
    return Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("locked")
      const proxy = yield* Proxy.make()
      const { consumer, handled } = recorder(queue)
      const { name, worker } = yield* startWorker([consumer], { url: proxy.url })
      yield* worker.awaitReady
      yield* admin.publishTasks(queue, ["before"])
      yield* broker.eventually("first handled", Effect.sync(() => handled.length), (n) => n === 1)
      // While the broker's frames to the worker are held back, delete the queue
      // and take its name as an exclusive queue of another connection. When the
      // worker learns of the deletion it declares the queue again, and the
      // broker closes its channel with 405 RESOURCE_LOCKED.
      proxy.hold()
      yield* Effect.promise(async () => {
        await admin.channel.deleteQueue(queue)
        await admin.channel.assertQueue(queue, { exclusive: true })
      })
      proxy.release()
      yield* broker.eventually(
        "two failed channels",
        Effect.sync(() => captured.matching(/^consumer of .* stopped .*RESOURCE_LOCKED/).length),
        (n) => n >= 2
      )
      const locked = yield* worker.status
      assert.strictEqual(locked.connection, "connected")
      assert.isFalse(locked.consumers[queue])
      // Release the name: the next attempt declares the queue and consumes.
      yield* Effect.promise(() => admin.channel.deleteQueue(queue))
      yield* broker.eventually("subscribed again", worker.status, (s) => s.consumers[queue] === true)
      yield* admin.publishTasks(queue, ["after"])
      yield* broker.eventually("handled", Effect.sync(() => handled.length), (n) => n === 2)
      assert.deepStrictEqual(handled, ["before", "after"])
      // One connection all along: only the channel was reopened.
      assert.strictEqual(captured.matching(/^connected to/).length, 1)
      assert.strictEqual(proxy.accepted(), 1)
      assert.strictEqual((yield* broker.connectionsNamed(name)).length, 1)
      const retries = captured.matching(/^consumer of .* stopped .*; opening a new channel in \d+ ms \(attempt \d+\)/)
      assert.isAtLeast(retries.length, 2)
    }).pipe(Effect.provide(captured.layer))
  })

  it.live("a channel error while deliveries stream in (406 on an unknown delivery tag): only that channel is reopened, the connection stays", () => {
    const captured = logs.capture()
    return Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("stray")
      const proxy = yield* Proxy.make()
      const expected = ids(4000)
      const { consumer, distinct, handled } = recorder(queue)
      const { name, worker } = yield* startWorker([consumer], { url: proxy.url })
      yield* worker.awaitReady
      yield* admin.publishTasks(queue, expected)
      // RabbitMQ goes on sending deliveries on a channel it has just closed
      // (rabbitmq-server#13384): amqplib, by itself, takes a frame for a
      // channel it no longer has as a connection error. Not every error
      // catches deliveries on their way: eight make it near certain.
      for (let i = 1; i <= 8; i++) {
        yield* broker.eventually(`handling after error ${i - 1}`, distinct, (n) => n >= i * 400, 20_000)
        yield* broker.eventually("consuming", worker.status, (s) => s.consumers[queue] === true)
        assert.strictEqual(proxy.injectChannelError(), 1)
        yield* broker.eventually(
          `channel error ${i} seen`,
          Effect.sync(() => captured.matching(/^consumer of .* stopped .*PRECONDITION_FAILED/).length),
          (n) => n >= i
        )
      }
      yield* assertAllHandled(queue, expected, handled)
      assert.deepStrictEqual(captured.matching(/lost|reconnecting/).map((l) => l.message), [])
      assert.strictEqual(captured.matching(/^connected to/).length, 1)
      assert.strictEqual(proxy.accepted(), 1)
      assert.strictEqual((yield* broker.connectionsNamed(name)).length, 1)
    }).pipe(Effect.provide(captured.layer))
  })

  it.live("an application logger that throws on the reconnect's log line does not stop the reconnecting", () => {
    const captured = logs.capture()
    const throwing = Logger.make((options) => {
      if (/reconnecting in \d+ ms/.test(String(options.message))) throw new Error("the log stream is closed")
    })
    return Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("badlogger-reconnect")
      const { consumer, handled } = recorder(queue)
      const { name, worker } = yield* startWorker([consumer])
      yield* worker.awaitReady
      yield* broker.closeConnectionsNamed(name)
      yield* broker.eventually("reconnected", broker.connectionsNamed(name), (pids) => pids.length === 1, 20_000)
      yield* worker.awaitReady
      yield* admin.publishTasks(queue, ["after"])
      yield* broker.eventually("handled", Effect.sync(() => handled), (h) => h.includes("after"), 20_000)
      assert.strictEqual((yield* worker.status).connection, "connected")
    }).pipe(Effect.provide(Layer.mergeAll(captured.layer, Logger.layer([captured.logger, throwing]))))
  })

  it.live("a handler that ignores interruption does not hold up the reconnect: abandoned after 5 s, its message redelivered", () => {
    const captured = logs.capture()
    return Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("stubborn")
      const calls: Array<{ id: string; redelivered: boolean }> = []
      const consumer = Consumer.make({
        queue,
        schema: Task,
        handler: (task, message) =>
          Effect.suspend(() => {
            calls.push({ id: task.id, redelivered: message.redelivered })
            // The first attempt waits, uninterruptibly, for something that never comes.
            return task.id === "stuck" && !message.redelivered ? Effect.uninterruptible(Effect.never) : Effect.void
          })
      })
      const { name, worker } = yield* startWorker([consumer])
      yield* worker.awaitReady
      yield* admin.publishTasks(queue, ["stuck"])
      yield* broker.eventually("stuck running", Effect.sync(() => calls.length), (n) => n === 1)
      yield* broker.closeConnectionsNamed(name)
      yield* admin.publishTasks(queue, ["after"])
      yield* broker.eventually("reconnected: both handled", Effect.sync(() => calls.length), (n) => n === 3, 20_000)
      assert.deepStrictEqual(
        [...calls].sort((a, b) => a.id.localeCompare(b.id) || Number(a.redelivered) - Number(b.redelivered)),
        [{ id: "after", redelivered: false }, { id: "stuck", redelivered: false }, { id: "stuck", redelivered: true }]
      )
      yield* broker.eventually("queue settled", broker.queueCounts(queue), (c) => c.ready === 0 && c.unacked === 0)
      assert.deepStrictEqual(
        captured.matching(/handler\(s\) still running 5s after being interrupted/).map((l) => l.message),
        ["1 handler(s) still running 5s after being interrupted (they ignore interruption): abandoned; their messages go back to the queue (message ids: stuck)"]
      )
      noChannelErrors(captured)
    }).pipe(Effect.provide(captured.layer))
  }, 40_000)

  it.live("an in-flight message of a lost connection is redelivered, never settled on the new channel", () => {
    const captured = logs.capture()
    return Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("tags")
      const attempts: Array<{ id: string; redelivered: boolean }> = []
      const consumer = Consumer.make({
        queue,
        schema: Task,
        handler: (task, message) =>
          Effect.gen(function*() {
            attempts.push({ id: task.id, redelivered: message.redelivered })
            // The first attempt outlives its connection: it cannot be
            // interrupted and tries to settle after the reconnect.
            if (!message.redelivered) yield* Effect.uninterruptible(Effect.sleep("4 seconds"))
          })
      })
      const { name, worker } = yield* startWorker([consumer])
      yield* worker.awaitReady
      yield* admin.publishTasks(queue, ["slow"])
      yield* broker.eventually("first attempt running", Effect.sync(() => attempts.length), (n) => n === 1)
      yield* broker.closeConnectionsNamed(name)
      yield* broker.eventually("redelivered", Effect.sync(() => attempts.length), (n) => n === 2)
      const counts = yield* broker.eventually("settled", broker.queueCounts(queue), (c) => c.ready === 0 && c.unacked === 0)
      assert.deepStrictEqual(counts, { ready: 0, unacked: 0, consumers: 1 })
      assert.deepStrictEqual(attempts, [{ id: "slow", redelivered: false }, { id: "slow", redelivered: true }])
      assert.isAtLeast(captured.matching(/channel closed before the message could be settled/).length, 1)
      noChannelErrors(captured)
      // Still the one connection, with its one channel: no 406 closed it.
      // The consumer's channel and the publisher's.
      assert.strictEqual(yield* broker.channelsOf(name), 2)
    }).pipe(Effect.provide(captured.layer))
  })
})
