/**
 * `npm run bench`: the measurements behind the README's figures.
 *
 * 1. Consumer throughput, side by side and alternating: each client consumes
 *    the same pre-filled queue of small JSON messages at the same prefetch, in
 *    a process of its own (bench/client.ts). Medians of msgs/s and of the
 *    client's own CPU time per message, and ratios to raw amqplib.
 * 1b. The worker's real path, the same way: consume a task, publish a
 *    persistent result to a durable queue and wait for its confirm, then ack.
 * 1c. Confirmed publishing alone: persistent publishes to a durable queue,
 *    each awaited, with 100 and with 1,000 in flight.
 * 1d. The real path as users run it in production: RabbitMQ 4.3 and quorum
 *    queues, on one node and on a three-node cluster (those of
 *    `scripts/rabbitmq4.sh up`, or `BENCH_AMQP4_URL` and `BENCH_CLUSTER_URL`;
 *    each skipped, and said so, when nothing answers).
 * 2. Recovery: from a server-side connection close (rabbitmqctl) to the next
 *    message handled, over repeated faults, against the backoff base delay.
 * 3. Shutdown drain: from SIGTERM to exit of the worker process with 100
 *    messages in flight, against the handlers' duration.
 * 4. Memory: RSS, heap and open handles after 10 and after 500 forced
 *    reconnects (a TCP proxy resets the connection).
 *
 * 1, 1b and 1c also run raw amqplib made to do on the wire what this project
 * does (see `clients`): the ceiling for a client with its guarantees. With the
 * broker's CPU a message beside each client's, and the estimate of a client
 * that cost no CPU (`freeClient`), they show how much of a gap is the client
 * and how much the broker.
 *
 * Results go to bench/results/latest.json and bench/results/bench.svg.
 * `--quick` runs a smaller version (for a smoke test); `--only=work,cluster`
 * runs some parts only (results then go to bench/results/partial.json).
 */
import { execFileSync, spawn } from "node:child_process"
import { cpus, totalmem } from "node:os"
import { readFileSync, writeFileSync } from "node:fs"
import * as net from "node:net"
import { fileURLToPath } from "node:url"
import * as amqp from "amqplib"
import { Effect, Layer, Redacted, References, Schema, Stream } from "effect"
import * as Consumer from "../src/Consumer.ts"
import { queuesOf } from "../src/internal/queues.ts"
import * as Outcome from "../src/Outcome.ts"
import * as Topology from "../src/Topology.ts"
import * as Worker from "../src/Worker.ts"
import { chart, type Results } from "./chart.ts"
import { cpuMicros, workerArgs } from "./proc.ts"

const quick = process.argv.includes("--quick")
const only = process.argv.find((arg) => arg.startsWith("--only="))?.slice("--only=".length).split(",")
const runs = (part: string) => only === undefined || only.includes(part)
const BROKER_URL = process.env.AMQP_URL ?? "amqp://guest:guest@127.0.0.1:5672"
/** A RabbitMQ 4.x node for the quorum-queue part (`scripts/rabbitmq4.sh up` starts one on 5680). */
const BROKER4_URL = process.env.BENCH_AMQP4_URL ?? "amqp://guest:guest@127.0.0.1:5680"
/** A node of a RabbitMQ 4.x cluster (`scripts/rabbitmq4.sh up` starts three, on 5681-5683). */
const CLUSTER_URL = process.env.BENCH_CLUSTER_URL ?? "amqp://guest:guest@127.0.0.1:5681"
const root = fileURLToPath(new URL("..", import.meta.url))
const config = {
  // 200,000 (a run of 4-6 s), not 50,000: a run of about a second measured
  // mostly the warm-up (compiling the hot path, the first collections),
  // which a worker pays once at start; for this project about 130-150 ms of
  // CPU more than for raw amqplib (README, Benchmarks).
  messages: quick ? 5_000 : 200_000,
  tasks: quick ? 2_000 : 20_000,
  publishes: quick ? 10_000 : 100_000,
  inFlight: [100, 1000],
  prefetch: 100,
  // A multiple of the number of clients: with the order rotated, each client
  // runs in each position equally often. Ten rounds, because single runs on a
  // shared machine vary by ±15%.
  rounds: quick ? 1 : 10,
  workRounds: quick ? 1 : 14,
  quorumRounds: quick ? 1 : 7,
  publishRounds: quick ? 1 : 5,
  faults: quick ? 3 : 20,
  drains: quick ? 1 : 3,
  reconnects: quick ? 40 : 500
}
const peers = ["amqplib", "effect-rabbitmq-worker", "amqp-connection-manager", "rabbitmq-client"]
/**
 * Each scenario's clients: the peers, and raw amqplib made to do what this
 * project does on the wire (the ceiling for a client with its guarantees):
 * batched acks for consuming; batched acks, coalesced writes and mandatory
 * results for the real path; mandatory for publishing. On the real path and in
 * publishing also that ceiling with each task or publish in an Effect fiber
 * (`amqplib-effect`: the floor of any Effect client there). Raw amqplib stays
 * the reference of every ratio.
 */
