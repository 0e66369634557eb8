/**
 * The worker: runs consumers in one session after another for as long as its
 * scope is open. This is where the reconnect loop starts and where shutdown
 * begins.
 *
 * Reconnect paths, from the widest (every loop backs off by
 * {@link Reconnect}: exponential, jittered, capped, reset after 5 s healthy):
 *
 * 1. the session (here): one connection ({@link Session}); when connecting
 *    fails or the connection is lost, the next session starts, at the next
 *    broker address. The broker down at start-up is the same case. Only a
 *    {@link Topology.TopologyConflict} ends the loop (retrying cannot mend it);
 * 2. a consumer's channel (internal/consume.ts): the broker closed it (404, 406...):
 *    a new channel on the same connection; other consumers are untouched;
 * 3. a consumer's subscription (internal/consume.ts): the broker cancelled it (queue
 *    deleted, consumer timeout): declare and subscribe again on the same channel;
 * 4. the publisher's channel (internal/outlet.ts): reopened on the same connection.
 *
 * Shutdown is the worker's scope closing (with {@link runMain}, on SIGTERM or
 * SIGINT), in this order, set by the order the finalizers are registered
 * (steps 2-5: internal/subscription.ts and internal/drain.ts; 6:
 * internal/consume.ts; 7-8: Session.ts):
 *
 * 1. the status turns `stopping` (`/readyz` says 503);
 * 2. each consumer cancels its subscription (`basic.cancel`): no new deliveries;
 * 3. the deliveries no handler started are requeued (`basic.nack`);
 * 4. running handlers get `shutdownGrace` to finish and are acked (the wait
 *    ends at once if the channel or connection goes: the broker requeued them);
 * 5. handlers still running are interrupted, their messages requeued (one
 *    that ignores interruption is abandoned after 5 s: the broker takes its
 *    message back when the channel closes);
 * 6. pending acks are flushed; the consumers' channels close;
 * 7. the publisher's channel closes (handlers could publish until they were done);
 * 8. the connection closes; {@link runMain} exits 0.
 *
 * @example
 * ```ts
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
 *   .pipe(Worker.runMain)
 * ```
 *
 * @since 0.1.0
 */
import { NodeRuntime } from "@effect/platform-node"
import { Cause, type Config, Context, Duration, Effect, Exit, Fiber, Layer, type Runtime, type Scope, Stream, SubscriptionRef } from "effect"
import * as WorkerConfig from "./Config.ts"
import * as Connection from "./Connection.ts"
import type * as Consumer from "./Consumer.ts"
import * as Metrics from "./Metrics.ts"
import * as Options from "./Options.ts"
import * as Outcome from "./Outcome.ts"
import * as Publisher from "./Publisher.ts"
import * as Reconnect from "./Reconnect.ts"
import * as Session from "./Session.ts"
import * as Status from "./Status.ts"
import * as Topology from "./Topology.ts"
import { withSafeLoggers } from "./internal/loggers.ts"

/**
 * @category models
 * @since 0.1.0
 */
export interface WorkerOptions {
  readonly connection: Connection.ConnectionOptions
  /** Default prefetch for consumers that set none. Default 100. */
  readonly prefetch?: number | undefined
  /** How long in-flight handlers may run on after shutdown begins. Default 10 seconds. */
  readonly shutdownGrace?: Duration.Input | undefined
  /** Reconnect backoff. Default: from 200 ms, at most 30 s, reset after 5 s connected. */
  readonly reconnect?: Reconnect.BackoffOptions | undefined
  /** Exchanges, queues and bindings to declare in every session, besides the consumers' own queues. */
  readonly topology?: Topology.Topology | undefined
  /** Bodies larger than this are dead-lettered without being decoded. Default 1 MiB. */
  readonly maxBodyBytes?: number | undefined
  /**
   * How long a handler may run before it is interrupted and its message
   * settled as a failure (`HandlerTimeout`) by the consumer's policy, for
   * consumers that set none. Keep it well below the broker's
   * `consumer_timeout` (30 minutes by default). Default 5 minutes.
   */
  readonly handlerTimeout?: Duration.Input | undefined
  readonly publisher?: Publisher.PublisherOptions | undefined
}

/**
 * A running worker.
 *
 * @category services
 * @since 0.1.0
 */
export class Worker extends Context.Service<Worker, {
  /** The worker's publisher (also given to handlers as the `Publisher` service). */
  readonly publisher: Publisher.Publisher["Service"]
  readonly status: Effect.Effect<Status.Status>
  readonly changes: Stream.Stream<Status.Status>
  /** Waits until connected with every consumer subscribed. */
  readonly awaitReady: Effect.Effect<void>
  /** Waits for the worker to end: it runs until interrupted, or until the topology conflicts with the broker's. */
  readonly join: Effect.Effect<never, Topology.TopologyConflict>
}>()("effect-rabbitmq-worker/Worker") {}

