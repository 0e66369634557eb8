/**
 * Inputs, options and handlers that must never wedge a worker, spin it, or
 * loop a message hot: each one is injected here, against the real broker,
 * and the messages are counted.
 */
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Effect, Exit, Fiber, Layer, Logger, Redacted, Schema, Scope, Tracer } from "effect"
import * as net from "node:net"
import * as Connection from "../src/Connection.ts"
import * as Consumer from "../src/Consumer.ts"
import * as Options from "../src/Options.ts"
import * as Outcome from "../src/Outcome.ts"
import * as Publisher from "../src/Publisher.ts"
import * as Status from "../src/Status.ts"
import * as Worker from "../src/Worker.ts"
import * as broker from "./support/broker.ts"
import * as logs from "./support/logs.ts"
import { type LogLine, messageText, spawnWorker } from "./support/process.ts"
import * as Proxy from "./support/proxy.ts"
import { startWorker } from "./support/worker.ts"

const Task = Schema.Struct({ id: Schema.String })

/** A TCP server on loopback that accepts connections and then says nothing (or one byte every `trickleMs`). */
const silentServer = (trickleMs?: number) =>
  Effect.acquireRelease(
    Effect.callback<{ readonly port: number; readonly server: net.Server; accepted: number }>((resume) => {
      const sockets = new Set<net.Socket>()
      const state = { port: 0, server: net.createServer(), accepted: 0 }
      state.server.on("connection", (socket) => {
        state.accepted++
        sockets.add(socket)
        socket.on("error", () => {})
        socket.on("close", () => sockets.delete(socket))
        if (trickleMs !== undefined) {
          // The header of a method frame of 100 bytes on channel 0, then its
          // payload one byte at a time: always more to come, never complete.
          socket.write(Buffer.from([1, 0, 0, 0, 0, 0, 100]))
          const timer = setInterval(() => socket.write(Buffer.from([0])), trickleMs)
          socket.on("close", () => clearInterval(timer))
        }
      })
      state.server.listen(0, "127.0.0.1", () => {
        const address = state.server.address()
        state.port = typeof address === "object" && address !== null ? address.port : 0
        resume(Effect.succeed(state))
      })
      ;(state.server as net.Server & { sockets?: Set<net.Socket> }).sockets = sockets
    }),
    ({ server }) =>
      Effect.callback<void>((resume) => {
        for (const socket of (server as net.Server & { sockets?: Set<net.Socket> }).sockets ?? []) socket.destroy()
        server.close(() => resume(Effect.void))
      })
  )

const handled = (lines: ReadonlyArray<LogLine>) => lines.filter((l) => /^handled task /.test(messageText(l))).length

