/**
 * The worker: runs consumers in one session after another for as long as its
 * scope is open. This is where the reconnect loop starts and where shutdown
 * begins.
 *
 * - A session is one connection ({@link Session}). When it ends (connecting
 *   failed, connection lost) the next one starts after the backoff of
 *   {@link Reconnect}; the broker being down at start-up is the same case.
 * - Shutdown is the worker's scope closing (with `NodeRuntime.runMain`, on
 *   SIGTERM or SIGINT): the status turns `stopping`, every consumer drains
 *   (see {@link Consumer}), then channels and the connection close.
 *
 * @example
 * ```ts
 * import { NodeRuntime } from "@effect/platform-node"
 * import { Effect, Redacted, Schema } from "effect"
 * import { Consumer, Worker } from "effect-rabbitmq-worker"
 *
 * const tasks = Consumer.make({
 *   queue: "tasks",
 *   schema: Schema.Struct({ id: Schema.String }),
 *   handler: (task) => Effect.log(`handled task ${task.id}`)
 * })
 *
 * Worker.run({ connection: { url: Redacted.make("amqp://guest:guest@127.0.0.1:5672") } }, [tasks])
 *   .pipe(NodeRuntime.runMain)
 * ```
 *
 * @since 0.1.0
 */
import { Cause, Context, Duration, Effect, Fiber, Layer, type Scope, Stream, SubscriptionRef } from "effect"
import type * as Connection from "./Connection.ts"
import type * as Consumer from "./Consumer.ts"
import * as Outcome from "./Outcome.ts"
import * as Reconnect from "./Reconnect.ts"
import * as Session from "./Session.ts"
import * as Status from "./Status.ts"

/**
 * @since 0.1.0
 */
export interface WorkerOptions {
  readonly connection: Connection.ConnectionOptions
  /** Default prefetch for consumers that set none. Default 20. */
  readonly prefetch?: number | undefined
  /** How long in-flight handlers may run on after shutdown begins. Default 10 seconds. */
  readonly shutdownGrace?: Duration.Input | undefined
  /** Reconnect backoff. Default: from 200 ms, at most 30 s, reset after 5 s connected. */
  readonly reconnect?: Reconnect.BackoffOptions | undefined
}

/**
 * A running worker.
 *
 * @since 0.1.0
 */
export class Worker extends Context.Service<Worker, {
  readonly status: Effect.Effect<Status.Status>
  readonly changes: Stream.Stream<Status.Status>
  /** Waits until connected with every consumer subscribed. */
  readonly awaitReady: Effect.Effect<void>
  /** Waits for the worker to end: it runs until interrupted. */
  readonly join: Effect.Effect<never>
}>()("effect-rabbitmq-worker/Worker") {}

/**
 * @since 0.1.0
 */
export const defaults = {
  prefetch: 20,
  shutdownGrace: Duration.seconds(10),
  reconnect: { base: Duration.millis(200), max: Duration.seconds(30), healthyAfter: Duration.seconds(5) }
} as const

/**
 * Starts the worker in the current scope; closing the scope shuts it down.
 *
 * @since 0.1.0
 */
export const make = <R>(
  options: WorkerOptions,
  consumers: ReadonlyArray<Consumer.Consumer<R>>
): Effect.Effect<Worker["Service"], never, R | Scope.Scope> =>
  Effect.gen(function*() {
    const names = Status.consumerNames(consumers.map((c) => c.queue))
    const status = yield* SubscriptionRef.make(Status.initial(names))
    const backoff = options.reconnect ?? defaults.reconnect
    const session = Session.make(
      {
        connection: options.connection,
        prefetch: options.prefetch ?? defaults.prefetch,
        shutdownGrace: options.shutdownGrace ?? defaults.shutdownGrace,
        backoff
      },
      consumers.map((consumer, i) => ({ consumer, name: names[i]! })),
      status
    )

    const loop = Reconnect.loop({
      backoff,
      onRetry: ({ attempt, cause, delay }) => {
        const reason = Outcome.describe(Cause.squash(cause))
        const ms = Math.round(Duration.toMillis(delay))
        return Effect.andThen(
          SubscriptionRef.update(status, (s): Status.Status => ({
            ...s,
            connection: "reconnecting",
            attempt,
            nextRetryMs: ms,
            lastError: reason,
            consumers: Object.fromEntries(names.map((name) => [name, false]))
          })),
          Effect.logWarning(`${reason}; reconnecting in ${ms} ms (attempt ${attempt})`)
        )
      }
    }, session)

    const fiber = yield* Effect.forkScoped(
      loop.pipe(Effect.onInterrupt(() => Effect.logInfo("stopped: consumers drained, channels and connection closed")))
    )
    // Registered after the fork, so it runs first when the scope closes:
    // readiness turns false before the drain starts.
    yield* Effect.addFinalizer(() =>
      Effect.andThen(
        SubscriptionRef.update(status, (s): Status.Status => ({ ...s, connection: "stopping" })),
        Effect.logInfo("shutting down: draining consumers")
      )
    )

    return Worker.of({
      status: SubscriptionRef.get(status),
      changes: SubscriptionRef.changes(status),
      awaitReady: SubscriptionRef.changes(status).pipe(
        Stream.filter(Status.isReady),
        Stream.runHead,
        Effect.asVoid
      ),
      join: Fiber.join(fiber)
    })
  })

/**
 * The worker as a layer: started when the layer is built, shut down when it is
 * released.
 *
 * @since 0.1.0
 */
export const layer = <R>(
  options: WorkerOptions,
  consumers: ReadonlyArray<Consumer.Consumer<R>>
): Layer.Layer<Worker, never, R> => Layer.effect(Worker, make(options, consumers))

/**
 * Runs the worker until interrupted.
 *
 * @since 0.1.0
 */
export const run = <R>(
  options: WorkerOptions,
  consumers: ReadonlyArray<Consumer.Consumer<R>>
): Effect.Effect<never, never, R> =>
  Effect.scoped(Effect.flatMap(make(options, consumers), (worker) => worker.join))
