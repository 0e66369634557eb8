/**
 * The zero-loss chaos run: N tasks published with confirms while two or more
 * worker processes (`node src/main.ts`) consume them, with faults injected at
 * random intervals (250-1000 ms apart):
 *
 * - `close`: the broker closes a worker's connection (rabbitmqctl);
 * - `pause`: a worker's network goes silent long enough for heartbeats to
 *   notice (its TCP proxy drops every byte), then comes back;
 * - `restart`: the broker stops and starts (stop_app, start_app);
 * - `channel`: the broker closes a worker's consumer channel with 406 (the
 *   proxy slips in an ack for a delivery tag that does not exist);
 * - `sigterm`: a worker is stopped gracefully and started again;
 * - `sigkill`: once per run, a worker is killed outright and started again.
 *
 * With `cluster` the workers run on the three-node RabbitMQ 4.3 cluster
 * (test/support/cluster.ts) with every address in `AMQP_URL` and quorum
 * queues, and the broker faults are the cluster's:
 *
 * - `node-stop`: one node's app stops for 5 s, then starts: first the leader
 *   of the main queue, then each other node in turn (so every queue's leader
 *   is stopped at least once), then random nodes;
 * - `node-kill`: once per run, a node's Erlang VM is killed (kill -9) and
 *   started again;
 * - `close`, `sigterm`, `sigkill` as above.
 *
 * A majority of nodes is up throughout, so handling must not stall: the
 * report has the longest gap between handled tasks (while tasks waited)
 * around each fault, and a cluster run fails on one over 5 s.
 *
 * Deleting the queue destroys its messages by definition, so the consumer
 * cancel is left to the integration tests.
 *
 * The run ends when every task was confirmed and the queue is empty with
 * nothing unacked. The report counts, from the workers' own logs and the
 * broker's records: lost tasks (must be 0), duplicates and the fault that
 * caused each one, and unexpected worker exits (must be 0).
 *
 * @since 0.1.0
 */
import { randomUUID } from "node:crypto"
import { Cause, Effect, Exit, Fiber, Redacted, Schema, Scope } from "effect"
import * as Worker from "../src/Worker.ts"
import * as broker from "../test/support/broker.ts"
import * as Cluster from "../test/support/cluster.ts"
import { messageText, spawnWorker, type WorkerProcess } from "../test/support/process.ts"
import * as Proxy from "../test/support/proxy.ts"
import * as Stalls from "./stalls.ts"

export type FaultKind = "close" | "pause" | "restart" | "channel" | "sigterm" | "sigkill" | "node-stop" | "node-kill"

/** The longest handling stall a cluster run accepts while a majority of nodes is up. */
export const maxStallMs = 5000

export interface ChaosOptions {
  readonly tasks: number
  readonly workers: number
  /** Tasks published per second. */
  readonly publishRate: number
  readonly prefetch: number
  /** Simulated work per task in the workers. */
  readonly workMs: number
  readonly faults: ReadonlyArray<FaultKind>
  /** On the three-node 4.3 cluster, with quorum queues (see the module's doc). */
  readonly cluster?: boolean | undefined
  /** Every `failEvery`-th task fails its first attempt, so retries go through the broker's retry queue. 0: none. */
  readonly failEvery?: number | undefined
  /** The workers' retry delay (RETRY_DELAY_MS). Default 5000. */
  readonly retryDelayMs?: number | undefined
  /** Gives up (and reports) after this long. */
  readonly timeoutMs: number
  readonly log: (line: string) => void
}

export interface Fault {
  readonly kind: FaultKind
  readonly worker: number | "all"
  readonly at: number
  readonly tookMs: number
  /** What it hit, when that says more than the worker (the node, and the queues it led). */
  readonly detail?: string | undefined
  /** Duplicates charged to this fault: it made the worker lose the ack of their first handling. */
  duplicates: number
  /** The longest gap between handled tasks, while tasks waited, from the fault until 10 s after it ended. */
  longestStallMs: number
  /** Of that, the longest part while the broker confirmed another client's publishes within a second: the workers' own stall. */
  longestWorkerStallMs: number
}

