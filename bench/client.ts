/**
 * One throughput run of one client, in a process of its own, and prints
 * `{"client","messages","seconds","cpuMicrosPerMessage"}`, measured from the
 * first message to the last. Run by bench/run.ts.
 *
 *   node bench/client.ts consume <client> <queue> <count> <prefetch>
 *   node bench/client.ts work    <client> <queue> <count> <prefetch>   (client example-worker: what npm start runs)
 *   node bench/client.ts publish <client> <queue> <count> <inFlight>
 *
 * - consume: take `count` messages from `queue`, decode, ack.
 * - work: the worker's real path: take a task, publish a persistent result
 *   to `<queue>.done` and wait for its confirm, then ack the task.
 * - publish: `count` persistent publishes to `queue`, each awaited (its
 *   confirm), `inFlight` at a time.
 */
import amqpConnectionManager from "amqp-connection-manager"
import { spawn } from "node:child_process"
import * as amqp from "amqplib"
import { Effect, Fiber, Layer, Redacted, References, Schema } from "effect"
import { Connection as RabbitClient } from "rabbitmq-client"
import * as Consumer from "../src/Consumer.ts"
import { coalesceWrites } from "../src/internal/connect.ts"
import * as Publisher from "../src/Publisher.ts"
import * as Worker from "../src/Worker.ts"
import { cpuMicros, workerArgs } from "./proc.ts"

const URL = process.env.AMQP_URL ?? "amqp://guest:guest@127.0.0.1:5672"
const [scenario = "", client = "", queue = "", countText = "", prefetchText = ""] = process.argv.slice(2)
const count = Number(countText)
const prefetch = Number(prefetchText)
const inFlight = prefetch
const results = `${queue}.done`
/**
 * The type of the bench's queues (`BENCH_QUEUE_TYPE=quorum`, else classic):
 * clients that declare their queue must declare it as it is. Classic queues
 * are declared as before, without the argument.
 */
const quorum = process.env["BENCH_QUEUE_TYPE"] === "quorum"
const queueArguments = quorum ? { "x-queue-type": "quorum" as const } : {}
const queueOptions = quorum ? { queueOptions: { type: "quorum" as const } } : {}

let handled = 0
let firstAt = 0
let firstCpu = 0
let finish!: () => void
const done = new Promise<void>((resolve) => (finish = resolve))
/** CPU time (µs) of the process that handles the messages: this one, or the example worker's (see below). */
let cpuNow = (): number => {
  const usage = process.cpuUsage()
  return usage.user + usage.system
}
/** Called once per handled message, after its ack was issued. */
const tick = () => {
  if (handled === 0) {
    firstAt = performance.now()
    firstCpu = cpuNow()
  }
  if (++handled === count) finish()
}

/** The body every client decodes: the bench's "small JSON task". */
const Task = Schema.Struct({ id: Schema.String, n: Schema.Number, tags: Schema.Array(Schema.String), ok: Schema.Boolean })

const TaskDone = Schema.Struct({ id: Schema.String, worker: Schema.String, handledAt: Schema.String })
const resultBody = (id: string) => ({ id, worker: "bench", handledAt: new Date().toISOString() })
const resultBuffer = (id: string) => Buffer.from(JSON.stringify(resultBody(id)))
const taskId = (content: Buffer): string => (JSON.parse(content.toString()) as { id: string }).id

/**
 * How long the bench waits before it next counts the example worker's
 * results (a passive declare of the result queue), with `seen` counted so
 * far. Each count costs the broker about 200 µs of CPU, which the
 * worker's run is charged with and which the broker does not spend on the
 * worker: every 5 ms, 3-4 % of a core. So 5 ms only until the first result
 * and near the last (the two ends of the measured time), and between them
 * about a tenth of the time still left at the rate seen so far.
 */
const pollDelay = (seen: number): number => {
  if (seen === 0) return 5
  const rate = seen / (performance.now() - firstAt) // results a ms
  const left = (count - seen) / rate
  return Math.max(5, Math.min(100, left / 10))
}