describe("Hardening: publishing", () => {
  it.live("a publish the client refuses fails at once with PublishRefused; the connection and channel stay usable", () =>
    Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("refused", {})
      const { worker } = yield* startWorker([], { publisher: { timeout: "2 seconds" } })
      yield* worker.awaitReady
      const publish = (overrides: Partial<Publisher.OutgoingMessage<typeof Task>>) =>
        worker.publisher.publish({ routingKey: queue, schema: Task, body: { id: "x" }, ...overrides })
      const cases: ReadonlyArray<readonly [string, Partial<Publisher.OutgoingMessage<typeof Task>>]> = [
        ["a 300-byte message id", { messageId: "x".repeat(300) }],
        ["a 300-byte routing key", { routingKey: "r".repeat(300) }],
        ["a 300-byte exchange", { exchange: "e".repeat(300) }],
        ["a NaN header", { headers: { n: Number.NaN } }],
        ["an Infinity header (the broker would close the connection)", { headers: { n: Number.POSITIVE_INFINITY } }],
        ["an Infinity deep in a header", { headers: { n: { m: [1, Number.POSITIVE_INFINITY] } } }],
        ["a bigint header", { headers: { n: 10n } }],
        ["headers over 64 KiB", { headers: { big: "y".repeat(70 * 1024) } }],
        // amqplib would send these as tables of their own fields: empty, their data lost.
        ["a Date header", { headers: { at: new Date() } }],
        ["a Date deep in a header", { headers: { n: { list: [{ at: new Date() }] } } }],
        ["a Map header", { headers: { m: new Map([["a", 1]]) } }],
        ["a Uint8Array header", { headers: { b: new Uint8Array([1, 2]) } }],
        ["headers that are a Map", { headers: new Map([["a", 1]]) as unknown as Record<string, unknown> }]
      ]
      for (const [what, overrides] of cases) {
        const exit = yield* Effect.exit(publish(overrides))
        assert.isTrue(Exit.isFailure(exit), what)
        const error = Exit.isFailure(exit) ? exit.cause.reasons[0] : undefined
        assert.strictEqual(error?._tag === "Fail" ? error.error._tag : undefined, "PublishRefused", what)
      }
      // Nothing went out, nothing broke: the next publish is confirmed on the same connection,
      // with bytes and amqplib's typed values (a timestamp) as they were given.
      yield* publish({
        messageId: "fine",
        headers: { bytes: Buffer.from("ab"), at: { "!": "timestamp", value: 1_700_000_000 }, plain: { a: [1, "b"] } }
      })
      const [fine, ...rest] = yield* admin.drainQueue(queue)
      assert.strictEqual(rest.length, 0)
      assert.strictEqual(fine?.properties.messageId, "fine")
      assert.deepStrictEqual(fine?.properties.headers, {
        bytes: Buffer.from("ab"),
        at: { "!": "timestamp", value: 1_700_000_000 },
        plain: { a: [1, "b"] }
      })
      const status = yield* worker.status
      assert.strictEqual(status.reconnects, 0)
      assert.isTrue(Status.isReady(status))
    }))

  it.live("the publish timeout bounds the wait for the confirm: a broker that never confirms gives PublishTimeout", () =>
    Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("noconfirm", {})
      const proxy = yield* Proxy.make()
      const { worker } = yield* startWorker([], { url: proxy.url, publisher: { timeout: "700 millis" } })
      yield* worker.awaitReady
      // Bytes from the broker (the confirm) are held back; nothing is lost.
      proxy.hold()
      const error = yield* Effect.flip(worker.publisher.publish({ routingKey: queue, schema: Task, body: { id: "a" } }))
      proxy.release()
      assert.strictEqual(error._tag, "PublishTimeout")
      assert.isTrue(error._tag === "PublishTimeout" && error.sent)
      assert.isTrue(Outcome.isTransient(error))
    }))

  it.live("a handler's publish the broker refuses (404) parks that task alone: results caught in the channel's close are sent again, no attempt used", () =>
    Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("refused")
      const results = yield* admin.queue("refused-results", {})
      const missing = broker.uniqueName("no-exchange")
      const attempts: Array<{ readonly id: string; readonly attempt: number }> = []
      const consumer = Consumer.make({
        queue,
        schema: Task,
        onFailure: "dead-letter",
        handler: (task, message) =>
          Effect.gen(function*() {
            attempts.push({ id: task.id, attempt: message.attempt })
            const publisher = yield* Publisher.Publisher
            yield* publisher.publish({
              exchange: task.id === "t-150" ? missing : "",
              routingKey: results,
              schema: Task,
              body: task,
              messageId: task.id
            })
          })
      })
      yield* admin.declare(consumer.topology)
      const ids = Array.from({ length: 300 }, (_, i) => `t-${i}`)
      yield* admin.publishTasks(queue, ids)
      const { worker } = yield* startWorker([consumer], { prefetch: 50 })
      yield* worker.awaitReady
      yield* broker.eventually("queue settled", broker.queueCounts(queue), (c) => c.ready === 0 && c.unacked === 0, 30_000)
      const parked = yield* admin.drainQueue(`${queue}.dlq`)
      assert.deepStrictEqual(parked.map((m) => m.properties.messageId), ["t-150"])
      const published = new Set((yield* admin.drainQueue(results)).map((m) => String(m.properties.messageId)))
      assert.deepStrictEqual([...published].sort(), ids.filter((id) => id !== "t-150").sort())
      // Those caught in the close were requeued without using an attempt.
      assert.deepStrictEqual([...new Set(attempts.map((a) => a.attempt))], [1])
      assert.isAbove(attempts.length, ids.length, "no result was caught in the close: the test proves nothing")
    }))
})