const clients = {
  consume: ["amqplib", "amqplib-batched", ...peers.slice(1)],
  work: ["amqplib", "amqplib-batched", "amqplib-effect", ...peers.slice(1), "example-worker"],
  publish: ["amqplib", "amqplib-mandatory", "amqplib-effect", ...peers.slice(1)]
}

const log = (line: string) => console.log(`[bench] ${line}`)
const median = (values: ReadonlyArray<number>) => {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}
const percentile = (values: ReadonlyArray<number>, p: number) => {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!
}
const round = (n: number, digits = 0) => Math.round(n * 10 ** digits) / 10 ** digits
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))
const quietLogs = Layer.succeed(References.MinimumLogLevel, "Error")

const withChannel = async <A>(f: (channel: amqp.ConfirmChannel) => Promise<A>, url = BROKER_URL): Promise<A> => {
  const connection = await amqp.connect(url)
  connection.on("error", () => {})
  try {
    const channel = await connection.createConfirmChannel()
    channel.on("error", () => {})
    return await f(channel)
  } finally {
    await connection.close().catch(() => undefined)
  }
}

/**
 * `f`, tried again when it fails (up to 5 times, 2 s apart; each try starts
 * over on a new connection). A quorum queue declared again right after it
 * was deleted can be refused while the deleted queue's Raft members still
 * stop: on the three-node cluster, `internal_error ... cluster_not_formed`,
 * and the broker closes the connection.
 */
const retrying = async <A>(what: string, f: () => Promise<A>): Promise<A> => {
  for (let attempt = 1;; attempt++) {
    try {
      return await f()
    } catch (error) {
      if (attempt >= 5) throw error
      log(`${what} failed (${error instanceof Error ? error.message : String(error)}); again in 2 s`)
      await sleep(2_000)
    }
  }
}

const deleteQueues = (...queues: ReadonlyArray<string>) => deleteQueuesOn(BROKER_URL, queues)

const deleteQueuesOn = (url: string, queues: ReadonlyArray<string>) =>
  withChannel(async (channel) => {
    for (const queue of queues) await channel.deleteQueue(queue).catch(() => undefined)
  }, url)

const body = Buffer.from(JSON.stringify({ id: "task-000000000000", n: 12345, tags: ["a", "b", "c"], ok: true }))

/**
 * A fresh durable queue holding `count` messages (`unique`: each its own task
 * id, as real tasks have), declared with `args` (the example worker's queue
 * has its own: it stops on a queue declared otherwise).
 */
const fill = (queue: string, count: number, unique = false, args: Record<string, unknown> = {}, url = BROKER_URL) =>
  retrying(`filling ${queue}`, () =>
    withChannel(async (channel) => {
      await channel.deleteQueue(queue).catch(() => undefined)
      await channel.assertQueue(queue, { durable: true, arguments: args })
      for (let i = 0; i < count; i++) {
        const content = unique ? Buffer.from(JSON.stringify({ id: `task-${i}`, n: i, tags: ["a", "b", "c"], ok: true })) : body
        if (!channel.sendToQueue(queue, content, { messageId: String(i), persistent: false })) {
          await new Promise((resolve) => channel.once("drain", resolve))
        }
      }
      await channel.waitForConfirms()
    }, url))

