/**
 * The example worker process (`npm start`).
 *
 * Consumes JSON tasks `{ "id": string, "failAttempts"?: number }` from `AMQP_QUEUE` (default
 * `tasks`, a `AMQP_QUEUE_TYPE` queue: `classic`, the default, or `quorum`), simulates `WORK_MS` milliseconds of work (default 0), publishes
 * one confirmed result `{ "id", "worker", "handledAt" }` per task to
 * `AMQP_RESULT_QUEUE` (default `<queue>.done`) and logs one line per handled
 * task with its id. `/healthz`, `/readyz` and `/metrics` are served on
 * `HTTP_HOST:HTTP_PORT` (default 127.0.0.1:9464), and spans are exported
 * when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. A task fails its first
 * `failAttempts` attempts (default 0), to show retries. A failing task is retried `RETRY_MAX_ATTEMPTS` times
 * (default 5), `RETRY_DELAY_MS` apart (default 5000), then parked in
 * `<queue>.dlq`. Everything else is configured as in {@link WorkerConfig}
 * and {@link Logging}. SIGTERM or SIGINT drain the worker and exit 0.
 *
 * Run `node --single-threaded-gc src/main.ts` (what `npm start` runs)
 * directly under a process manager: npm does not pass SIGTERM on to its
 * child. The flag keeps V8's garbage collection on the main thread: on a
 * worker's few cores, shared with others, its helper threads cost more CPU
 * than they save (README, Run it).
 *
 * @since 0.1.0
 */
import { hostname } from "node:os"
import { Cause, Config, Data, Duration, Effect, LogLevel, Option, Schema } from "effect"
import * as Connection from "./Connection.ts"
import * as Consumer from "./Consumer.ts"
import * as Health from "./Health.ts"
import * as Logging from "./Logging.ts"
import * as Options from "./Options.ts"
import * as Outcome from "./Outcome.ts"
import * as Publisher from "./Publisher.ts"
import * as Status from "./Status.ts"
import * as Telemetry from "./Telemetry.ts"
import * as Topology from "./Topology.ts"
import * as Worker from "./Worker.ts"
import * as WorkerConfig from "./Config.ts"

const Task = Schema.Struct({
  id: Schema.String,
  // A demonstration of retries: the task fails its first `failAttempts` attempts.
  failAttempts: Schema.optional(Schema.Int)
})

class TaskFailed extends Data.TaggedError("TaskFailed")<{ readonly id: string; readonly attempt: number }> {
  override get message() {
    return `task ${this.id} failed on attempt ${this.attempt} (as it asked: failAttempts)`
  }
}
const TaskDone = Schema.Struct({ id: Schema.String, worker: Schema.String, handledAt: Schema.String })

const example = Config.all({
  queue: Config.schema(Schema.NonEmptyString, "AMQP_QUEUE").pipe(Config.withDefault("tasks")),
  queueType: Config.Literals(["classic", "quorum"], "AMQP_QUEUE_TYPE").pipe(Config.withDefault<"classic" | "quorum">("classic")),
  resultQueue: Config.schema(Schema.NonEmptyString, "AMQP_RESULT_QUEUE").pipe(Config.option),
  workMs: Config.schema(Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)), "WORK_MS").pipe(Config.withDefault(0)),
  retryMaxAttempts: Config.schema(Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 1000 })), "RETRY_MAX_ATTEMPTS")
    .pipe(Config.withDefault(5)),
  retryDelayMs: Config.schema(Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 86_400_000 })), "RETRY_DELAY_MS")
    .pipe(Config.withDefault(5000))
})

const worker = Effect.gen(function*() {
  const { queue, queueType, workMs, ...config } = yield* example
  const resultQueue = Option.getOrElse(config.resultQueue, () => `${queue}.done`)
  const options = yield* WorkerConfig.workerOptions
  const workerName = `${hostname()}:${process.pid}`
  // Decided once: a filtered log line still costs its annotations, about 1.4 µs a task.
  const logHandled = (yield* LogLevel.isEnabled("Info"))
    ? (id: string) => Effect.logInfo(`handled task ${id}`).pipe(Effect.annotateLogs({ taskId: id }))
    : () => Effect.void
  const tasks = Consumer.make({
    queue,
    schema: Task,
    // Its retry and dead-letter queues follow it; so does the result queue, below.
    queueOptions: { type: queueType },
    onFailure: Outcome.retry({ maxAttempts: config.retryMaxAttempts, delay: Duration.millis(config.retryDelayMs) }),
    handler: (task, message) =>
      Effect.gen(function*() {
        // No work to simulate, no sleep: `Effect.sleep(0)` still yields to the event loop.
        if (workMs > 0) yield* Effect.sleep(Duration.millis(workMs))
        if (message.attempt <= (task.failAttempts ?? 0)) return yield* new TaskFailed({ id: task.id, attempt: message.attempt })
        const publisher = yield* Publisher.Publisher
        // The result carries the task's id as its message id: a consumer of
        // results can drop the duplicates a redelivery may cause.
        yield* publisher.publish({
          routingKey: resultQueue,
          schema: TaskDone,
          body: { id: task.id, worker: workerName, handledAt: new Date().toISOString() },
          messageId: task.id
        })
        yield* logHandled(task.id)
      })
  })
  yield* Effect.logInfo(
    `starting worker: broker ${Connection.describeUrl(options.connection.url)}, queue ${queue} (${queueType}), ` +
      `results to ${resultQueue}, prefetch ${options.prefetch}, work ${workMs} ms`
  )
  return yield* Worker.run({ ...options, topology: Topology.make({ queues: [{ name: resultQueue, type: queueType }] }) }, [tasks])
})

const logFailure = (cause: Cause.Cause<unknown>) => {
  if (Cause.hasInterruptsOnly(cause)) return Effect.void
  const error = Cause.squash(cause)
  if (error instanceof Config.ConfigError) return Effect.logError(`invalid configuration: ${error.cause.message}`)
  if (error instanceof Topology.TopologyConflict) return Effect.logError(`worker stopped: ${error.message}`)
  if (error instanceof Options.InvalidOptions) return Effect.logError(error.message)
  return Effect.logError("worker stopped on an error", cause)
}

const main = Effect.gen(function*() {
  const logging = yield* Logging.load.pipe(Effect.tapCause(logFailure))
  return yield* worker.pipe(
    // Built before the worker starts and released after it stopped: the
    // health endpoints answer (503) while the worker drains.
    Effect.provide(Health.layerConfig),
    Effect.provide(Status.layer),
    Effect.provide(Telemetry.layerConfig),
    Effect.tapCause(logFailure),
    Effect.provide(Logging.layer(logging))
  )
})

// A drained shutdown (interruption by SIGTERM/SIGINT) is a success: exit 0.
Worker.runMain(main, { disableErrorReporting: true })