describe("Hardening: handlers", () => {
  it.live("a handler that interrupts itself is a failure under the policy: retried, then parked, never requeued hot", () =>
    Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("selfinterrupt")
      let calls = 0
      const consumer = Consumer.make({
        queue,
        schema: Task,
        onFailure: Outcome.retry({ maxAttempts: 3, delay: "100 millis" }),
        handler: (task) =>
          Effect.suspend(() => {
            calls++
            // Its own interruption, and (for the second task) joining an interrupted fiber.
            return task.id === "self"
              ? Effect.interrupt
              : Effect.flatMap(Effect.forkChild(Effect.never), (fiber) => Effect.andThen(Fiber.interrupt(fiber), Fiber.join(fiber)))
          })
      })
      const { worker } = yield* startWorker([consumer])
      yield* worker.awaitReady
      yield* admin.publishTasks(queue, ["self", "joined"])
      yield* broker.eventually("both parked", admin.ready(`${queue}.dlq`), (n) => n === 2)
      const parked = yield* admin.drainQueue(`${queue}.dlq`)
      assert.deepStrictEqual(parked.map((m) => m.properties.headers?.["x-error-tag"]), ["Interrupted", "Interrupted"])
      assert.deepStrictEqual(parked.map((m) => m.properties.headers?.["x-attempts"]), [3, 3])
      // Three attempts each, not thousands.
      yield* Effect.sleep("300 millis")
      assert.strictEqual(calls, 6)
      assert.deepStrictEqual(yield* broker.queueCounts(queue), { ready: 0, unacked: 0, consumers: 1 })
    }))

  it.live("a handler that returns no Effect (a Promise, undefined) is a defect under the policy; its place is not lost", () =>
    Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("noteffect")
      const calls: Array<string> = []
      const consumer = Consumer.make({
        queue,
        schema: Task,
        // One handler at a time: a lost place would stop the consumer.
        concurrency: 1,
        onFailure: Outcome.retry({ maxAttempts: 2, delay: "100 millis" }),
        // What a JavaScript caller (or a cast) can pass: an async function, a function returning nothing.
        handler: ((task: { readonly id: string }) => {
          calls.push(task.id)
          if (task.id === "promise") return Promise.resolve()
          if (task.id === "nothing") return undefined
          return Effect.void
        }) as unknown as (task: { readonly id: string }) => Effect.Effect<void>
      })
      const { worker } = yield* startWorker([consumer])
      yield* worker.awaitReady
      yield* admin.publishTasks(queue, ["promise", "nothing", "fine"])
      yield* broker.eventually("both parked", admin.ready(`${queue}.dlq`), (n) => n === 2)
      const parked = yield* admin.drainQueue(`${queue}.dlq`)
      assert.deepStrictEqual(
        parked.map((m) => [m.properties.messageId, m.properties.headers?.["x-error-tag"], m.properties.headers?.["x-error-message"]]).sort(),
        [
          ["nothing", "Defect", "the handler returned undefined, not an Effect"],
          ["promise", "Defect", "the handler returned a Promise (an async function?), not an Effect"]
        ]
      )
      assert.deepStrictEqual(calls.filter((id) => id === "fine"), ["fine"])
      yield* broker.eventually("settled", broker.queueCounts(queue), (c) => c.ready === 0 && c.unacked === 0)
      yield* admin.publishTasks(queue, ["later"])
      yield* broker.eventually("later handled", Effect.sync(() => calls), (c) => c.includes("later"))
    }))

  it.live("an application logger that throws on every line: handlers, settling and retries go on; no message fails for it; said once on stderr", () => {
    const captured = logs.capture()
    const throwing = Logger.make(() => {
      throw new Error("the log stream is closed")
    })
    const stderr: Array<string> = []
    return Effect.gen(function*() {
      const write = process.stderr.write
      yield* Effect.acquireRelease(
        Effect.sync(() => {
          process.stderr.write = ((chunk: string | Uint8Array) => {
            stderr.push(String(chunk))
            return true
          }) as typeof process.stderr.write
        }),
        () => Effect.sync(() => (process.stderr.write = write))
      )
      const admin = yield* broker.admin
      const queue = yield* admin.queue("badlogger")
      const calls: Array<string> = []
      const consumer = Consumer.make({
        queue,
        schema: Task,
        // One handler at a time: a lost place would stop the consumer.
        concurrency: 1,
        onFailure: Outcome.retry({ maxAttempts: 2, delay: "100 millis" }),
        handler: (task, message) =>
          Effect.gen(function*() {
            calls.push(`${task.id}#${message.attempt}`)
            // The handler's own line: a broken sink must not make it a defect.
            yield* Effect.logInfo(`handling ${task.id}`)
            if (task.id === "fails-once" && message.attempt === 1) return yield* Effect.fail("not yet")
          })
      })
      const { worker } = yield* startWorker([consumer])
      yield* worker.awaitReady
      yield* admin.publishTasks(queue, ["fails-once", "a", "b"])
      yield* broker.eventually("all handled", Effect.sync(() => [...calls].sort()), (c) => c.length === 4, 15_000)
      assert.deepStrictEqual([...calls].sort(), ["a#1", "b#1", "fails-once#1", "fails-once#2"])
      yield* broker.eventually("settled", broker.queueCounts(queue), (c) => c.ready === 0 && c.unacked === 0)
      assert.strictEqual(yield* admin.ready(`${queue}.dlq`), 0)
      // The other logger got every line, the handler's included.
      assert.strictEqual(captured.matching(/^handling (a|b|fails-once)$/).length, 4)
      assert.strictEqual(captured.matching(/will be retried/).length, 1)
      assert.deepStrictEqual(captured.matching(/outside its outcome rules|stopped/).map((l) => l.message), [])
      assert.deepStrictEqual(stderr.filter((line) => line.startsWith("a logger threw")), [
        "a logger threw (Error: the log stream is closed); the worker goes on, without that logger's failed lines\n"
      ])
    }).pipe(Effect.provide(Layer.mergeAll(captured.layer, Logger.layer([captured.logger, throwing]))))
  })

  it.live("a tracer whose span fails to end, after the message was settled: the handler's place is not lost, the consumer goes on", () => {
    const captured = logs.capture()
    const native = Tracer.Tracer.defaultValue()
    let thrown = 0
    const tracer = Tracer.make({
      span(options) {
        const span = native.span(options)
        // The first consumer span only: it ends after its message was settled.
        if (!options.name.endsWith(" process") || thrown > 0) return span
        const failing: Tracer.Span = Object.create(span)
        Object.defineProperty(failing, "end", {
          value: (endTime: bigint, exit: Exit.Exit<unknown, unknown>) => {
            span.end(endTime, exit)
            thrown++
            throw new Error("the tracer broke")
          }
        })
        return failing
      }
    })
    return Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("badspanend")
      const calls: Array<string> = []
      const consumer = Consumer.make({
        queue,
        schema: Task,
        // One handler at a time: a lost place would stop the consumer.
        concurrency: 1,
        handler: (task) => Effect.sync(() => calls.push(task.id))
      })
      const { worker } = yield* startWorker([consumer])
      yield* worker.awaitReady
      yield* admin.publishTasks(queue, ["first", "a", "b"])
      yield* broker.eventually("all handled", Effect.sync(() => [...calls].sort()), (c) => c.length === 3, 15_000)
      assert.deepStrictEqual([...calls].sort(), ["a", "b", "first"])
      yield* broker.eventually("settled", broker.queueCounts(queue), (c) => c.ready === 0 && c.unacked === 0)
      assert.strictEqual(thrown, 1)
      assert.strictEqual(
        captured.matching(/^the handling of message first failed outside its outcome rules .*, after it was settled$/).length,
        1
      )
      // Settled already: no reason to give up the channel.
      assert.deepStrictEqual(captured.matching(/^consumer of .* stopped/).map((l) => l.message), [])
    }).pipe(Effect.provide(Layer.mergeAll(captured.layer, Layer.succeed(Tracer.Tracer, tracer))))
  })

  it.live("an application logger that throws on the broker's block warning: the status still follows the unblock", () => {
    const captured = logs.capture()
    const throwing = Logger.make((options) => {
      if (String(options.message).startsWith("the broker blocked the connection")) throw new Error("the log stream is closed")
    })
    return Effect.gen(function*() {
      yield* Effect.addFinalizer(() => broker.rabbitmqctl("set_vm_memory_high_watermark", "0.4").pipe(Effect.ignore))
      const admin = yield* broker.admin
      const queue = yield* admin.queue("blocklog", {})
      const { worker } = yield* startWorker([])
      yield* worker.awaitReady
      const publish = (id: string) =>
        worker.publisher.publish({ routingKey: queue, schema: Task, body: { id }, messageId: id })
      yield* broker.rabbitmqctl("set_vm_memory_high_watermark", "0.0001")
      // A publish under the alarm is what makes the broker block the connection.
      const first = yield* Effect.forkChild(publish("m0"))
      yield* broker.eventually("blocked", worker.status, (s) => s.blocked !== undefined, 20_000)
      yield* broker.rabbitmqctl("set_vm_memory_high_watermark", "0.4")
      yield* Fiber.join(first)
      yield* broker.eventually("unblocked", worker.status, (s) => s.blocked === undefined && Status.isReady(s), 10_000)
      assert.strictEqual(captured.matching(/^the broker unblocked the connection$/).length, 1)
      // And a second block is reported too: the reporter is still there.
      yield* broker.rabbitmqctl("set_vm_memory_high_watermark", "0.0001")
      const second = yield* Effect.forkChild(publish("m1"))
      yield* broker.eventually("blocked again", worker.status, (s) => s.blocked !== undefined, 20_000)
      yield* broker.rabbitmqctl("set_vm_memory_high_watermark", "0.4")
      yield* Fiber.join(second)
      yield* broker.eventually("unblocked again", worker.status, (s) => s.blocked === undefined, 10_000)
      assert.deepStrictEqual((yield* admin.drainQueue(queue)).map((m) => m.properties.messageId).sort(), ["m0", "m1"])
    }).pipe(Effect.provide(Layer.mergeAll(captured.layer, Logger.layer([captured.logger, throwing]))))
  })

  it.live("a tracer that throws before a handler runs: the message is not lost, the channel is reopened and it is redelivered", () => {
    const captured = logs.capture()
    const native = Tracer.Tracer.defaultValue()
    let thrown = 0
    const tracer = Tracer.make({
      span(options) {
        // The first message's consumer span only.
        if (options.name.endsWith(" process") && thrown++ === 0) throw new Error("the tracer broke")
        return native.span(options)
      }
    })
    return Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("badtracer")
      const calls: Array<{ id: string; redelivered: boolean }> = []
      const consumer = Consumer.make({
        queue,
        schema: Task,
        handler: (task, message) => Effect.sync(() => calls.push({ id: task.id, redelivered: message.redelivered }))
      })
      const { worker } = yield* startWorker([consumer])
      yield* worker.awaitReady
      yield* admin.publishTasks(queue, ["first"])
      yield* broker.eventually("handled", Effect.sync(() => calls), (c) => c.length === 1, 15_000)
      // It never ran the first time: the broker redelivered it on the new channel.
      assert.deepStrictEqual(calls, [{ id: "first", redelivered: true }])
      yield* broker.eventually("settled", broker.queueCounts(queue), (c) => c.ready === 0 && c.unacked === 0)
      assert.strictEqual(
        captured.matching(/^the handling of message first failed outside its outcome rules .*: it is not settled; the channel is reopened/).length,
        1
      )
      assert.strictEqual(captured.matching(/^consumer of .* stopped \(HandlingFailed/).length, 1)
    }).pipe(Effect.provide(Layer.mergeAll(captured.layer, Layer.succeed(Tracer.Tracer, tracer))))
  })

  it.live("a channel closed after a failed handling gives the other handlers the grace period, and its warning says why it drained, not 'shutdown'", () => {
    const captured = logs.capture()
    const native = Tracer.Tracer.defaultValue()
    const tracer = Tracer.make({
      span(options) {
        // The consumer span of the message "breaks", the first time only.
        if (options.name.endsWith(" process") && broken === 0 && breakNext) {
          broken++
          throw new Error("the tracer broke")
        }
        return native.span(options)
      }
    })
    let broken = 0
    let breakNext = false
    return Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("draincause")
      const started = yield* Deferred.make<void>()
      const calls: Array<{ id: string; redelivered: boolean }> = []
      const consumer = Consumer.make({
        queue,
        schema: Task,
        concurrency: 2,
        handler: (task, message) =>
          Effect.gen(function*() {
            calls.push({ id: task.id, redelivered: message.redelivered })
            // The slow task outlasts the grace period, the first time.
            if (task.id === "slow" && !message.redelivered) {
              yield* Deferred.succeed(started, undefined)
              yield* Effect.sleep("30 seconds")
            }
          })
      })
      const { worker } = yield* startWorker([consumer], { shutdownGrace: "300 millis" })
      yield* worker.awaitReady
      yield* admin.publishTasks(queue, ["slow"])
      yield* Deferred.await(started)
      breakNext = true
      yield* admin.publishTasks(queue, ["breaks"])
      yield* broker.eventually("both handled again", Effect.sync(() => calls), (c) => c.filter((call) => call.redelivered).length === 2, 15_000)
      yield* broker.eventually("settled", broker.queueCounts(queue), (c) => c.ready === 0 && c.unacked === 0)
      assert.strictEqual(broken, 1)
      assert.deepStrictEqual(calls.map((c) => c.id).sort(), ["breaks", "slow", "slow"])
      assert.strictEqual(
        captured.matching(
          /^closing the channel of .* \(a message of .* could not be settled .*\): the grace period of 300ms is over: interrupting the handlers still running/
        ).length,
        1
      )
      assert.strictEqual(captured.matching(/^shutdown/).length, 0)
    }).pipe(Effect.provide(Layer.mergeAll(captured.layer, Layer.succeed(Tracer.Tracer, tracer))))
  })

  it.live("a stuck handler is interrupted at its handlerTimeout and settled as a HandlerTimeout failure; never two handlers for one message", () =>
    Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("stuck")
      let running = 0
      let mostAtOnce = 0
      const calls: Array<string> = []
      const consumer = Consumer.make({
        queue,
        schema: Task,
        handlerTimeout: "300 millis",
        onFailure: Outcome.retry({ maxAttempts: 2, delay: "100 millis" }),
        handler: (task) =>
          Effect.suspend(() => {
            calls.push(task.id)
            running++
            mostAtOnce = Math.max(mostAtOnce, running)
            return task.id === "stuck" ? Effect.never : Effect.sleep("10 millis")
          }).pipe(Effect.ensuring(Effect.sync(() => running--)))
      })
      const { worker } = yield* startWorker([consumer])
      yield* worker.awaitReady
      yield* admin.publishTasks(queue, ["stuck", "quick-1", "quick-2"])
      yield* broker.eventually("stuck parked", admin.ready(`${queue}.dlq`), (n) => n === 1)
      const [parked] = yield* admin.drainQueue(`${queue}.dlq`)
      assert.strictEqual(parked?.properties.headers?.["x-error-tag"], "HandlerTimeout")
      assert.strictEqual(parked?.properties.headers?.["x-attempts"], 2)
      assert.deepStrictEqual(calls.filter((id) => id === "stuck").length, 2)
      assert.deepStrictEqual(calls.filter((id) => id !== "stuck").sort(), ["quick-1", "quick-2"])
      assert.isAtMost(mostAtOnce, 3)
      yield* broker.eventually("nothing unacked", broker.queueCounts(queue), (c) => c.unacked === 0 && c.ready === 0)
      // The handler fiber that was interrupted made way for a new one: later messages are handled.
      yield* admin.publishTasks(queue, ["later"])
      yield* broker.eventually("later handled", Effect.sync(() => ({ calls, running })), (s) => s.calls.includes("later") && s.running === 0)
    }))

  it.live("a handler that ignores interruption is abandoned 5 s after its timeout: its message is settled by the policy, its place goes to the next message", () => {
    const captured = logs.capture()
    return Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("stubborn")
      const calls: Array<string> = []
      // Every "stuck" handler ever started, still running: nothing can stop them.
      let stuckRunning = 0
      const consumer = Consumer.make({
        queue,
        schema: Task,
        handlerTimeout: "300 millis",
        // One handler at a time: the quick tasks wait for the stuck one's place.
        concurrency: 1,
        onFailure: Outcome.retry({ maxAttempts: 2, delay: "100 millis" }),
        handler: (task) =>
          Effect.suspend(() => {
            calls.push(task.id)
            if (task.id !== "stuck") return Effect.void
            stuckRunning++
            // An uninterruptible wait that never ends (an acquire that hangs, say).
            return Effect.uninterruptible(Effect.never)
          })
      })
      const { worker } = yield* startWorker([consumer])
      yield* worker.awaitReady
      yield* admin.publishTasks(queue, ["stuck", "quick-1", "quick-2"])
      // Each attempt: the timeout, then 5 s more; after the second, parked.
      yield* broker.eventually("stuck parked", admin.ready(`${queue}.dlq`), (n) => n === 1, 30_000)
      const [parked] = yield* admin.drainQueue(`${queue}.dlq`)
      assert.strictEqual(parked?.properties.headers?.["x-error-tag"], "HandlerTimeout")
      assert.strictEqual(parked?.properties.headers?.["x-attempts"], 2)
      assert.strictEqual(stuckRunning, 2)
      assert.deepStrictEqual(calls.filter((id) => id !== "stuck").sort(), ["quick-1", "quick-2"])
      yield* broker.eventually("nothing unacked", broker.queueCounts(queue), (c) => c.unacked === 0 && c.ready === 0)
      assert.strictEqual(captured.matching(/^the handler of message stuck is still running 5s after its timeout/).length, 2)
      assert.deepStrictEqual(captured.matching(/PRECONDITION_FAILED|unknown delivery tag/i).map((l) => l.message), [])
      // The single place is free again: a later message is handled at once.
      yield* admin.publishTasks(queue, ["later"])
      yield* broker.eventually("later handled", Effect.sync(() => calls), (c) => c.includes("later"), 5_000)
    }).pipe(Effect.provide(captured.layer))
  }, 60_000)

  it.live("after the broker cancels the consumer, its in-flight deliveries are void: handlers interrupted, nothing sent for them, no 406", () => {
    const captured = logs.capture()
    return Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("cancelvoid")
      const started = yield* Deferred.make<void>()
      let interrupted = 0
      const handledIds: Array<string> = []
      const consumer = Consumer.make({
        queue,
        schema: Task,
        handler: (task) =>
          task.id === "slow"
            ? Effect.andThen(Deferred.succeed(started, undefined), Effect.never).pipe(
              Effect.onInterrupt(() => Effect.sync(() => interrupted++))
            )
            : Effect.sync(() => handledIds.push(task.id))
      })
      const { name, worker } = yield* startWorker([consumer])
      yield* worker.awaitReady
      yield* admin.publishTasks(queue, ["slow"])
      yield* Deferred.await(started)
      // The queue goes away under the consumer: the broker cancels it (basic.cancel).
      yield* admin.deleteQueue(queue)
      yield* broker.eventually("handler interrupted", Effect.sync(() => interrupted), (n) => n === 1)
      // It declares the queue again and subscribes after a backoff.
      yield* broker.eventually("subscribed again", broker.consumersOf(queue), (n) => n === 1)
      yield* worker.awaitReady
      yield* admin.publishTasks(queue, ["after"])
      yield* broker.eventually("after handled", Effect.sync(() => handledIds), (ids) => ids.includes("after"))
      // No ack or nack was sent for the void delivery: the channel was never closed by the broker.
      assert.strictEqual(yield* broker.channelsOf(name), 2)
      assert.strictEqual(captured.matching(/PRECONDITION_FAILED|unknown delivery tag/).length, 0)
      assert.isAtLeast(captured.matching(/cancelled the consumer.*subscribing again in \d+ ms \(attempt 1\)/).length, 1)
      assert.strictEqual((yield* worker.status).reconnects, 0)
    }).pipe(Effect.provide(captured.layer))
  })

  it.live("a dead-letter copy never fails to encode: a huge error message is cut short, headers too large to copy again are dropped", () =>
    Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("dlcopy")
      const consumer = Consumer.make({
        queue,
        schema: Task,
        onFailure: "dead-letter",
        handler: () => Effect.die(new Error("z".repeat(200_000)))
      })
      yield* admin.declare(consumer.topology)
      const { worker } = yield* startWorker([consumer])
      yield* worker.awaitReady
      yield* admin.publish(queue, [
        { body: JSON.stringify({ id: "plain" }), options: { messageId: "plain", appId: "billing", priority: 3, type: "task" } },
        // Close to what the client can encode: with the worker's own headers added, it no longer fits.
        { body: JSON.stringify({ id: "bulky" }), options: { messageId: "bulky", headers: { bulk: "b".repeat(65_300) } } }
      ])
      yield* broker.eventually("both parked", admin.ready(`${queue}.dlq`), (n) => n === 2)
      const parked = yield* admin.drainQueue(`${queue}.dlq`)
      const plain = parked.find((m) => m.properties.messageId === "plain")
      const bulky = parked.find((m) => m.properties.messageId === "bulky")
      assert.isAtMost(String(plain?.properties.headers?.["x-error-message"]).length, 1000)
      assert.strictEqual(plain?.properties.headers?.["x-error-tag"], "Defect")
      assert.strictEqual(plain?.properties.appId, "billing")
      assert.strictEqual(plain?.properties.priority, 3)
      assert.strictEqual(plain?.properties.type, "task")
      assert.strictEqual(bulky?.properties.headers?.["x-error-tag"], "Defect")
      assert.strictEqual(bulky?.properties.headers?.["x-original-headers-dropped"], true)
      assert.deepStrictEqual(yield* broker.queueCounts(queue), { ready: 0, unacked: 0, consumers: 1 })
    }))
})