/** A fresh, empty durable queue. */
const emptyQueue = (queue: string, args: Record<string, unknown> = {}, url = BROKER_URL) =>
  retrying(`declaring ${queue}`, () =>
    withChannel(async (channel) => {
      await channel.deleteQueue(queue).catch(() => undefined)
      await channel.assertQueue(queue, { durable: true, arguments: args })
    }, url))

/**
 * The broker's CPU time so far in µs, when it runs on this machine (the node
 * whose `status` the command prints): each client's run is charged the
 * broker's work too, which the clients change (batched acks spare it,
 * `mandatory` adds).
 */
const brokerCpuOf = (...commands: ReadonlyArray<readonly [string, ReadonlyArray<string>]>): (() => number | undefined) => {
  const pids: Array<number> = []
  for (const [command, args] of commands) {
    try {
      const found = /OS PID: (\d+)/.exec(execFileSync(command, args, { encoding: "utf8", timeout: 30_000, cwd: root }))?.[1]
      if (found !== undefined) pids.push(Number(found))
    } catch {
      // Not on this machine, or not answering: the broker's CPU is not known.
    }
  }
  // Every node, or nothing: a part of the broker's CPU would mislead.
  if (pids.length < commands.length) return () => undefined
  return () => {
    try {
      return pids.reduce((sum, pid) => sum + cpuMicros(pid), 0)
    } catch {
      return undefined
    }
  }
}

/** Where a client runs: the broker, its queues' type, and how to read the broker's CPU. */
interface Target {
  readonly url: string
  readonly queueType: "classic" | "quorum"
  readonly brokerCpu: () => number | undefined
}

const classic: Target = { url: BROKER_URL, queueType: "classic", brokerCpu: brokerCpuOf(["rabbitmqctl", ["status"]]) }

const freePort = () =>
  new Promise<number>((resolve) => {
    const server = net.createServer()
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      server.close(() => resolve(typeof address === "object" && address !== null ? address.port : 0))
    })
  })

interface ClientRun {
  readonly seconds: number
  readonly cpuMicrosPerMessage: number
  /** The broker's CPU over the client's whole run (connect to close), a message; undefined when it is not on this machine. */
  readonly brokerCpuMicrosPerMessage: number | undefined
}

const runClient = async (
  scenario: string,
  client: string,
  queue: string,
  count: number,
  parameter: number,
  target: Target = classic
) => {
  const port = await freePort()
  return new Promise<ClientRun>((resolve, reject) => {
    const brokerBefore = target.brokerCpu()
    const child = spawn(process.execPath, ["bench/client.ts", scenario, client, queue, String(count), String(parameter)], {
      cwd: root,
      // Where the example worker serves its health and metrics.
      env: { ...process.env, BENCH_HTTP_PORT: String(port), AMQP_URL: target.url, BENCH_QUEUE_TYPE: target.queueType },
      stdio: ["ignore", "pipe", "inherit"]
    })
    let out = ""
    child.stdout.on("data", (chunk: Buffer) => (out += chunk.toString()))
    const timer = setTimeout(() => child.kill("SIGKILL"), 120_000)
    child.on("exit", (code) => {
      clearTimeout(timer)
      const line = out.trim().split("\n").pop() ?? ""
      if (code !== 0) return reject(new Error(`${client} exited ${code}: ${out}`))
      const brokerAfter = target.brokerCpu()
      const measured = JSON.parse(line) as { seconds: number; cpuMicrosPerMessage: number }
      resolve({
        ...measured,
        brokerCpuMicrosPerMessage: brokerBefore === undefined || brokerAfter === undefined
          ? undefined
          : (brokerAfter - brokerBefore) / count
      })
    })
  })
}

// ---------------------------------------------------------------------------
// 1. Throughput
// ---------------------------------------------------------------------------