/** This project's worker with one consumer, warnings only; returns how to stop it. */
const runWorker = async (consumer: Consumer.Consumer<Publisher.Publisher>) => {
  const fiber = Effect.runFork(
    Worker.run({ connection: { url: Redacted.make(URL) } }, [consumer]).pipe(
      Effect.provide(Layer.succeed(References.MinimumLogLevel, "Warn"))
    )
  )
  return () => Effect.runPromise(Fiber.interrupt(fiber))
}

const consumeClients: Record<string, () => Promise<() => Promise<void>>> = {
  /** raw amqplib: JSON.parse and one ack per message. */
  amqplib: async () => {
    const connection = await amqp.connect(URL)
    const channel = await connection.createChannel()
    await channel.prefetch(prefetch)
    await channel.consume(queue, (message) => {
      if (message === null) return
      JSON.parse(message.content.toString())
      channel.ack(message)
      tick()
    })
    return () => connection.close()
  },

  /** raw amqplib, acks folded into one `multiple` ack per event-loop turn: the ceiling. */
  "amqplib-batched": async () => {
    const connection = await amqp.connect(URL)
    const channel = await connection.createChannel()
    await channel.prefetch(prefetch)
    let last: amqp.ConsumeMessage | undefined
    await channel.consume(queue, (message) => {
      if (message === null) return
      JSON.parse(message.content.toString())
      if (last === undefined) {
        setImmediate(() => {
          channel.ack(last!, true)
          last = undefined
        })
      }
      last = message
      tick()
    })
    return async () => {
      await new Promise((resolve) => setImmediate(resolve))
      await connection.close()
    }
  },

  /** this project: Schema decode, a typed handler, outcome rules, acks. */
  "effect-rabbitmq-worker": async () => {
    const consumer = Consumer.make({
      queue,
      ...queueOptions,
      schema: Task,
      prefetch,
      onFailure: "reject",
      handler: () => Effect.sync(tick)
    })
    return runWorker(consumer)
  },

  /** amqp-connection-manager 5: JSON.parse and one ack per message through its channel wrapper. */
  "amqp-connection-manager": async () => {
    const connection = amqpConnectionManager.connect([URL])
    const channel = connection.createChannel({
      json: false,
      setup: (ch: amqp.ConfirmChannel) => ch.prefetch(prefetch)
    })
    await channel.waitForConnect()
    await channel.consume(queue, (message) => {
      JSON.parse(message.content.toString())
      channel.ack(message)
      tick()
    }, { prefetch })
    return () => connection.close()
  },

  /** rabbitmq-client 5: JSON.parse; the library acks when the handler returns. */
  "rabbitmq-client": async () => {
    const connection = new RabbitClient(URL)
    const consumer = connection.createConsumer(
      { queue, queueOptions: { durable: true, arguments: queueArguments }, qos: { prefetchCount: prefetch } },
      (message) => {
        JSON.parse(Buffer.isBuffer(message.body) ? message.body.toString() : JSON.stringify(message.body))
        tick()
      }
    )
    return async () => {
      await consumer.close()
      await connection.close()
    }
  }
}

/**
 * raw amqplib on this project's wire for the real path (see
 * `amqplib-batched`): `handle` publishes each task's result with
 * `wire.publish`, and passes what its confirm called back with to
 * `wire.settle` (nothing: acked in the turn's batch; an error: nacked back).
 */
