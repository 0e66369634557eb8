/**
 * One throughput run of one client, in a process of its own: consumes
 * `count` messages from `queue` at `prefetch`, and prints
 * `{"client","messages","seconds","cpuMicrosPerMessage"}`, measured from the
 * first delivery to the last message handled. Run by bench/run.ts.
 *
 *   node bench/client.ts <client> <queue> <count> <prefetch>
 */
import amqpConnectionManager from "amqp-connection-manager"
import * as amqp from "amqplib"
import { Effect, Fiber, Layer, Redacted, References, Schema } from "effect"
import { Connection as RabbitClient } from "rabbitmq-client"
import * as Consumer from "../src/Consumer.ts"
import * as Worker from "../src/Worker.ts"

const URL = process.env.AMQP_URL ?? "amqp://guest:guest@127.0.0.1:5672"
const [client = "", queue = "", countText = "", prefetchText = ""] = process.argv.slice(2)
const count = Number(countText)
const prefetch = Number(prefetchText)

let handled = 0
let firstAt = 0
let firstCpu: NodeJS.CpuUsage | undefined
let finish!: () => void
const done = new Promise<void>((resolve) => (finish = resolve))
/** Called once per handled message, after its ack was issued. */
const tick = () => {
  if (handled === 0) {
    firstAt = performance.now()
    firstCpu = process.cpuUsage()
  }
  if (++handled === count) finish()
}

/** The body every client decodes: the bench's "small JSON task". */
const Task = Schema.Struct({ id: Schema.String, n: Schema.Number, tags: Schema.Array(Schema.String), ok: Schema.Boolean })

const clients: Record<string, () => Promise<() => Promise<void>>> = {
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
      schema: Task,
      prefetch,
      onFailure: "reject",
      handler: () => Effect.sync(tick)
    })
    const fiber = Effect.runFork(
      Worker.run({ connection: { url: Redacted.make(URL) } }, [consumer]).pipe(
        Effect.provide(Layer.succeed(References.MinimumLogLevel, "Warn"))
      )
    )
    return () => Effect.runPromise(Fiber.interrupt(fiber))
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
      { queue, queueOptions: { durable: true }, qos: { prefetchCount: prefetch } },
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

const start = clients[client]
if (start === undefined) {
  console.error(`unknown client ${client}; one of ${Object.keys(clients).join(", ")}`)
  process.exit(2)
}
const stop = await start()
await done
const seconds = (performance.now() - firstAt) / 1000
const cpu = process.cpuUsage(firstCpu)
// Let the last acks go out before closing.
await new Promise((resolve) => setTimeout(resolve, 100))
await stop()
// CPU time of this process per message: what the client itself costs,
// apart from the broker (which shares the machine).
const cpuMicrosPerMessage = (cpu.user + cpu.system) / count
console.log(JSON.stringify({ client, messages: count, seconds, cpuMicrosPerMessage }))
process.exit(0)