/**
 * The defaults (see {@link Options.defaults}, the one table of them).
 *
 * @category defaults
 * @since 0.1.0
 */
export const defaults = Options.defaults

/**
 * The problems of a worker's own options (each consumer checks its own).
 *
 * @category checks
 * @since 0.1.0
 */
export const check = (options: WorkerOptions): Options.Checker => {
  const checker = new Options.Checker()
  checker.int("prefetch", options.prefetch, 1, 65535)
  checker.int("maxBodyBytes", options.maxBodyBytes, 1)
  checker.duration("shutdownGrace", options.shutdownGrace, false)
  checker.duration("handlerTimeout", options.handlerTimeout, true)
  Reconnect.check(options.reconnect, checker, "reconnect")
  Connection.check(options.connection, checker)
  checker.duration("publisher.timeout", options.publisher?.timeout, false)
  checker.int("publisher.maxWaiting", options.publisher?.maxWaiting, 0)
  return checker
}

/**
 * Starts the worker in the current scope; closing the scope shuts it down.
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = <R>(
  options: WorkerOptions,
  consumers: ReadonlyArray<Consumer.Consumer<R>>
): Effect.Effect<Worker["Service"], Options.InvalidOptions, Exclude<R, Publisher.Publisher> | Scope.Scope> =>
  Effect.gen(function*() {
    const topology = yield* validate(options, consumers)
    const names = Status.consumerNames(consumers.map((c) => c.queue))
    const status = yield* statusOf(names)
    const backoff = options.reconnect ?? defaults.reconnect
    const publisher = yield* Publisher.make(options.publisher)
    const session = Session.make(
      {
        connection: options.connection,
        prefetch: options.prefetch ?? defaults.prefetch,
        maxBodyBytes: options.maxBodyBytes ?? defaults.maxBodyBytes,
        handlerTimeout: options.handlerTimeout ?? defaults.handlerTimeout,
        shutdownGrace: options.shutdownGrace ?? defaults.shutdownGrace,
        backoff,
        topology
      },
      consumers.map((consumer, i) => ({
        // Handlers publish with the worker's own publisher.
        consumer: {
          ...consumer,
          run: (connection, settings) =>
            Effect.provideService(consumer.run(connection, settings), Publisher.Publisher, publisher.service)
        } satisfies Consumer.Consumer<Exclude<R, Publisher.Publisher>>,
        name: names[i]!
      })),
      publisher,
      status
    )

    const fiber = yield* Effect.forkScoped(
      sessions(backoff, status, names, session).pipe(
        Effect.onInterrupt(() => Effect.logInfo("stopped: consumers drained, channels and connection closed")),
        Effect.onExit(() => SubscriptionRef.update(status, (s): Status.Status => ({ ...s, connection: "stopped" })))
      )
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
      publisher: publisher.service,
      status: SubscriptionRef.get(status),
      changes: SubscriptionRef.changes(status),
      awaitReady: SubscriptionRef.changes(status).pipe(
        Stream.filter(Status.isReady),
        Stream.runHead,
        Effect.asVoid
      ),
      join: Fiber.join(fiber)
    })
  }).pipe(
    // A log sink that throws must not stop the worker's work (internal/loggers.ts).
    withSafeLoggers
  )

/** Every option of the worker and its consumers checked, and their topologies merged, before anything connects. */
const validate = <R>(options: WorkerOptions, consumers: ReadonlyArray<Consumer.Consumer<R>>) => {
  const declarations = Topology.combine([options.topology ?? Topology.empty, ...consumers.map((c) => c.topology)])
  const invalid = Options.collect([
    check(options),
    ...consumers.map((consumer) => consumer.check),
    { problems: declarations.mismatches.map(Topology.mismatchProblem) }
  ])
  return invalid === undefined ? Effect.succeed(declarations.topology) : Effect.fail(invalid)
}

/** The status the worker reports: the one provided (shared with a health server), or its own; the gauges follow it. */
const statusOf = (names: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const shared = yield* Effect.serviceOption(Status.WorkerStatus)
    const status = shared._tag === "Some" ? shared.value : yield* SubscriptionRef.make(Status.initial(names))
    yield* SubscriptionRef.set(status, Status.initial(names))
    yield* Metrics.init
    yield* Effect.forkScoped(Stream.runForEach(SubscriptionRef.changes(status), Metrics.status))
    return status
  })