describe("Hardening: options", () => {
  it.live("bad library options stop the worker before it connects, with one typed error naming each", () =>
    Effect.gen(function*() {
      const consumer = (overrides: Partial<Consumer.ConsumerOptions<typeof Task, typeof Task, never, never>>) =>
        Consumer.make({ queue: "opts", schema: Task, handler: () => Effect.void, ...overrides })
      type Overrides = Partial<Worker.WorkerOptions> & { readonly url?: string }
      const cases: ReadonlyArray<readonly [string, Overrides, ReadonlyArray<Consumer.Consumer>]> = [
        ["prefetch", {}, [consumer({ prefetch: 0 })]],
        ["prefetch", {}, [consumer({ prefetch: 70_000 })]],
        ["concurrency", {}, [consumer({ concurrency: 0 })]],
        ["maxBodyBytes", {}, [consumer({ maxBodyBytes: 0 })]],
        ["handlerTimeout", {}, [consumer({ handlerTimeout: 0 })]],
        ["onFailure.maxAttempts", {}, [consumer({ onFailure: Outcome.retry({ maxAttempts: 0, delay: "1 second" }) })]],
        ["onFailure.delay", {}, [consumer({ onFailure: Outcome.retry({ maxAttempts: 3, delay: 0 }) })]],
        ["queue", {}, [consumer({ queue: "" })]],
        ["queue", {}, [consumer({ queue: "q".repeat(300) })]],
        ["prefetch", { prefetch: 0 }, []],
        ["maxBodyBytes", { maxBodyBytes: -1 }, []],
        ["shutdownGrace", { shutdownGrace: -1 }, []],
        ["handlerTimeout", { handlerTimeout: "0 millis" }, []],
        ["reconnect.base", { reconnect: { base: "10 seconds", max: "1 second" } }, []],
        ["reconnect.base", { reconnect: { base: 0, max: "1 second" } }, []],
        ["publisher.maxWaiting", { publisher: { maxWaiting: -5 } }, []],
        ["connection.url", { url: "http://rabbit:5672" }, []]
      ]
      for (const [option, overrides, consumers] of cases) {
        const { url, ...rest } = overrides
        const name = broker.uniqueName("opts")
        const exit = yield* Effect.exit(Effect.scoped(Worker.make({
          connection: { url: Redacted.make(url ?? broker.URL), name },
          ...rest
        }, consumers)))
        assert.isTrue(Exit.isFailure(exit), option)
        const reason = Exit.isFailure(exit) ? exit.cause.reasons[0] : undefined
        const error = reason?._tag === "Fail" ? reason.error : undefined
        assert.instanceOf(error, Options.InvalidOptions, option)
        assert.include(error?.message ?? "", option)
        assert.deepStrictEqual(yield* broker.connectionsNamed(name), [], `${option}: nothing connected`)
      }
      // Several at once are all named, and the URL's password never shows.
      const error = yield* Effect.flip(Effect.scoped(Worker.make({
        connection: { url: Redacted.make("ftp://user:secret@host") },
        prefetch: 0
      }, [consumer({ concurrency: 0 })])))
      assert.strictEqual(error._tag, "InvalidOptions")
      const message = error._tag === "InvalidOptions" ? error.message : ""
      assert.include(message, "prefetch is 0")
      assert.include(message, 'consumer "opts": concurrency is 0')
      assert.include(message, "connection.url")
      assert.notInclude(message, "secret")
    }))
})