const throughput = async () => {
  const queue = "bench-throughput"
  const results = await rotate("consume", clients.consume, config.rounds, config.messages, async (client) => {
    await fill(queue, config.messages)
    return runClient("consume", client, queue, config.messages, config.prefetch)
  })
  await deleteQueues(queue, `${queue}.dlq`)
  return { messages: config.messages, prefetch: config.prefetch, rounds: config.rounds, ...results }
}

/** One client's run in a round. */
interface Sample {
  readonly round: number
  readonly client: string
  readonly msgsPerSec: number
  readonly cpuMicrosPerMessage: number
  readonly brokerCpuMicrosPerMessage?: number
}

/** Medians per client and their ratios to raw amqplib. */
const summarize = (
  names: ReadonlyArray<string>,
  samples: ReadonlyArray<Sample>
) => {
  const medians = names.map((client) => {
    const mine = samples.filter((run) => run.client === client)
    const broker = mine.flatMap((run) => run.brokerCpuMicrosPerMessage === undefined ? [] : [run.brokerCpuMicrosPerMessage])
    return {
      client,
      medianMsgsPerSec: round(median(mine.map((run) => run.msgsPerSec))),
      medianCpuMicrosPerMessage: round(median(mine.map((run) => run.cpuMicrosPerMessage)), 1),
      ...(broker.length === mine.length ? { medianBrokerCpuMicrosPerMessage: round(median(broker), 1) } : {})
    }
  })
  const raw = medians.find((m) => m.client === "amqplib")!
  return Object.fromEntries(medians.map(({ client, ...m }) => [client, {
    ...m,
    ratioToRaw: round(m.medianMsgsPerSec / raw.medianMsgsPerSec, 2),
    cpuRatioToRaw: round(m.medianCpuMicrosPerMessage / raw.medianCpuMicrosPerMessage, 2)
  }]))
}

/**
 * What a client that cost no CPU would reach, estimated from the run: a
 * least-squares line through each client's median msgs/s against its median
 * CPU a message, taken at zero CPU. On two cores shared with the broker the
 * client's CPU is what throughput is traded for; where the line meets zero
 * is the broker's own limit on this machine (an estimate: the clients also
 * differ a little in the broker's work, e.g. batched acks and mandatory).
 */
const freeClient = (summary: ReturnType<typeof summarize>) => {
  const points = Object.values(summary).map((s) => [s.medianCpuMicrosPerMessage, s.medianMsgsPerSec] as const)
  const mean = (values: ReadonlyArray<number>) => values.reduce((a, b) => a + b, 0) / values.length
  const x = mean(points.map(([cpu]) => cpu))
  const y = mean(points.map(([, rate]) => rate))
  const sxx = points.reduce((sum, [cpu]) => sum + (cpu - x) ** 2, 0)
  const sxy = points.reduce((sum, [cpu, rate]) => sum + (cpu - x) * (rate - y), 0)
  if (points.length < 3 || sxx === 0 || sxy >= 0) return undefined
  const slope = sxy / sxx
  const msgsPerSec = y - slope * x
  return {
    msgsPerSec: round(msgsPerSec),
    ratioToRaw: round(msgsPerSec / summary["amqplib"]!.medianMsgsPerSec, 2),
    /** msgs/s gained for each µs of client CPU a message saved. */
    msgsPerSecPerMicrosecond: round(-slope)
  }
}

/** Rounds of `run` over `names`, each round starting with another client, so that none always runs first. */
const rotate = async (
  label: string,
  names: ReadonlyArray<string>,
  rounds: number,
  count: number,
  run: (client: string) => Promise<ClientRun>
) => {
  const samples: Array<Sample> = []
  for (let r = 0; r < rounds; r++) {
    const order = names.map((_, i) => names[(i + r) % names.length]!)
    for (const client of order) {
      const result = await run(client)
      const msgsPerSec = count / result.seconds
      const broker = result.brokerCpuMicrosPerMessage
      samples.push({
        round: r + 1,
        client,
        msgsPerSec: round(msgsPerSec),
        cpuMicrosPerMessage: round(result.cpuMicrosPerMessage, 1),
        ...(broker === undefined ? {} : { brokerCpuMicrosPerMessage: round(broker, 1) })
      })
      log(`${label} round ${r + 1} ${client}: ${round(msgsPerSec)} msgs/s, ${round(result.cpuMicrosPerMessage, 1)} µs CPU/msg${
        broker === undefined ? "" : `, broker ${round(broker, 1)} µs/msg`
      }`)
    }
  }
  const summary = summarize(names, samples)
  return { runs: samples, summary, freeClient: freeClient(summary) }
}

