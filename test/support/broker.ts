/**
 * Test support for talking to the real broker: an admin connection that
 * publishes and inspects, unique queue names that are deleted afterwards, and
 * `rabbitmqctl` for what only the broker can do (close a client's connection,
 * stop and start the app, count unacked messages).
 */
import * as amqp from "amqplib"
import { execFile } from "node:child_process"
import { randomUUID } from "node:crypto"
import { Effect, Redacted, type Scope } from "effect"
import * as Topology from "../../src/Topology.ts"

export const URL = process.env.AMQP_URL ?? "amqp://guest:guest@127.0.0.1:5672"
export const url = Redacted.make(URL)

/** Each address of `AMQP_URL` (a cluster's nodes are comma-separated). */
export const URLS: ReadonlyArray<string> = URL.split(",").map((u) => u.trim()).filter((u) => u.length > 0)

/** The broker's host and port, from `AMQP_URL` (its first address). */
export const address = (() => {
  const first = new globalThis.URL(URLS[0]!)
  return { host: first.hostname, port: Number(first.port || 5672) }
})()

/** A connection to the first address that takes one (a cluster's node may be down). */
const connectAny = async (options?: { readonly clientProperties?: Record<string, string> }): Promise<amqp.ChannelModel> => {
  let last: unknown
  for (const url of URLS) {
    try {
      return await amqp.connect(url, options)
    } catch (error) {
      last = error
    }
  }
  throw last
}

/**
 * The command that runs `rabbitmqctl` for the broker under test: the
 * machine's own by default; `RABBITMQCTL` names another (the 4.3 node's runs
 * in its chroot: `scripts/rabbitmq4.sh ctl single`).
 */
export const rabbitmqctlCommand: ReadonlyArray<string> = (process.env.RABBITMQCTL ?? "rabbitmqctl").split(" ").filter((word) => word.length > 0)

/** A name no other test (or earlier run) uses. */
export const uniqueName = (prefix: string) => `test-${prefix}-${randomUUID().slice(0, 8)}`

export const rabbitmqctl = (...args: ReadonlyArray<string>) =>
  Effect.callback<string, Error>((resume) => {
    const [command, ...prefix] = rabbitmqctlCommand
    execFile(command!, [...prefix, ...args], { timeout: 30_000 }, (error, stdout, stderr) => {
      resume(error ? Effect.fail(new Error(`rabbitmqctl ${args.join(" ")}: ${stderr || error.message}`)) : Effect.succeed(stdout))
    })
  }).pipe(Effect.orDie)

const json = <A>(args: ReadonlyArray<string>) =>
  Effect.map(rabbitmqctl(...args, "--formatter", "json", "--quiet"), (out) => JSON.parse(out.trim() || "[]") as A)

/** `rabbitmqctl list_...` rows as tab-separated columns (the plain format prints pids as `close_connection` takes them). */
const rows = (...args: ReadonlyArray<string>) =>
  Effect.map(
    rabbitmqctl(...args, "--quiet", "--no-table-headers"),
    (out) => out.split("\n").filter((line) => line.trim().length > 0).map((line) => line.split("\t"))
  )

/** The pids of the connections a client opened with `connection_name` = `clientName`. */
export const connectionsNamed = (clientName: string) =>
  Effect.map(
    rows("list_connections", "pid", "client_properties"),
    (lines) =>
      lines.filter(([, properties]) => properties?.includes(`{"connection_name","${clientName}"}`)).map(([pid]) => pid!)
  )

/** Closes, from the broker side, every connection the client named `clientName`. */
export const closeConnectionsNamed = (clientName: string) =>
  Effect.gen(function*() {
    const pids = yield* connectionsNamed(clientName)
    for (const pid of pids) yield* rabbitmqctl("close_connection", pid, "test: closed by the broker")
    return pids.length
  })

/** Channels open on the connections named `clientName`. */
export const channelsOf = (clientName: string) =>
  Effect.gen(function*() {
    const pids = new Set(yield* connectionsNamed(clientName))
    const channels = yield* rows("list_channels", "connection")
    return channels.filter(([pid]) => pids.has(pid!)).length
  })

export interface QueueCounts {
  readonly ready: number
  readonly unacked: number
  readonly consumers: number
}

/** Ready and unacknowledged messages and consumers of a queue, as the broker counts them. */
export const queueCounts = (queue: string) =>
  Effect.gen(function*() {
    const rows = yield* json<ReadonlyArray<{ name: string; messages_ready: number; messages_unacknowledged: number; consumers: number }>>(
      ["list_queues", "name", "messages_ready", "messages_unacknowledged", "consumers"]
    )
    const row = rows.find((r) => r.name === queue)
    if (row === undefined) return yield* Effect.die(new Error(`queue ${queue} does not exist`))
    return { ready: row.messages_ready, unacked: row.messages_unacknowledged, consumers: row.consumers } satisfies QueueCounts
  })

/** The consumers of a queue, or undefined while the queue does not exist. */
export const consumersOf = (queue: string) =>
  Effect.map(
    json<ReadonlyArray<{ name: string; consumers: number }>>(["list_queues", "name", "consumers"]),
    (rows) => rows.find((r) => r.name === queue)?.consumers
  )