interface Wire {
  readonly publish: (id: string, onConfirm: (error: unknown) => void) => void
  readonly settle: (message: amqp.ConsumeMessage, error: unknown) => void
}
const ourWire = async (handle: (wire: Wire, message: amqp.ConsumeMessage) => void) => {
  const connection = await amqp.connect(URL)
  coalesceWrites(connection)
  const channel = await connection.createChannel()
  const confirms = await connection.createConfirmChannel()
  await channel.prefetch(prefetch)
  // Insertion order is tag order.
  const unsettled = new Map<number, amqp.ConsumeMessage>()
  const confirmed = new Set<number>()
  let scheduled = false
  const flush = () => {
    scheduled = false
    let head: amqp.ConsumeMessage | undefined
    for (const [tag, message] of unsettled) {
      if (!confirmed.has(tag)) break
      head = message
      unsettled.delete(tag)
      confirmed.delete(tag)
    }
    if (head !== undefined) channel.ack(head, true)
    for (const tag of confirmed) {
      channel.ack(unsettled.get(tag)!)
      unsettled.delete(tag)
    }
    confirmed.clear()
  }
  const wire: Wire = {
    publish: (id, onConfirm) => {
      confirms.publish("", results, resultBuffer(id), {
        persistent: true,
        mandatory: true,
        messageId: id,
        contentType: "application/json"
      }, onConfirm)
    },
    settle: (message, error) => {
      const tag = message.fields.deliveryTag
      if (error !== null && error !== undefined) {
        unsettled.delete(tag)
        return channel.nack(message, false, true)
      }
      confirmed.add(tag)
      if (!scheduled) {
        scheduled = true
        setImmediate(flush)
      }
      tick()
    }
  }
  await channel.consume(queue, (message) => {
    if (message === null) return
    unsettled.set(message.fields.deliveryTag, message)
    handle(wire, message)
  })
  return () => connection.close()
}

/** The worker's real path: a result published with a confirm, then the task acked. */
const workClients: Record<string, () => Promise<() => Promise<void>>> = {
  /** raw amqplib: a confirm channel for results, the task acked in the confirm callback. */
  amqplib: async () => {
    const connection = await amqp.connect(URL)
    const channel = await connection.createChannel()
    const confirms = await connection.createConfirmChannel()
    await channel.prefetch(prefetch)
    await channel.consume(queue, (message) => {
      if (message === null) return
      const id = taskId(message.content)
      confirms.sendToQueue(results, resultBuffer(id), { persistent: true, messageId: id, contentType: "application/json" }, (error) => {
        if (error !== null && error !== undefined) return channel.nack(message, false, true)
        channel.ack(message)
        tick()
      })
    })
    return () => connection.close()
  },

  /**
   * raw amqplib doing on the wire what this project does, and nothing else:
   * socket writes coalesced per tick, results mandatory, and the acks of
   * confirmed tasks folded into one `multiple` ack a turn that covers only
   * the run of confirmed deliveries at the head (those behind an unconfirmed
   * one are acked one by one). The ceiling for a client with this project's
   * guarantees.
   */
  "amqplib-batched": () =>
    ourWire((wire, message) => wire.publish(taskId(message.content), (error) => wire.settle(message, error))),

  /**
   * The same, with each task handled in an Effect fiber of its own, as any
   * Effect client handles it: an `Effect.gen` handler that waits for its
   * result's confirm in an `Effect.callback`. No decoding, no outcome rules,
   * no metrics: what it costs over the ceiling is Effect's runtime, the floor
   * of an Effect client on this wire; what this project costs over it is its
   * own.
   */
  "amqplib-effect": () =>
    ourWire((wire, message) => {
      Effect.runFork(Effect.gen(function*() {
        const id = taskId(message.content)
        const error = yield* Effect.callback<unknown>((resume) => wire.publish(id, (error) => resume(Effect.succeed(error))))
        wire.settle(message, error)
      }))
    }),

  /** this project: the example worker's handler (decode, publish a confirmed result, then the worker acks). */
  "effect-rabbitmq-worker": async () => {
    const consumer = Consumer.make({
      queue,
      ...queueOptions,
      schema: Task,
      prefetch,
      onFailure: "reject",
      // Counted where the raw clients count: once the result is confirmed (the worker acks next).
      handler: (task) =>
        Effect.gen(function*() {
          const publisher = yield* Publisher.Publisher
          yield* publisher.publish({ routingKey: results, schema: TaskDone, body: resultBody(task.id), messageId: task.id })
          tick()
        })
    })
    return runWorker(consumer)
  },

  /**
   * This project's example worker as users run it (what `npm start` runs,
   * flags included) with `LOG_LEVEL=Warn` and `WORK_MS=0`, in a process of
   * its own: its results are counted as they reach the result queue (polled
   * every 5 ms near the first and the last, less often between: see
   * `pollDelay`), and its CPU is read from /proc. Its queue is declared with
   * the worker's own arguments (bench/run.ts), or the worker would stop on
   * the conflict.
   */
  "example-worker": async () => {
    const worker = spawn(process.execPath, workerArgs(), {
      env: {
        ...process.env,
        AMQP_URL: URL,
        AMQP_QUEUE: queue,
        AMQP_RESULT_QUEUE: results,
        AMQP_PREFETCH: String(prefetch),
        AMQP_QUEUE_TYPE: quorum ? "quorum" : "classic",
        LOG_LEVEL: "Warn",
        WORK_MS: "0",
        HTTP_PORT: process.env["BENCH_HTTP_PORT"] ?? "9464"
      },
      stdio: ["ignore", "ignore", "inherit"]
    })
    let exitCode: number | null | undefined
    const exited = new Promise((resolve) => worker.on("exit", (code) => resolve(exitCode = code)))
    cpuNow = () => cpuMicros(worker.pid!)
    const connection = await amqp.connect(URL)
    const channel = await connection.createChannel()
    while (handled < count) {
      await new Promise((resolve) => setTimeout(resolve, pollDelay(handled)))
      if (exitCode !== undefined) throw new Error(`the example worker exited (${exitCode}) after ${handled} of ${count} results`)
      const { messageCount } = await channel.checkQueue(results)
      while (handled < Math.min(messageCount, count)) tick()
    }
    return async () => {
      await connection.close()
      worker.kill("SIGTERM")
      await exited
    }
  },

  /** amqp-connection-manager 5: await the wrapper's (confirmed) sendToQueue, then ack. */
  "amqp-connection-manager": async () => {
    const connection = amqpConnectionManager.connect([URL])
    const channel = connection.createChannel({
      json: false,
      setup: (ch: amqp.ConfirmChannel) => ch.prefetch(prefetch)
    })
    await channel.waitForConnect()
    await channel.consume(queue, async (message) => {
      const id = taskId(message.content)
      await channel.sendToQueue(results, resultBuffer(id), { persistent: true, messageId: id, contentType: "application/json" })
      channel.ack(message)
      tick()
    }, { prefetch })
    return () => connection.close()
  },

  /** rabbitmq-client 5: a confirming publisher; the handler awaits `send`, the library acks when it returns. */
  "rabbitmq-client": async () => {
    const connection = new RabbitClient(URL)
    const publisher = connection.createPublisher({ confirm: true })
    const consumer = connection.createConsumer(
      { queue, queueOptions: { durable: true, arguments: queueArguments }, qos: { prefetchCount: prefetch } },
      async (message) => {
        const id = taskId(Buffer.isBuffer(message.body) ? message.body : Buffer.from(JSON.stringify(message.body)))
        await publisher.send({ routingKey: results, durable: true, messageId: id }, resultBody(id))
        tick()
      }
    )
    return async () => {
      await consumer.close()
      await publisher.close()
      await connection.close()
    }
  }
}