// ---------------------------------------------------------------------------
// 1b. The real path: consume, publish a confirmed result, ack
// ---------------------------------------------------------------------------

/** The arguments the example worker (src/main.ts, default settings) declares its task queue with. */
const exampleQueueArguments = (queue: string, type: Target["queueType"]) =>
  Topology.queueArguments(queuesOf(queue, Outcome.retry({ maxAttempts: 5, delay: "5 seconds" }), { type }).queues[0]!)

/** The real path's rounds on `target`: every client, a fresh queue of tasks each run. */
const realPathOn = async (label: string, target: Target, rounds: number) => {
  const queue = "bench-work"
  const typed = target.queueType === "quorum" ? { "x-queue-type": "quorum" } : {}
  const results = await rotate(label, clients.work, rounds, config.tasks, async (client) => {
    await fill(queue, config.tasks, true, client === "example-worker" ? exampleQueueArguments(queue, target.queueType) : typed, target.url)
    await emptyQueue(`${queue}.done`, typed, target.url)
    return runClient("work", client, queue, config.tasks, config.prefetch, target)
  })
  await deleteQueuesOn(target.url, [queue, `${queue}.done`, `${queue}.dlq`, `${queue}.retry`, `${queue}.retry.5000ms`])
  return { tasks: config.tasks, prefetch: config.prefetch, rounds, ...results }
}

const realPath = () => realPathOn("work", classic, config.workRounds)

// ---------------------------------------------------------------------------
// 1d. The real path on RabbitMQ 4.3 with quorum queues
// ---------------------------------------------------------------------------

/**
 * The real path where users run it: RabbitMQ 4.x and quorum queues (each
 * publish a Raft write, confirmed once the log is on disk; on a cluster,
 * once a majority of the nodes has it). The broker shares the machine, as in
 * the other parts (on the cluster, all three nodes do). Skipped when no 4.x
 * broker answers at `url` (`bash scripts/rabbitmq4.sh up` starts them). The
 * clients connect to one node, where the queues' leaders then are.
 */
const quorumPath = async (label: string, url: string, nodes: ReadonlyArray<string> | undefined) => {
  const version = await amqp.connect(url, { timeout: 5_000 }).then(
    async (connection) => {
      const version = String(connection.connection.serverProperties.version ?? "unknown")
      await connection.close()
      return version
    },
    () => undefined
  )
  if (version === undefined) {
    const reason = `no RabbitMQ 4.x answers at ${url.replace(/\/\/[^@]*@/, "//")} (bash scripts/rabbitmq4.sh up starts one)`
    log(`${label}: skipped: ${reason}`)
    return { skipped: reason }
  }
  const target: Target = {
    url,
    queueType: "quorum",
    // The chroot's nodes at the default addresses; elsewhere the broker's CPU is not known.
    brokerCpu: nodes === undefined
      ? () => undefined
      : brokerCpuOf(...nodes.map((node) => ["bash", ["scripts/rabbitmq4.sh", "ctl", node, "status"]] as const))
  }
  return { rabbitmq: version, nodes: nodes?.length, ...(await realPathOn(label, target, config.quorumRounds)) }
}

const quorumNode = () =>
  quorumPath("work on RabbitMQ 4.3, quorum queues", BROKER4_URL, process.env.BENCH_AMQP4_URL === undefined ? ["single"] : undefined)

const quorumCluster = () =>
  quorumPath(
    "work on a RabbitMQ 4.3 cluster, quorum queues",
    CLUSTER_URL,
    process.env.BENCH_CLUSTER_URL === undefined ? ["a", "b", "c"] : undefined
  )