/** Polls until `check` holds (or dies after `timeoutMs`). */
export const eventually = <A>(
  what: string,
  read: Effect.Effect<A>,
  check: (a: A) => boolean,
  timeoutMs = 20_000,
  intervalMs = 100
) =>
  Effect.gen(function*() {
    const deadline = Date.now() + timeoutMs
    let last: A = yield* read
    while (!check(last)) {
      if (Date.now() > deadline) {
        return yield* Effect.die(new Error(`timed out waiting for ${what}; last value: ${JSON.stringify(last)}`))
      }
      yield* Effect.sleep(intervalMs)
      last = yield* read
    }
    return last
  })

export interface Admin {
  /**
   * A unique queue name; the queue (and the `.retry` and `.dlq` queues a
   * consumer may add) are deleted when the scope closes. With `options` the
   * queue is declared now; without, the consumer under test declares it.
   */
  readonly queue: (
    prefix: string,
    options?: amqp.Options.AssertQueue
  ) => Effect.Effect<string, never, Scope.Scope>
  /** A unique exchange name; the exchange is deleted when the scope closes. */
  readonly exchange: (prefix: string) => Effect.Effect<string, never, Scope.Scope>
  /** Declares the queues of a topology the way the worker does. */
  readonly declare: (topology: Topology.Topology) => Effect.Effect<void>
  /** Publishes persistent messages and waits for the broker's confirms. */
  readonly publish: (
    queue: string,
    messages: ReadonlyArray<{ readonly body: string | Buffer; readonly options?: amqp.Options.Publish }>
  ) => Effect.Effect<void>
  /** Publishes tasks `{ id }` with `messageId` = id. */
  readonly publishTasks: (queue: string, ids: ReadonlyArray<string>) => Effect.Effect<void>
  /** Takes every message now ready in the queue (and acks them). */
  readonly drainQueue: (queue: string) => Effect.Effect<ReadonlyArray<amqp.GetMessage>>
  /** Messages ready in the queue (queue.declare passive). */
  readonly ready: (queue: string) => Effect.Effect<number>
  /** Messages ready in the queue, or undefined while it does not exist (on a channel of its own: a 404 closes it). */
  readonly readyIfExists: (queue: string) => Effect.Effect<number | undefined>
  readonly deleteQueue: (queue: string) => Effect.Effect<void>
  readonly channel: amqp.ConfirmChannel
  readonly connection: amqp.ChannelModel
}

/** A connection for the test itself, closed when the scope closes. */
export const admin: Effect.Effect<Admin, never, Scope.Scope> = Effect.gen(function*() {
  const connection = yield* Effect.acquireRelease(
    Effect.promise(() => connectAny({ clientProperties: { connection_name: "test-admin" } })),
    (c) => Effect.promise(() => c.close().catch(() => undefined))
  )
  connection.on("error", () => {})
  const channel = yield* Effect.promise(() => connection.createConfirmChannel())
  channel.on("error", () => {})

  const publish: Admin["publish"] = (queue, messages) =>
    Effect.promise(async () => {
      for (const message of messages) {
        channel.sendToQueue(queue, typeof message.body === "string" ? Buffer.from(message.body) : message.body, {
          persistent: true,
          ...message.options
        })
      }
      await channel.waitForConfirms()
    })

  // Clean-up uses a connection of its own: a test may have closed the
  // admin's (broker restart, close_all_connections).
  const onFreshChannel = (f: (channel: amqp.Channel) => Promise<unknown>) =>
    Effect.promise(async () => {
      const c = await connectAny()
      c.on("error", () => {})
      const ch = await c.createChannel()
      ch.on("error", () => {})
      await f(ch).catch(() => undefined)
      await c.close().catch(() => undefined)
    })
  const deleteQueue = (queue: string) => onFreshChannel((ch) => ch.deleteQueue(queue))

  return {
    channel,
    connection,
    queue: (prefix, options) =>
      Effect.acquireRelease(
        Effect.promise(async () => {
          const name = uniqueName(prefix)
          if (options !== undefined) await channel.assertQueue(name, { durable: true, ...options })
          return name
        }),
        (name) => Effect.forEach([name, `${name}.retry`, `${name}.dlq`, `${name}.done`], deleteQueue, { discard: true })
      ),
    exchange: (prefix) =>
      Effect.acquireRelease(
        Effect.sync(() => uniqueName(prefix)),
        (name) => onFreshChannel((ch) => ch.deleteExchange(name))
      ),
    declare: (topology) =>
      Effect.promise(async () => {
        for (const queue of topology.queues) {
          await channel.assertQueue(queue.name, { durable: true, arguments: Topology.queueArguments(queue) })
        }
      }),
    publish,
    publishTasks: (queue, ids) =>
      publish(queue, ids.map((id) => ({ body: JSON.stringify({ id }), options: { messageId: id } }))),
    drainQueue: (queue) =>
      Effect.promise(async () => {
        const out: Array<amqp.GetMessage> = []
        while (true) {
          const message = await channel.get(queue, { noAck: true })
          if (message === false) return out
          out.push(message)
        }
      }),
    ready: (queue) => Effect.promise(() => channel.checkQueue(queue).then((q) => q.messageCount)),
    readyIfExists: (queue) =>
      Effect.promise(async () => {
        const ch = await connection.createChannel()
        ch.on("error", () => {})
        const count = await ch.checkQueue(queue).then((q) => q.messageCount, () => undefined)
        if (count !== undefined) await ch.close().catch(() => undefined)
        return count
      }),
    deleteQueue
  }
})