/**
 * `count` persistent publishes, `inFlight` awaited at a time.
 *
 * raw amqplib: a confirm channel, one callback per publish, the next publish
 * sent from it. `mandatory` gives this project's guarantee (a message no
 * queue takes comes back instead of being confirmed and dropped), which
 * costs the broker work for each publish.
 */
const rawPublisher = (mandatory: boolean) => async () => {
  const { channel, connection } = await confirmChannel()
  let sent = 0
  const next = () => {
    if (sent >= count) return
    rawPublish(channel, sent++, mandatory, () => {
      tick()
      next()
    })
  }
  for (let i = 0; i < inFlight; i++) next()
  return () => connection.close()
}

const confirmChannel = async () => {
  const connection = await amqp.connect(URL)
  const channel = await connection.createConfirmChannel()
  channel.on("return", () => console.error("returned: the bench's queue is missing"))
  return { channel, connection }
}

const rawPublish = (channel: amqp.ConfirmChannel, i: number, mandatory: boolean, onConfirm: (error: unknown) => void) =>
  channel.publish("", queue, resultBuffer(`p${i}`), {
    persistent: true,
    mandatory,
    messageId: `p${i}`,
    contentType: "application/json"
  }, onConfirm)

/** `tick` as an effect, made once: the raw clients pay nothing per publish for counting either. */
const ticked = Effect.sync(tick)