// ---------------------------------------------------------------------------
// 1c. Confirmed publishing alone
// ---------------------------------------------------------------------------

const publishing = async () => {
  const queue = "bench-publish"
  const byInFlight: Record<string, unknown> = {}
  for (const inFlight of config.inFlight) {
    byInFlight[String(inFlight)] = await rotate(`publish (${inFlight} in flight)`, clients.publish, config.publishRounds, config.publishes, async (client) => {
      await emptyQueue(queue)
      return runClient("publish", client, queue, config.publishes, inFlight)
    })
  }
  await deleteQueues(queue)
  return { publishes: config.publishes, rounds: config.publishRounds, inFlight: byInFlight }
}

// ---------------------------------------------------------------------------
// 2. Recovery after a server-side connection close
// ---------------------------------------------------------------------------

const rabbitmqctl = (...args: ReadonlyArray<string>) =>
  execFileSync("rabbitmqctl", [...args], { encoding: "utf8", timeout: 30_000 })

const closeConnectionsNamed = (name: string) => {
  const lines = rabbitmqctl("list_connections", "pid", "client_properties", "--quiet", "--no-table-headers").split("\n")
  for (const line of lines) {
    const [pid, properties] = line.split("\t")
    if (pid && properties?.includes(`{"connection_name","${name}"}`)) rabbitmqctl("close_connection", pid, "bench fault")
  }
}

const Task = Schema.Struct({ id: Schema.String, n: Schema.Number, tags: Schema.Array(Schema.String), ok: Schema.Boolean })

const recovery = async () => {
  const queue = "bench-recovery"
  const name = `bench-recovery-${process.pid}`
  const base = 200
  await deleteQueues(queue, `${queue}.dlq`)
  let lastHandledAt = 0
  const handledAt: Array<number> = []
  const lostAt: Array<number> = []
  const consumer = Consumer.make({
    queue,
    schema: Task,
    onFailure: "reject",
    handler: () =>
      Effect.sync(() => {
        lastHandledAt = performance.now()
        handledAt.push(lastHandledAt)
      })
  })
  const samples: Array<number> = []
  await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const worker = yield* Worker.make({
      connection: { url: Redacted.make(BROKER_URL), name },
      // Reset after 1 s up, so that every fault starts from the base delay.
      reconnect: { base: `${base} millis`, max: "30 seconds", healthyAfter: "1 second" }
    }, [consumer])
    yield* Effect.forkScoped(Stream.runForEach(worker.changes, (status) =>
      Effect.sync(() => {
        if (status.connection === "reconnecting" && status.attempt === 1) lostAt.push(performance.now())
      })))
    yield* worker.awaitReady
    // A steady stream of work: a message every 5 ms.
    let publishing = true
    const publisher = withChannel(async (channel) => {
      for (let i = 0; publishing; i++) {
        channel.sendToQueue(queue, body, { messageId: `r${i}` })
        await sleep(5)
      }
    })
    for (let i = 0; i < config.faults; i++) {
      yield* Effect.sleep("1500 millis")
      const before = lostAt.length
      yield* Effect.sync(() => closeConnectionsNamed(name))
      while (lostAt.length === before) yield* Effect.sleep("10 millis")
      const lost = lostAt[lostAt.length - 1]!
      while (!(lastHandledAt > lost)) yield* Effect.sleep("10 millis")
      const first = handledAt.find((t) => t > lost)!
      samples.push(round(first - lost))
      log(`fault ${i + 1}: next message handled ${round(first - lost)} ms after the connection was lost`)
      yield* worker.awaitReady
    }
    publishing = false
    yield* Effect.promise(() => publisher)
  })).pipe(Effect.provide(quietLogs)))
  await deleteQueues(queue, `${queue}.dlq`)
  return { faults: samples.length, baseDelayMs: base, medianMs: median(samples), p95Ms: percentile(samples, 95), samples }
}

// ---------------------------------------------------------------------------
// 3. Shutdown drain of the worker process
// ---------------------------------------------------------------------------

