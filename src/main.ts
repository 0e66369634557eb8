/**
 * The example worker process (`npm start`).
 *
 * Consumes JSON tasks `{ "id": string, ... }` from `AMQP_QUEUE` (default
 * `tasks`), simulates `WORK_MS` milliseconds of work (default 0) and logs one
 * line per handled task with its id. Everything else is configured as in
 * {@link WorkerConfig} and {@link Logging}. SIGTERM or SIGINT drain the worker
 * and exit 0.
 *
 * Run `node src/main.ts` directly under a process manager: npm does not pass
 * SIGTERM on to its child.
 *
 * @since 0.1.0
 */
import { NodeRuntime } from "@effect/platform-node"
import { Cause, Config, Duration, Effect, Exit, type Runtime, Schema } from "effect"
import * as Connection from "./Connection.ts"
import * as Consumer from "./Consumer.ts"
import * as Logging from "./Logging.ts"
import * as Worker from "./Worker.ts"
import * as WorkerConfig from "./Config.ts"

const Task = Schema.Struct({ id: Schema.String })

const example = Config.all({
  queue: Config.schema(Schema.NonEmptyString, "AMQP_QUEUE").pipe(Config.withDefault("tasks")),
  workMs: Config.schema(Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)), "WORK_MS").pipe(Config.withDefault(0))
})

const worker = Effect.gen(function*() {
  const { queue, workMs } = yield* example
  const options = yield* WorkerConfig.workerOptions
  const tasks = Consumer.make({
    queue,
    schema: Task,
    handler: (task) =>
      Effect.sleep(Duration.millis(workMs)).pipe(
        Effect.andThen(Effect.logInfo(`handled task ${task.id}`).pipe(Effect.annotateLogs({ taskId: task.id })))
      )
  })
  yield* Effect.logInfo(
    `starting worker: broker ${Connection.describeUrl(options.connection.url)}, queue ${queue}, ` +
      `prefetch ${options.prefetch}, work ${workMs} ms`
  )
  return yield* Worker.run(options, [tasks])
})

const logFailure = (cause: Cause.Cause<unknown>) => {
  if (Cause.hasInterruptsOnly(cause)) return Effect.void
  const error = Cause.squash(cause)
  return error instanceof Config.ConfigError
    ? Effect.logError(`invalid configuration: ${error.cause.message}`)
    : Effect.logError("worker stopped on an error", cause)
}

const main = Effect.gen(function*() {
  const logging = yield* Logging.load.pipe(Effect.tapCause(logFailure))
  return yield* worker.pipe(Effect.tapCause(logFailure), Effect.provide(Logging.layer(logging)))
})

/** A drained shutdown (interruption by SIGTERM/SIGINT) is a success: exit 0. */
const teardown: Runtime.Teardown = (exit, onExit) =>
  onExit(Exit.isSuccess(exit) || Cause.hasInterruptsOnly(exit.cause) ? 0 : 1)

NodeRuntime.runMain(main, { disableErrorReporting: true, teardown })