const publishClients: Record<string, () => Promise<() => Promise<void>>> = {
  amqplib: rawPublisher(false),
  "amqplib-mandatory": rawPublisher(true),

  /**
   * The mandatory ceiling published as an Effect client publishes: each
   * publish in a fiber of its own (`Effect.forEach` with `inFlight` at a
   * time, as this project's client below), its confirm awaited in an
   * `Effect.callback`. No encoding, no message record, no typed outcome:
   * what it costs over the ceiling is Effect's runtime, the floor of any
   * Effect client publishing this way.
   */
  "amqplib-effect": async () => {
    const { channel, connection } = await confirmChannel()
    const fiber = Effect.runFork(Effect.forEach(
      Array.from({ length: count }, (_, i) => i),
      (i) =>
        Effect.andThen(
          Effect.callback<unknown>((resume) => {
            rawPublish(channel, i, true, (error) => resume(Effect.succeed(error)))
          }),
          ticked
        ),
      { concurrency: inFlight, discard: true }
    ))
    return async () => {
      await Effect.runPromise(Fiber.interrupt(fiber))
      await connection.close()
    }
  },

  "effect-rabbitmq-worker": async () => {
    const fiber = Effect.runFork(
      Effect.scoped(Effect.gen(function*() {
        const worker = yield* Worker.make<never>({ connection: { url: Redacted.make(URL) }, publisher: { maxWaiting: inFlight } }, [])
        yield* worker.awaitReady
        yield* Effect.forEach(
          Array.from({ length: count }, (_, i) => i),
          (i) =>
            Effect.andThen(
              worker.publisher.publish({ routingKey: queue, schema: TaskDone, body: resultBody(`p${i}`), messageId: `p${i}` }),
              ticked
            ),
          { concurrency: inFlight, discard: true }
        )
        return yield* Effect.never
      })).pipe(Effect.provide(Layer.succeed(References.MinimumLogLevel, "Warn")))
    )
    return () => Effect.runPromise(Fiber.interrupt(fiber))
  },

  "amqp-connection-manager": async () => {
    const connection = amqpConnectionManager.connect([URL])
    const channel = connection.createChannel({ json: false })
    await channel.waitForConnect()
    let sent = 0
    const loop = async () => {
      while (sent < count) {
        const i = sent++
        await channel.sendToQueue(queue, resultBuffer(`p${i}`), { persistent: true, messageId: `p${i}`, contentType: "application/json" })
        tick()
      }
    }
    for (let i = 0; i < inFlight; i++) void loop()
    return () => connection.close()
  },

  "rabbitmq-client": async () => {
    const connection = new RabbitClient(URL)
    const publisher = connection.createPublisher({ confirm: true })
    let sent = 0
    const loop = async () => {
      while (sent < count) {
        const i = sent++
        await publisher.send({ routingKey: queue, durable: true, messageId: `p${i}` }, resultBody(`p${i}`))
        tick()
      }
    }
    for (let i = 0; i < inFlight; i++) void loop()
    return async () => {
      await publisher.close()
      await connection.close()
    }
  }
}

const scenarios: Record<string, Record<string, () => Promise<() => Promise<void>>>> = {
  consume: consumeClients,
  work: workClients,
  publish: publishClients
}
const start = scenarios[scenario]?.[client]
if (start === undefined) {
  console.error(`unknown scenario or client: ${scenario} ${client}`)
  process.exit(2)
}
const stop = await start()
await done
const seconds = (performance.now() - firstAt) / 1000
const cpu = cpuNow() - firstCpu
// Let the last acks go out before closing.
await new Promise((resolve) => setTimeout(resolve, 100))
await stop()
// CPU time of this process per message: what the client itself costs,
// apart from the broker (which shares the machine).
const cpuMicrosPerMessage = cpu / count
console.log(JSON.stringify({ client, messages: count, seconds, cpuMicrosPerMessage }))
process.exit(0)