export interface ChaosReport {
  readonly tasks: number
  readonly confirmed: number
  readonly handled: number
  readonly distinctHandled: number
  readonly lost: ReadonlyArray<string>
  /** Handlings beyond one per task: from the results the broker holds, or the logs if they say more. */
  readonly duplicates: number
  /** Duplicates the workers' logs show. */
  readonly loggedDuplicates: number
  /** Of those, tasks the publisher sent twice (the first send was not confirmed). */
  readonly republishedDuplicates: number
  /** Of those, duplicates no fault explains (must be 0). */
  readonly unattributedDuplicates: number
  /** Channel errors (406) the workers logged. */
  readonly channelErrors: number
  /** Failed attempts the workers sent to the retry queue (tasks with `failAttempts`). */
  readonly retried: number
  readonly publishRetries: number
  readonly faults: ReadonlyArray<Fault>
  readonly faultCounts: Readonly<Record<string, { count: number; duplicates: number; maxDuplicates: number; longestStallMs: number; longestWorkerStallMs: number }>>
  /** The longest gap between handled tasks while tasks waited, over the whole run. */
  readonly longestStallMs: number
  /** Of that, the part while the broker served another client (see {@link Fault.longestWorkerStallMs}). */
  readonly longestWorkerStallMs: number
  /**
   * What happened around the longest stall (see {@link Stalls.story}): the
   * faults and the workers' log lines (all but those about one message) from 15 s
   * before it to its end, so that a long stall can be explained.
   */
  readonly longestStallStory: ReadonlyArray<string>
  /** The longest the broker kept the run's publisher waiting for a confirm (over 1 s), in ms. */
  readonly longestBrokerWithheldMs: number
  readonly unexpectedExits: ReadonlyArray<string>
  readonly final: { readonly ready: number; readonly unacked: number; readonly deadLettered: number; readonly retrying: number }
  readonly results: number
  readonly durationMs: number
  readonly ok: boolean
  readonly problems: ReadonlyArray<string>
}

const Task = Schema.Struct({ id: Schema.String, failAttempts: Schema.optional(Schema.Number) })

interface Handling {
  readonly id: string
  readonly at: number
  readonly worker: number
}

/** One worker slot: its proxy and its current process; restarts keep the slot. */
interface Slot {
  readonly index: number
  readonly name: string
  /** Its TCP proxy to the single broker; none on a cluster. */
  readonly proxy: Proxy.Proxy | undefined
  process: WorkerProcess
  scope: Scope.Closeable
  /** Incarnations whose logs are done (stopped or killed). */
  readonly past: Array<WorkerProcess>
  stopping: boolean
}

const random = (min: number, max: number) => min + Math.random() * (max - min)