describe("Hardening: connections and shutdown", () => {
  it.live("the connect timeout is one deadline: a server that trickles bytes and never completes the handshake fails in time", () =>
    Effect.gen(function*() {
      const server = yield* silentServer(100)
      const startedAt = Date.now()
      const error = yield* Effect.flip(Effect.scoped(Connection.make({
        url: Redacted.make(`amqp://guest:guest@127.0.0.1:${server.port}`),
        connectTimeout: "800 millis"
      })))
      const elapsed = Date.now() - startedAt
      assert.strictEqual(error._tag, "ConnectError")
      assert.include(error.reason, "no answer within 800 ms")
      // An idle timeout would never fire: bytes keep coming.
      assert.isBelow(elapsed, 5000)
    }))

  it.live("SIGTERM while connecting to a server that never answers: the worker exits 0 at once", () =>
    Effect.gen(function*() {
      const server = yield* silentServer()
      const url = `amqp://guest:guest@127.0.0.1:${server.port}`
      const worker = yield* spawnWorker({ AMQP_URL: `${url},${url}`, LOG_LEVEL: "info" })
      yield* broker.eventually("the worker connecting", Effect.sync(() => server.accepted), (n) => n >= 1)
      const signalledAt = Date.now()
      worker.signal("SIGTERM")
      const code = yield* worker.exit(15_000)
      assert.strictEqual(code, 0, worker.output.join("\n"))
      // Before the fix it waited out the connect's 10 s timeout for each address.
      assert.isBelow(Date.now() - signalledAt, 5000)
    }))

  it.live("a connection lost during the shutdown drain ends the drain at once; the message goes back to the queue", () =>
    Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("draindrop")
      const started = yield* Deferred.make<void>()
      const consumer = Consumer.make({
        queue,
        schema: Task,
        handler: () => Effect.andThen(Deferred.succeed(started, undefined), Effect.sleep("60 seconds"))
      })
      const scope = yield* Scope.make()
      const { name, worker } = yield* startWorker([consumer], { shutdownGrace: "30 seconds" }).pipe(Scope.provide(scope))
      yield* worker.awaitReady
      yield* admin.publishTasks(queue, ["long"])
      yield* Deferred.await(started)
      const closing = yield* Effect.forkChild(Scope.close(scope, Exit.void))
      yield* broker.eventually("draining", worker.status, (s) => s.connection === "stopping")
      yield* Effect.sleep("300 millis")
      const lostAt = Date.now()
      yield* broker.closeConnectionsNamed(name)
      yield* Fiber.join(closing)
      assert.isBelow(Date.now() - lostAt, 5000)
      yield* broker.eventually("back in the queue", broker.queueCounts(queue), (c) => c.ready === 1 && c.unacked === 0)
    }))

  it.live("readiness covers the publisher: not ready while its channel is down; a reconnect clears the last error", () =>
    Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("ready")
      const consumer = Consumer.make({ queue, schema: Task, handler: () => Effect.void })
      const { name, worker } = yield* startWorker([consumer], {
        reconnect: { base: "1500 millis", max: "3 seconds", healthyAfter: "1 second" }
      })
      yield* worker.awaitReady
      // A publish to an exchange that does not exist: the broker closes the publisher's channel (404).
      const error = yield* Effect.flip(
        worker.publisher.publish({ exchange: broker.uniqueName("missing"), routingKey: "x", schema: Task, body: { id: "a" } })
      )
      assert.strictEqual(error._tag, "PublishUnconfirmed")
      assert.isFalse(Outcome.isTransient(error))
      const down = yield* broker.eventually("publisher down", worker.status, (s) => !s.publisher)
      assert.isFalse(Status.isReady(down))
      assert.strictEqual(down.connection, "connected")
      yield* broker.eventually("publisher back", worker.status, Status.isReady)
      // A lost connection, then a new one: what went wrong before is not reported any more.
      yield* broker.closeConnectionsNamed(name)
      yield* broker.eventually("reconnected", worker.status, (s) => s.reconnects === 1 && Status.isReady(s))
      const status = yield* worker.status
      assert.strictEqual(status.attempt, 0)
      assert.isUndefined(status.lastError)
      assert.isUndefined(status.nextRetryMs)
    }))

  it.live("a memory alarm longer than the publish timeout sends no task to the dead-letter queue: transient failures use no attempts", () =>
    Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("alarm")
      const results = yield* admin.queue("alarm-results", {})
      const attempts: Array<number> = []
      const consumer = Consumer.make({
        queue,
        schema: Task,
        onFailure: Outcome.retry({ maxAttempts: 2, delay: "100 millis" }),
        handler: (task, message) =>
          Effect.gen(function*() {
            attempts.push(message.attempt)
            const publisher = yield* Publisher.Publisher
            yield* publisher.publish({ routingKey: results, schema: Task, body: task, messageId: task.id })
          })
      })
      yield* admin.declare(consumer.topology)
      const ids = Array.from({ length: 10 }, (_, i) => `t-${i}`)
      yield* admin.publishTasks(queue, ids)
      yield* Effect.acquireRelease(
        broker.rabbitmqctl("set_vm_memory_high_watermark", "0"),
        () => broker.rabbitmqctl("set_vm_memory_high_watermark", "0.4")
      )
      const { worker } = yield* startWorker([consumer], { publisher: { timeout: "300 millis" }, prefetch: 5 })
      yield* broker.eventually("blocked", worker.status, (s) => s.blocked !== undefined, 20_000)
      // Several publish timeouts long, more than every attempt the policy allows.
      yield* Effect.sleep("2 seconds")
      assert.strictEqual(yield* admin.ready(`${queue}.dlq`), 0)
      yield* broker.rabbitmqctl("set_vm_memory_high_watermark", "0.4")
      yield* broker.eventually("every result", admin.ready(results), (n) => n >= ids.length, 30_000)
      yield* broker.eventually("queue settled", broker.queueCounts(queue), (c) => c.ready === 0 && c.unacked === 0)
      assert.strictEqual(yield* admin.ready(`${queue}.dlq`), 0)
      // Every attempt counted was the first: the timeouts did not count.
      assert.deepStrictEqual([...new Set(attempts)], [1])
      // While blocked, no new handler started: only the first ones waited on their publish.
      assert.isAtMost(attempts.length, ids.length + 5)
    }))
})