/** Sessions one after another (reconnect path 1): each lost connection counted, reported and waited out. */
const sessions = <E, R>(
  backoff: Reconnect.BackoffOptions,
  status: SubscriptionRef.SubscriptionRef<Status.Status>,
  names: ReadonlyArray<string>,
  session: (ready: Effect.Effect<void>) => Effect.Effect<never, E, R>
) =>
  Reconnect.loop({
    backoff,
    isFatal: (error: unknown): error is Topology.TopologyConflict => error instanceof Topology.TopologyConflict,
    onRetry: ({ attempt, cause, delay }) => {
      const reason = Outcome.describe(Cause.squash(cause))
      const ms = Math.round(Duration.toMillis(delay))
      return Effect.all([
        Metrics.reconnect,
        SubscriptionRef.update(status, (s): Status.Status => ({
          ...s,
          connection: "reconnecting",
          attempt,
          reconnects: s.reconnects + 1,
          nextRetryMs: ms,
          lastError: reason,
          publisher: false,
          consumers: Object.fromEntries(names.map((name) => [name, false]))
        })),
        Effect.logWarning(`${reason}; reconnecting in ${ms} ms (attempt ${attempt})`)
      ], { discard: true })
    }
  }, session)

/**
 * The worker as a layer, with its publisher: started when the layer is built,
 * shut down when it is released.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = <R>(
  options: WorkerOptions,
  consumers: ReadonlyArray<Consumer.Consumer<R>>
): Layer.Layer<Worker | Publisher.Publisher, Options.InvalidOptions, Exclude<R, Publisher.Publisher>> =>
  Layer.effectContext(
    Effect.map(make(options, consumers), (worker) =>
      Context.make(Worker, worker).pipe(Context.add(Publisher.Publisher, worker.publisher)))
  )

/**
 * {@link layer} with its options from the environment ({@link WorkerConfig.workerOptions}:
 * `AMQP_URL`, `AMQP_PREFETCH`, `HANDLER_TIMEOUT_MS`, ...), and `overrides` on top
 * (e.g. a topology).
 *
 * @example
 * ```ts
 * import { Layer } from "effect"
 * import { Worker } from "effect-rabbitmq-worker"
 *
 * const WorkerLive = Worker.layerConfig([tasks])
 * Layer.launch(WorkerLive).pipe(Worker.runMain)
 * ```
 *
 * @category layers
 * @since 0.1.0
 */
export const layerConfig = <R>(
  consumers: ReadonlyArray<Consumer.Consumer<R>>,
  overrides: Partial<WorkerOptions> = {}
): Layer.Layer<Worker | Publisher.Publisher, Config.ConfigError | Options.InvalidOptions, Exclude<R, Publisher.Publisher>> =>
  Layer.unwrap(
    Effect.gen(function*() {
      const options: WorkerOptions = yield* WorkerConfig.workerOptions
      return layer({ ...options, ...overrides }, consumers)
    })
  )

/**
 * Runs the worker until interrupted; fails when an option is invalid (before
 * anything starts) or when the topology conflicts with the broker's.
 *
 * @category constructors
 * @since 0.1.0
 */
export const run = <R>(
  options: WorkerOptions,
  consumers: ReadonlyArray<Consumer.Consumer<R>>
): Effect.Effect<never, Topology.TopologyConflict | Options.InvalidOptions, Exclude<R, Publisher.Publisher>> =>
  Effect.scoped(Effect.flatMap(make(options, consumers), (worker) => worker.join))

/**
 * The exit code of a worker process: 0 when it ended by interruption alone
 * (SIGTERM or SIGINT, then a drained shutdown) or succeeded, 1 when it failed.
 * `NodeRuntime.runMain`'s default teardown exits 130 after an interruption.
 *
 * @example
 * ```ts
 * import { NodeRuntime } from "@effect/platform-node"
 * import { Worker } from "effect-rabbitmq-worker"
 *
 * NodeRuntime.runMain(Worker.run(options, [tasks]), { teardown: Worker.teardown })
 * ```
 *
 * @category running
 * @since 0.1.0
 */
export const teardown: Runtime.Teardown = (exit, onExit) =>
  onExit(Exit.isSuccess(exit) || Cause.hasInterruptsOnly(exit.cause) ? 0 : 1)

/**
 * Runs a program (typically {@link run} with its layers provided) as the
 * main fiber of a Node process: SIGTERM or SIGINT interrupt it, the worker
 * drains, and the process exits 0 ({@link teardown}); a failure is reported
 * and exits 1.
 *
 * @example
 * ```ts
 * import { Redacted } from "effect"
 * import { Worker } from "effect-rabbitmq-worker"
 *
 * Worker.run({ connection: { url: Redacted.make("amqp://guest:guest@127.0.0.1:5672") } }, [tasks])
 *   .pipe(Worker.runMain)
 * ```
 *
 * @category running
 * @since 0.1.0
 */
export const runMain = <A, E>(
  program: Effect.Effect<A, E>,
  options?: { readonly disableErrorReporting?: boolean | undefined }
): void => NodeRuntime.runMain(program, { ...options, teardown })