export const run = (options: ChaosOptions): Effect.Effect<ChaosReport, never, Scope.Scope> =>
  Effect.gen(function*() {
    const startedAt = Date.now()
    const queue = `chaos-${randomUUID().slice(0, 8)}`
    const cluster = options.cluster === true
    const retryDelayMs = options.retryDelayMs ?? 5000
    // Where the example worker's retries wait.
    const retryQueue = `${queue}.retry.${retryDelayMs}ms`
    const queues = [queue, `${queue}.retry`, retryQueue, `${queue}.dlq`, `${queue}.done`]
    const { log } = options
    const unexpectedExits: Array<string> = []
    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        // Whatever happened, the broker runs when the run ends, and the queues go.
        yield* (cluster ? Cluster.up : broker.rabbitmqctl("start_app")).pipe(Effect.ignore)
        const admin = yield* broker.admin
        for (const name of queues) yield* admin.deleteQueue(name)
      }).pipe(Effect.scoped, Effect.ignore)
    )

    const env = (slot: { readonly name: string; readonly proxy: Proxy.Proxy | undefined }) => ({
      AMQP_URL: slot.proxy?.url ?? Cluster.URL,
      AMQP_QUEUE: queue,
      AMQP_QUEUE_TYPE: cluster ? "quorum" : "classic",
      RETRY_DELAY_MS: String(retryDelayMs),
      AMQP_CONNECTION_NAME: slot.name,
      AMQP_PREFETCH: String(options.prefetch),
      AMQP_HEARTBEAT_SECONDS: "1",
      RECONNECT_BASE_MS: "100",
      RECONNECT_MAX_MS: "1000",
      SHUTDOWN_GRACE_MS: "5000",
      WORK_MS: String(options.workMs),
      LOG_LEVEL: "Info"
    })

    const launch = (slot: { readonly name: string; readonly proxy: Proxy.Proxy | undefined }) =>
      Effect.gen(function*() {
        const scope = yield* Scope.make()
        const process = yield* spawnWorker(env(slot)).pipe(Scope.provide(scope))
        yield* process.waitFor("consuming", (logs) => logs.some((l) => /^consuming from/.test(messageText(l))), 30_000)
        return { process, scope }
      })

    const slots: Array<Slot> = []
    for (let index = 0; index < options.workers; index++) {
      const proxy = cluster ? undefined : yield* Proxy.make()
      const name = `${queue}-w${index}`
      const { process, scope } = yield* launch({ name, proxy })
      slots.push({ index, name, proxy, process, scope, past: [], stopping: false })
    }
    // A worker that exits without being told to is a crash.
    const watch = (slot: Slot) =>
      Effect.forkScoped(Effect.gen(function*() {
        const current = slot.process
        const code = yield* current.exit(24 * 3600_000)
        if (!slot.stopping && slot.process === current) {
          unexpectedExits.push(`worker ${slot.index} exited ${code} on its own`)
        }
      }))
    for (const slot of slots) yield* watch(slot)
    log(`${options.workers} workers consuming ${queue}`)

    // The publisher: every task is published until the broker confirms it.
    const publisherWorker = yield* Worker.make<never>({
      connection: { url: cluster ? Redacted.make(Cluster.URL) : broker.url, name: `${queue}-publisher` },
      reconnect: { base: "100 millis", max: "1 second" },
      publisher: { timeout: "3 seconds", maxWaiting: 10_000 }
    }, []).pipe(Effect.orDie)
    yield* publisherWorker.awaitReady
    let confirmed = 0
    let publishRetries = 0
    // Tasks sent but not confirmed (the connection went, or the confirm came
    // too late): published again, so they may be in the queue twice.
    const republished = new Set<string>()
    const ids = Array.from({ length: options.tasks }, (_, i) => `t${i}`)
    const failEvery = options.failEvery ?? 0
    const bodyOf = (id: string) => {
      const n = Number(id.slice(1))
      return failEvery > 0 && n % failEvery === 0 ? { id, failAttempts: 1 } : { id }
    }
    // When each confirm came: tasks waiting for a worker, for the stall measure.
    const confirmedAt: Array<number> = []
    // When the broker kept a publish waiting over a second for its confirm:
    // the broker itself was not serving, whatever the workers did.
    const brokerWithheld: Array<Stalls.Stall> = []
    const publishOne = (id: string): Effect.Effect<void> => {
      const sentAt = Date.now()
      const waited = () => {
        const now = Date.now()
        if (now - sentAt >= 1000) brokerWithheld.push({ from: sentAt, to: now })
      }
      return publisherWorker.publisher.publish({ routingKey: queue, schema: Task, body: bodyOf(id), messageId: id }).pipe(
        Effect.matchEffect({
          onSuccess: () => Effect.sync(() => {
            waited()
            confirmed++
            confirmedAt.push(Date.now())
          }),
          onFailure: (error) =>
            Effect.sync(() => {
              publishRetries++
              if (error._tag === "PublishUnconfirmed" || (error._tag === "PublishTimeout" && error.sent)) {
                waited()
                republished.add(id)
              }
            }).pipe(
              Effect.andThen(Effect.sleep("100 millis")),
              Effect.andThen(Effect.suspend(() => publishOne(id)))
            )
        })
      )
    }
    const publishing = yield* Effect.forkScoped(Effect.forEach(ids, (id, i) =>
      Effect.gen(function*() {
        // Paced: task i goes out at i / rate seconds.
        const due = startedAt + (i / options.publishRate) * 1000
        const wait = due - Date.now()
        if (wait > 0) yield* Effect.sleep(wait)
        yield* publishOne(id)
      }), { concurrency: 200, discard: true }))

    // Faults, one after another, 250-1000 ms apart, each kind at least once.
    const faults: Array<Fault> = []
    // Uninterruptible: when the faults stop in the middle of a restart, the
    // slot must not be left with its old process (its logs would be read twice).
    const restartSlot = (slot: Slot, signal: "SIGTERM" | "SIGKILL") =>
      Effect.uninterruptible(Effect.gen(function*() {
        slot.stopping = true
        const old = slot.process
        old.signal(signal)
        const code = yield* old.exit(30_000)
        if (signal === "SIGTERM" && code !== 0) unexpectedExits.push(`worker ${slot.index} exited ${code} after SIGTERM`)
        slot.past.push(old)
        yield* Scope.close(slot.scope, Exit.void)
        const next = yield* launch(slot)
        slot.process = next.process
        slot.scope = next.scope
        slot.stopping = false
        yield* watch(slot)
      }))
    // The cluster's nodes in the order node-stop takes them: the main queue's leader first.
    const stopOrder: Array<Cluster.NodeKey> = []
    const nodeFault = (kind: "node-stop" | "node-kill") =>
      Effect.gen(function*() {
        const led = yield* Cluster.leaders(queues)
        // Chosen at the first node-stop, not at a kill before it: a kill moves the leader.
        if (kind === "node-stop" && stopOrder.length === 0) {
          const first = Cluster.nodeNamed(led[queue] ?? "")?.key ?? "a"
          stopOrder.push(first, ...Cluster.nodes.map((n) => n.key).filter((key) => key !== first))
        }
        // Each node in stopOrder once, then random ones.
        const stopped = faults.filter((f) => f.kind === "node-stop").length
        const key = kind === "node-stop" && stopped < stopOrder.length
          ? stopOrder[stopped]!
          : Cluster.nodes[Math.floor(Math.random() * Cluster.nodes.length)]!.key
        const node = Cluster.nodes.find((n) => n.key === key)!
        const leading = Object.entries(led).filter(([, leader]) => leader === node.name).map(([name]) => name.slice(queue.length) || "(main)")
        if (kind === "node-stop") {
          yield* Cluster.stopApp(key)
          yield* Effect.sleep("5 seconds")
          yield* Cluster.startApp(key)
        } else {
          yield* Cluster.kill(key)
          yield* Effect.sleep("2 seconds")
          yield* Cluster.up
        }
        return `${node.name}, leader of ${leading.length === 0 ? "no queue of the run" : leading.join(" ")}`
      })
    let detail: string | undefined
    const inject = (kind: FaultKind) =>
      Effect.gen(function*() {
        const slot = slots[Math.floor(Math.random() * slots.length)]!
        detail = undefined
        switch (kind) {
          case "close":
            yield* broker.closeConnectionsNamed(slot.name)
            return slot.index
          case "pause":
            if (slot.proxy === undefined) return undefined
            slot.proxy.pause()
            // Heartbeats every second: the client gives up after about two.
            yield* Effect.sleep("3500 millis")
            slot.proxy.resume()
            return slot.index
          case "restart":
            // Whole or not at all: a stop_app cut short by the end of the
            // faults would go on in rabbitmqctl and stop the app after the
            // clean-up started it again.
            yield* Effect.uninterruptible(Effect.gen(function*() {
              yield* broker.rabbitmqctl("stop_app")
              yield* Effect.sleep("1 second")
              yield* broker.rabbitmqctl("start_app")
            }))
            return "all" as const
          case "channel": {
            // Only counts when it reached a consumer channel (not mid-reconnect).
            const reached = slot.proxy?.injectChannelError() ?? 0
            return reached > 0 ? slot.index : undefined
          }
          case "sigterm":
            yield* restartSlot(slot, "SIGTERM")
            return slot.index
          case "sigkill":
            yield* restartSlot(slot, "SIGKILL")
            return slot.index
          case "node-stop":
          case "node-kill":
            detail = yield* Effect.uninterruptible(nodeFault(kind))
            return "all" as const
        }
      })
    const plan = [...options.faults]
    let next = 0
    const faultLoop = Effect.gen(function*() {
      while (true) {
        yield* Effect.sleep(random(250, 1000))
        // Every kind once, in a random order, then random kinds; one SIGKILL, one node kill.
        const pool = options.faults.filter((kind) => kind !== "sigkill" && kind !== "node-kill")
        const planned = next < plan.length
        const kind = planned ? plan[next++]! : pool[Math.floor(Math.random() * pool.length)]!
        const at = Date.now()
        const worker: number | "all" | undefined = yield* inject(kind)
        if (worker === undefined) {
          // Not injected this time: a planned kind is tried again.
          if (planned) next--
          continue
        }
        faults.push({ kind, worker, at, tookMs: Date.now() - at, detail, duplicates: 0, longestStallMs: 0, longestWorkerStallMs: 0 })
        log(`fault ${faults.length}: ${kind} (${worker === "all" ? "all workers" : `worker ${worker}`}${detail === undefined ? "" : `; ${detail}`})`)
      }
    })
    plan.sort(() => Math.random() - 0.5)
    // On a cluster, every node is stopped once: three node-stops in the plan.
    if (cluster && plan.includes("node-stop")) plan.push("node-stop", "node-stop")
    // A fault that cannot be injected ends the run's faults: said, not swallowed.
    const faulting = yield* Effect.forkScoped(faultLoop.pipe(
      Effect.tapCause((cause) => Cause.hasInterruptsOnly(cause) ? Effect.void : Effect.sync(() => log(`faults stopped: ${Cause.pretty(cause)}`)))
    ))

    // Until everything is confirmed and handled, or the time is up.
    const handledIds = () => {
      const seen = new Set<string>()
      for (const slot of slots) {
        for (const p of [...slot.past, slot.process]) {
          for (const line of p.logs) {
            const text = messageText(line)
            if (text.startsWith("handled task ")) seen.add(text.slice("handled task ".length))
          }
        }
      }
      return seen
    }
    const deadline = startedAt + options.timeoutMs
    while (Date.now() < deadline) {
      // Done when every task was handled and every kind of fault happened.
      const done = publishing.pollUnsafe() !== undefined && handledIds().size >= options.tasks &&
        next >= plan.length && faults.length >= plan.length
      if (done) break
      yield* Effect.sleep("500 millis")
    }
    // Faults stop once all is handled; whatever one left behind is undone.
    yield* Fiber.interrupt(faulting)
    yield* (cluster ? Cluster.up : broker.rabbitmqctl("start_app")).pipe(Effect.ignore)
    for (const slot of slots) slot.proxy?.resume()
    log("faults stopped; waiting for the queue to settle")
    const final = yield* broker.eventually(
      "the queue settled",
      broker.queueCounts(queue).pipe(Effect.orElseSucceed(() => ({ ready: -1, unacked: -1, consumers: 0 }))),
      (c) => c.ready === 0 && c.unacked === 0,
      60_000,
      500
    ).pipe(Effect.catchDefect(() => broker.queueCounts(queue)))
    if (final.ready !== 0 || final.unacked !== 0) {
      // Which channel holds the deliveries, and what its worker was doing.
      const channels = yield* broker.rabbitmqctl(
        "list_channels",
        "connection",
        "name",
        "consumer_count",
        "messages_unacknowledged",
        "messages_unconfirmed",
        "prefetch_count"
      ).pipe(Effect.catchDefect(() => Effect.succeed("(list_channels failed)")))
      log(`not settled: ${JSON.stringify(final)}; the broker's channels:\n${channels}`)
      for (const slot of slots) {
        log(`worker ${slot.index} (${slot.name}), its last log lines:\n${slot.process.output.slice(-40).join("\n")}`)
      }
    }

    // Stop the workers gracefully: a clean exit is part of the check.
    for (const slot of slots) {
      slot.stopping = true
      slot.process.signal("SIGTERM")
      const code = yield* slot.process.exit(30_000)
      if (code !== 0) unexpectedExits.push(`worker ${slot.index} exited ${code} at the end`)
      if (!slot.past.includes(slot.process)) slot.past.push(slot.process)
    }

    // The workers' own records: every "handled task" line, in time order.
    const handlings: Array<Handling> = []
    for (const slot of slots) {
      for (const p of slot.past) {
        for (const line of p.logs) {
          const text = messageText(line)
          if (text.startsWith("handled task ")) {
            handlings.push({
              id: text.slice("handled task ".length),
              at: Date.parse(String(line.timestamp)),
              worker: slot.index
            })
          }
        }
      }
    }
    handlings.sort((a, b) => a.at - b.at)

    // Stalls: gaps in handling while confirmed tasks waited (see stalls.ts).
    const firstAt = new Map<string, number>()
    for (const h of handlings) if (!firstAt.has(h.id)) firstAt.set(h.id, h.at)
    const found = Stalls.stalls(handlings.map((h) => h.at), [...firstAt.values()], confirmedAt)
    const longestStallMs = Stalls.longestIn(found, 0, Number.POSITIVE_INFINITY)
    // The part of each stall in which the broker served another client: the workers' own.
    const workers = Stalls.outside(found, brokerWithheld)
    const longestWorkerStallMs = Stalls.longestIn(workers, 0, Number.POSITIVE_INFINITY)
    const events: Array<Stalls.Event> = faults.map((fault) => ({
      at: fault.at,
      who: "fault",
      text: `${fault.kind} (${fault.worker === "all" ? "all workers" : `worker ${fault.worker}`}${
        fault.detail === undefined ? "" : `; ${fault.detail}`
      }), took ${fault.tookMs} ms`
    }))
    for (const slot of slots) {
      for (const p of slot.past) {
        for (const line of p.logs) {
          // The lines about one message (its handling, its retry: annotated with its attempt) would bury the rest.
          if (line.annotations?.["attempt"] !== undefined) continue
          events.push({ at: Date.parse(String(line.timestamp)), who: `worker ${slot.index}`, text: `${line.level} ${messageText(line)}` })
        }
      }
    }
    const longestStall = Stalls.longest(found)
    const longestStallStory = longestStall === undefined ? [] : Stalls.story(longestStall, events)
    for (const fault of faults) {
      fault.longestStallMs = Stalls.longestIn(found, fault.at, fault.at + fault.tookMs + 10_000)
      fault.longestWorkerStallMs = Stalls.longestIn(workers, fault.at, fault.at + fault.tookMs + 10_000)
    }

    // When each worker lost its channel, by its own logs (a reconnect, a new
    // channel, a shutdown), or was killed: the moments an ack could be lost.
    const losses = new Map<number, Array<number>>()
    for (const slot of slots) {
      const times: Array<number> = []
      for (const p of slot.past) {
        for (const line of p.logs) {
          if (/reconnecting in \d+ ms|opening a new channel in \d+ ms|^shutting down/.test(messageText(line))) {
            times.push(Date.parse(String(line.timestamp)))
          }
        }
      }
      for (const fault of faults) if (fault.kind === "sigkill" && fault.worker === slot.index) times.push(fault.at)
      losses.set(slot.index, times.sort((a, b) => a - b))
    }
    const firstHandled = new Map<string, Handling>()
    let duplicates = 0
    let republishedDuplicates = 0
    let unattributed = 0
    for (const handling of handlings) {
      const first = firstHandled.get(handling.id)
      if (first === undefined) {
        firstHandled.set(handling.id, handling)
        continue
      }
      duplicates++
      if (republished.has(handling.id)) {
        // Two copies in the queue: the publisher's doing, not a consumer fault.
        republishedDuplicates++
        continue
      }
      // The ack of the first handling was lost when that worker next lost its
      // channel; the fault behind that is the last one before it that reached
      // the worker.
      const lostAt = losses.get(first.worker)?.find((t) => t >= first.at)
      const reached = (fault: Fault) => fault.worker === "all" || fault.worker === first.worker
      const cause = lostAt === undefined
        ? undefined
        : [...faults].reverse().find((fault) => reached(fault) && fault.at <= lostAt)
      if (cause !== undefined) cause.duplicates++
      else unattributed++
    }
    const seen = new Set(firstHandled.keys())
    const lost = ids.filter((id) => !seen.has(id))

    // The broker's records: results published, and nothing parked or retrying.
    const admin = yield* broker.admin
    const results = (yield* admin.drainQueue(`${queue}.done`)).length
    const deadLettered = yield* admin.ready(`${queue}.dlq`)
    const retrying = (yield* admin.ready(`${queue}.retry`)) + (yield* admin.ready(retryQueue))

    // Handlings a killed worker did not live to log still published their
    // result: the results queue is the broker's count of handlings.
    const allDuplicates = Math.max(duplicates, results - seen.size)
    // What the workers reported about the faults, as evidence they happened.
    let channelErrors = 0
    let retried = 0
    for (const slot of slots) {
      for (const p of slot.past) {
        for (const line of p.logs) {
          const text = messageText(line)
          if (/^consumer of .* stopped .*PRECONDITION_FAILED/.test(text)) channelErrors++
          if (/^message failed \(attempt \d+\), will be retried/.test(text)) retried++
        }
      }
    }

    const faultCounts: Record<string, { count: number; duplicates: number; maxDuplicates: number; longestStallMs: number; longestWorkerStallMs: number }> = {}
    for (const fault of faults) {
      const entry = faultCounts[fault.kind] ??= { count: 0, duplicates: 0, maxDuplicates: 0, longestStallMs: 0, longestWorkerStallMs: 0 }
      entry.count++
      entry.duplicates += fault.duplicates
      entry.maxDuplicates = Math.max(entry.maxDuplicates, fault.duplicates)
      entry.longestStallMs = Math.max(entry.longestStallMs, fault.longestStallMs)
      entry.longestWorkerStallMs = Math.max(entry.longestWorkerStallMs, fault.longestWorkerStallMs)
    }

    const problems: Array<string> = []
    if (lost.length > 0) problems.push(`${lost.length} tasks lost (never handled): ${lost.slice(0, 10).join(", ")}`)
    if (confirmed < options.tasks) problems.push(`only ${confirmed} of ${options.tasks} publishes confirmed`)
    if (unexpectedExits.length > 0) problems.push(...unexpectedExits)
    if (final.ready !== 0 || final.unacked !== 0) problems.push(`queue not settled: ${JSON.stringify(final)}`)
    if (deadLettered !== 0 || retrying !== 0) problems.push(`${deadLettered} dead-lettered, ${retrying} retrying`)
    if (results < seen.size) problems.push(`${results} results for ${seen.size} handled tasks`)
    if (unattributed > 0) problems.push(`${unattributed} duplicates that no fault explains`)
    if (options.faults.includes("channel") && channelErrors === 0) problems.push("no worker reported a channel error")
    // Fewer than one a failing task is fine: a first attempt lost with its
    // worker counts as that attempt (RabbitMQ 4.3's delivery count).
    if ((options.failEvery ?? 0) > 0 && retried === 0) problems.push("no task went through the retry queue")
    // A majority of the cluster's nodes is up through every fault: handling goes on.
    if (cluster) {
      for (const fault of faults) {
        if (fault.longestWorkerStallMs > maxStallMs) {
          problems.push(
            `handling stalled ${fault.longestWorkerStallMs} ms (while the broker served) around ${fault.kind} at ` +
              new Date(fault.at).toISOString()
          )
        }
      }
    }
    for (const kind of new Set(options.faults)) {
      if (faultCounts[kind] === undefined) problems.push(`fault ${kind} never happened`)
    }
    // A fault can only make the messages in flight at that moment come back:
    // at most the prefetch of each worker it reached.
    for (const fault of faults) {
      const reached = fault.worker === "all" ? options.workers : 1
      if (fault.duplicates > options.prefetch * reached) {
        problems.push(`fault ${fault.kind} at ${new Date(fault.at).toISOString()} caused ${fault.duplicates} duplicates`)
      }
    }

    return {
      tasks: options.tasks,
      confirmed,
      handled: handlings.length,
      distinctHandled: seen.size,
      lost,
      duplicates: allDuplicates,
      loggedDuplicates: duplicates,
      republishedDuplicates,
      unattributedDuplicates: unattributed,
      channelErrors,
      retried,
      publishRetries,
      faults,
      faultCounts,
      longestStallMs,
      longestWorkerStallMs,
      longestStallStory,
      longestBrokerWithheldMs: brokerWithheld.reduce((max, w) => Math.max(max, w.to - w.from), 0),
      unexpectedExits,
      final: { ready: final.ready, unacked: final.unacked, deadLettered, retrying },
      results,
      durationMs: Date.now() - startedAt,
      ok: problems.length === 0,
      problems
    } satisfies ChaosReport
  })