const queueCounts = (queue: string) => {
  const line = rabbitmqctl("list_queues", "name", "messages_ready", "messages_unacknowledged", "--quiet", "--no-table-headers")
    .split("\n").find((l) => l.split("\t")[0] === queue)
  const [, ready, unacked] = line?.split("\t") ?? []
  return { ready: Number(ready ?? 0), unacked: Number(unacked ?? 0) }
}

const shutdown = async () => {
  const workMs = 3000
  const samples: Array<{ drainMs: number; handlersStartedMsBeforeSignal: number; handledBeforeExit: number }> = []
  for (let i = 0; i < config.drains; i++) {
    const queue = `bench-drain-${i}`
    await deleteQueues(queue, `${queue}.retry`, `${queue}.retry.5000ms`, `${queue}.dlq`, `${queue}.done`)
    const child = spawn(process.execPath, workerArgs(), {
      cwd: root,
      env: {
        ...process.env,
        AMQP_QUEUE: queue,
        WORK_MS: String(workMs),
        AMQP_PREFETCH: "100",
        SHUTDOWN_GRACE_MS: "10000",
        LOG_FORMAT: "json",
        HTTP_PORT: String(await freePort())
      },
      stdio: ["ignore", "pipe", "inherit"]
    })
    let out = ""
    child.stdout!.on("data", (chunk: Buffer) => (out += chunk.toString()))
    const exited = new Promise<number | null>((resolve) => child.on("exit", resolve))
    while (!out.includes("consuming from")) await sleep(20)
    await withChannel(async (channel) => {
      for (let m = 0; m < 100; m++) channel.sendToQueue(queue, Buffer.from(JSON.stringify({ id: `d${m}` })), { messageId: `d${m}` })
      await channel.waitForConfirms()
    })
    const publishedAt = performance.now()
    while (queueCounts(queue).unacked < 100) await sleep(50)
    const signalAt = performance.now()
    child.kill("SIGTERM")
    const code = await exited
    const drainMs = round(performance.now() - signalAt)
    const handled = out.split("\n").filter((line) => line.includes("handled task")).length
    if (code !== 0) throw new Error(`worker exited ${code}`)
    samples.push({ drainMs, handlersStartedMsBeforeSignal: round(signalAt - publishedAt), handledBeforeExit: handled })
    log(`drain ${i + 1}: exit ${drainMs} ms after SIGTERM, ${handled}/100 in-flight handled and acked (handlers take ${workMs} ms)`)
    await deleteQueues(queue, `${queue}.retry`, `${queue}.retry.5000ms`, `${queue}.dlq`, `${queue}.done`)
  }
  return { inFlight: 100, handlerMs: workMs, medianDrainMs: median(samples.map((s) => s.drainMs)), samples }
}

// ---------------------------------------------------------------------------
// 4. Memory over forced reconnects
// ---------------------------------------------------------------------------