describe("Hardening: processes", () => {
  it.live("the example worker with a 300-byte task id (too long for a message id): retried, then parked with PublishRefused; LOG_LEVEL=info", () =>
    Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("longid")
      const worker = yield* spawnWorker({
        AMQP_QUEUE: queue,
        LOG_LEVEL: "info",
        RETRY_MAX_ATTEMPTS: "2",
        RETRY_DELAY_MS: "100"
      })
      yield* worker.waitFor("consuming", (l) => l.some((line) => /^consuming from/.test(messageText(line))))
      const longId = "x".repeat(300)
      yield* admin.publish(queue, [
        { body: JSON.stringify({ id: longId }), options: { messageId: "long" } },
        { body: JSON.stringify({ id: "short" }), options: { messageId: "short" } }
      ])
      yield* broker.eventually("parked", admin.ready(`${queue}.dlq`), (n) => n === 1)
      const [parked] = yield* admin.drainQueue(`${queue}.dlq`)
      assert.strictEqual(parked?.properties.messageId, "long")
      assert.strictEqual(parked?.properties.headers?.["x-error-tag"], "PublishRefused")
      assert.strictEqual(parked?.properties.headers?.["x-attempts"], 2)
      yield* worker.waitFor("the short one handled", (l) => handled(l) === 1)
      assert.deepStrictEqual(yield* broker.queueCounts(queue), { ready: 0, unacked: 0, consumers: 1 })
      worker.signal("SIGTERM")
      assert.strictEqual(yield* worker.exit(), 0)
    }))

  it.live("a library program that follows the README (Worker.run(...).pipe(Worker.runMain)) exits 0 after a SIGTERM drain", () =>
    Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("library")
      const worker = yield* spawnWorker({ AMQP_QUEUE: queue }, { script: "test/fixtures/library-worker.ts" })
      yield* broker.eventually("consuming", broker.consumersOf(queue), (n) => n === 1)
      yield* admin.publishTasks(queue, ["a", "b"])
      yield* broker.eventually("handled", broker.queueCounts(queue), (c) => c.ready === 0 && c.unacked === 0)
      worker.signal("SIGTERM")
      assert.strictEqual(yield* worker.exit(), 0, worker.output.join("\n"))
      assert.isTrue(worker.output.some((line) => line.includes("handled a")))
    }))
})