/** The report as the table `npm run chaos` prints. */
export const summary = (report: ChaosReport, prefetch: number): string => {
  const rows = [
    ["tasks published (confirmed)", `${report.confirmed} / ${report.tasks}`],
    ["publish attempts retried", String(report.publishRetries)],
    ["duplicates from tasks published twice", String(report.republishedDuplicates)],
    ["duplicates no fault explains", String(report.unattributedDuplicates)],
    ["tasks handled (distinct)", String(report.distinctHandled)],
    ["lost", String(report.lost.length)],
    ["handlings logged", String(report.handled)],
    ["results on <queue>.done", String(report.results)],
    ["duplicates (results beyond one per task)", String(report.duplicates)],
    ["channel errors the workers logged", String(report.channelErrors)],
    ["failed attempts sent to the retry queue", String(report.retried)],
    ["queue at the end (ready / unacked)", `${report.final.ready} / ${report.final.unacked}`],
    ["dead-lettered / retrying", `${report.final.deadLettered} / ${report.final.retrying}`],
    ["unexpected worker exits", String(report.unexpectedExits.length)],
    ["longest stall while tasks waited", `${report.longestStallMs} ms`],
    ["  of it while the broker served", `${report.longestWorkerStallMs} ms`],
    ["longest confirm the broker withheld", `${report.longestBrokerWithheldMs} ms`],
    ["duration", `${(report.durationMs / 1000).toFixed(1)} s`]
  ]
  const faults = Object.entries(report.faultCounts).map(([kind, entry]) => [
    kind,
    String(entry.count),
    String(entry.duplicates),
    `${entry.maxDuplicates} (prefetch ${prefetch})`,
    `${entry.longestStallMs} ms (${entry.longestWorkerStallMs} while the broker served)`
  ])
  const width = Math.max(...rows.map(([label]) => label!.length))
  return [
    ...rows.map(([label, value]) => `${label!.padEnd(width)}  ${value}`),
    "",
    `${"fault".padEnd(10)} ${"count".padStart(6)} ${"duplicates".padStart(11)}  ${"max per fault (from the logs)".padEnd(30)} longest stall`,
    ...faults.map(([kind, count, dups, max, stall]) =>
      `${kind!.padEnd(10)} ${count!.padStart(6)} ${dups!.padStart(11)}  ${max!.padEnd(30)} ${stall}`
    ),
    ...(report.longestStallStory.length === 0 ? [] : [
      "",
      `around the longest stall (${report.longestStallMs} ms; times from its start; the workers' lines but those about one message):`,
      ...report.longestStallStory
    ]),
    "",
    report.ok ? "OK: no task lost, no worker crashed" : `FAILED:\n- ${report.problems.join("\n- ")}`
  ].join("\n")
}