const memory = async () => {
  const gc = (globalThis as { gc?: () => void }).gc
  if (gc === undefined) throw new Error("run with node --expose-gc (npm run bench does)")
  const queue = "bench-memory"
  const sockets = new Set<net.Socket>()
  const proxy = net.createServer((client) => {
    const upstream = net.connect(5672, "127.0.0.1")
    sockets.add(client).add(upstream)
    client.pipe(upstream).pipe(client)
    const forget = () => {
      sockets.delete(client)
      sockets.delete(upstream)
      client.destroy()
      upstream.destroy()
    }
    client.on("error", forget).on("close", forget)
    upstream.on("error", forget).on("close", forget)
  })
  const port = await new Promise<number>((resolve) =>
    proxy.listen(0, "127.0.0.1", () => resolve((proxy.address() as net.AddressInfo).port))
  )
  const consumer = Consumer.make({ queue, schema: Task, onFailure: "reject", handler: () => Effect.void })
  const measure = () => {
    gc()
    const usage = process.memoryUsage()
    return {
      rssMiB: round(usage.rss / 2 ** 20, 1),
      heapUsedMiB: round(usage.heapUsed / 2 ** 20, 1),
      activeResources: process.getActiveResourcesInfo().length
    }
  }
  const points: Array<{ reconnects: number; rssMiB: number; heapUsedMiB: number; activeResources: number }> = []
  await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const worker = yield* Worker.make({
      connection: { url: Redacted.make(`amqp://guest:guest@127.0.0.1:${port}`) },
      reconnect: { base: "5 millis", max: "20 millis", healthyAfter: "1 millis" }
    }, [consumer])
    yield* worker.awaitReady
    for (let i = 1; i <= config.reconnects; i++) {
      for (const socket of sockets) socket.destroy()
      yield* Stream.runHead(Stream.filter(worker.changes, (s) => s.connection !== "connected"))
      yield* worker.awaitReady
      if (i === 10 || i === config.reconnects) {
        // Let closing sockets finish before counting.
        yield* Effect.sleep("200 millis")
        points.push({ reconnects: i, ...measure() })
        log(`after ${i} reconnects: ${JSON.stringify(points[points.length - 1])}`)
      }
    }
  })).pipe(Effect.provide(quietLogs)))
  proxy.close()
  await deleteQueues(queue, `${queue}.dlq`)
  const [first, last] = [points[0]!, points[points.length - 1]!]
  return {
    points,
    rssGrowthMiB: round(last.rssMiB - first.rssMiB, 1),
    heapGrowthMiB: round(last.heapUsedMiB - first.heapUsedMiB, 1),
    activeResourcesGrowth: last.activeResources - first.activeResources
  }
}

// ---------------------------------------------------------------------------

const version = (pkg: string) =>
  (JSON.parse(readFileSync(fileURLToPath(new URL(`../node_modules/${pkg}/package.json`, import.meta.url)), "utf8")) as {
    version: string
  }).version

const rabbitVersion = () => /RabbitMQ version: ([\d.]+)/.exec(rabbitmqctl("status"))?.[1] ?? "unknown"

log(`config: ${JSON.stringify(config)}`)
const results = {
  date: new Date().toISOString(),
  machine: {
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model ?? "unknown",
    memoryGiB: round(totalmem() / 2 ** 30, 1),
    node: process.version,
    platform: `${process.platform} ${process.arch}`
  },
  versions: {
    rabbitmq: rabbitVersion(),
    effect: version("effect"),
    amqplib: version("amqplib"),
    "amqp-connection-manager": version("amqp-connection-manager"),
    "rabbitmq-client": version("rabbitmq-client")
  },
  quick,
  throughput: runs("consume") ? await throughput() : undefined,
  realPath: runs("work") ? await realPath() : undefined,
  quorum: runs("quorum") ? await quorumNode() : undefined,
  cluster: runs("cluster") ? await quorumCluster() : undefined,
  publishing: runs("publish") ? await publishing() : undefined,
  recovery: runs("recovery") ? await recovery() : undefined,
  shutdown: runs("shutdown") ? await shutdown() : undefined,
  memory: runs("memory") ? await memory() : undefined
}

const out = only !== undefined ? "bench/results/partial" : quick ? "bench/results/quick" : "bench/results/latest"
writeFileSync(`${root}${out}.json`, JSON.stringify(results, null, 2) + "\n")
if (only === undefined) {
  // Every part ran: none is undefined.
  writeFileSync(`${root}${quick ? "bench/results/quick" : "bench/results/bench"}.svg`, chart(results as Results))
}
log(`written ${out}.json${only === undefined ? " and the chart" : ""}`)
if (results.throughput) console.table(results.throughput.summary)
if (results.realPath) console.table(results.realPath.summary)
if (results.quorum && "summary" in results.quorum) console.table(results.quorum.summary)
if (results.cluster && "summary" in results.cluster) console.table(results.cluster.summary)
if (results.publishing) for (const [n, r] of Object.entries(results.publishing.inFlight)) {
  log(`publishing, ${n} in flight`)
  console.table((r as { summary: unknown }).summary)
}
console.log(JSON.stringify({ recovery: results.recovery, shutdown: results.shutdown, memory: results.memory }, null, 2))
process.exit(0)
