/**
 * A consumer: a queue, schemas for the message body (and headers), and a typed
 * handler.
 *
 * `make` only describes a consumer; a {@link Worker} runs it inside every
 * session. While it runs, a consumer owns one channel at a time:
 *
 * - it declares its queues, sets the prefetch and subscribes (manual acks);
 * - each delivery is checked (size, content type, headers), decoded with the
 *   schema and handled by one of `concurrency` handler fibers, within the
 *   `handlerTimeout`; the outcome is settled on the channel that delivered
 *   it, by the rules in {@link Outcome};
 * - while the broker blocks the connection (a memory or disk alarm), no new
 *   handler starts: handlers could not publish;
 * - if the broker cancels the subscription (the queue was deleted, a quorum
 *   queue's consumer timeout), the deliveries it took back are void (their
 *   handlers are interrupted, nothing is sent for them) and the consumer
 *   declares the queue again and subscribes again on the same channel, after
 *   a backoff;
 * - if the broker closes the channel (404, 405, ...), it opens a new one after
 *   a backoff, without touching the connection;
 * - when its scope closes (shutdown), it cancels the subscription, puts the
 *   deliveries no handler has started back in the queue, lets running handlers
 *   finish within the grace period, and interrupts the rest, whose messages go
 *   back to the queue too.
 *
 * With the default failure policy (retry), a consumer of queue `q` also
 * declares `q.retry.<delay>ms` (where a retry's confirmed copy waits out the
 * delay and goes back to `q`), `q.retry` (the target of the broker's own
 * dead-lettering from `q`, kept as it is when an earlier version made it with
 * another delay) and `q.dlq` (where messages that will never succeed are
 * parked). The machinery is in `internal/`, in the order a delivery meets
 * it: `consume.ts` (channels and subscriptions, one after another),
 * `subscription.ts` (basic.consume, cancel), `dispatch.ts` (handler fibers,
 * timeouts), `handle.ts` (one delivery), `decode.ts`, `settle.ts` (carrying
 * out the {@link Outcome} decision), `drain.ts` (shutdown).
 *
 * @example
 * ```ts
 * import { Effect, Schema } from "effect"
 * import { Consumer, Outcome } from "effect-rabbitmq-worker"
 *
 * const Task = Schema.Struct({ id: Schema.String })
 *
 * export const tasks = Consumer.make({
 *   queue: "tasks",
 *   schema: Task,
 *   handler: (task) => Effect.log(`handled task ${task.id}`),
 *   onFailure: Outcome.retry({ maxAttempts: 5, delay: "10 seconds" })
 * })
 * ```
 *
 * @since 0.1.0
 */
import type { Duration, Effect, Schema } from "effect"
import type { Connection } from "./Connection.ts"
import * as Consume from "./internal/consume.ts"
import { type BodySchema as Body, preparer } from "./internal/decode.ts"
import { queuesOf } from "./internal/queues.ts"
import type { Message } from "./Message.ts"
import * as Options from "./Options.ts"
import * as Outcome from "./Outcome.ts"
import type * as Publisher from "./Publisher.ts"
import type * as Reconnect from "./Reconnect.ts"
import type * as Topology from "./Topology.ts"

/**
 * How the consumer's queue is declared (it is created when missing).
 *
 * @category models
 * @since 0.1.0
 */
export interface QueueOptions {
  /** Default `classic`. */
  readonly type?: "classic" | "quorum" | undefined
  /** Survives a broker restart. Default true. */
  readonly durable?: boolean | undefined
  /** Other `x-` arguments. */
  readonly arguments?: Readonly<Record<string, unknown>> | undefined
}

/**
 * @category models
 * @since 0.1.0
 */
export interface ConsumerOptions<S extends BodySchema, H extends BodySchema, E, R> {
  readonly queue: string
  /**
   * Decodes the JSON body. A message that does not decode never reaches the
   * handler. Decoding is synchronous: the schema needs no services (effectful
   * work belongs in the handler).
   */
  readonly schema: S
  /** Decodes the AMQP headers, e.g. `Schema.Struct({ tenant: Schema.String })`. */
  readonly headers?: H | undefined
  readonly handler: (body: S["Type"], message: Message<H["Type"]>) => Effect.Effect<unknown, E, R>
  /** What to do when the handler fails or dies. Default {@link Outcome.defaultPolicy}. */
  readonly onFailure?: Outcome.FailurePolicy | undefined
  /** Larger bodies are dead-lettered without being decoded. Default: the worker's `maxBodyBytes`. */
  readonly maxBodyBytes?: number | undefined
  /** Unacknowledged messages the broker sends at once. Default: the worker's prefetch. */
  readonly prefetch?: number | undefined
  /** Handlers running at once. Default: the prefetch. */
  readonly concurrency?: number | undefined
  /**
   * How long one handler may run; then it is interrupted and its message
   * settled as a `HandlerTimeout` failure by the policy (a handler that
   * ignores the interruption is abandoned 5 s later, its message settled so
   * without it). Default: the worker's `handlerTimeout` (5 minutes).
   */
  readonly handlerTimeout?: Duration.Input | undefined
  readonly queueOptions?: QueueOptions | undefined
}

/**
 * What a worker passes to each consumer it runs.
 *
 * @category models
 * @since 0.1.0
 */
export interface RunSettings {
  readonly prefetch: number
  readonly maxBodyBytes: number
  readonly handlerTimeout: Duration.Input
  readonly shutdownGrace: Duration.Input
  /** Backoff for reopening the channel after the broker closed it, and for subscribing again after a cancel. */
  readonly backoff: Reconnect.BackoffOptions
  /** The worker's whole topology, to declare the queue again after the broker deleted it. */
  readonly topology: Topology.Topology
  /** Parks messages in the dead-letter queue. */
  readonly publisher: Publisher.Publisher["Service"]
  /** Called each time the consumer has subscribed, and each time it stopped consuming. */
  readonly onSubscribed: (subscribed: boolean) => Effect.Effect<void>
}

const TypeId = "~effect-rabbitmq-worker/Consumer"

/**
 * A consumer whose handler needs the services `R`.
 *
 * @category models
 * @since 0.1.0
 */
export interface Consumer<out R = never> {
  readonly [TypeId]: typeof TypeId
  readonly queue: string
  /** The queues this consumer needs (its own, and the retry and dead-letter queues of its policy). */
  readonly topology: Topology.Topology
  /** Where messages are parked, unless the policy is `reject`. */
  readonly deadLetterQueue: string | undefined
  /** The problems of its options, found when it was made; a worker refuses to start with any. */
  readonly check: Options.Checker
  /**
   * Runs the consumer on `connection` until interrupted; fails only when its
   * queue conflicts with the broker's. Used by {@link Worker}.
   */
  readonly run: (connection: Connection, settings: RunSettings) => Effect.Effect<never, Topology.TopologyConflict, R>
}

/**
 * A schema that decodes without services: `Schema.Struct(...)` and friends.
 *
 * @category models
 * @since 0.1.0
 */
export type BodySchema = Body

/**
 * Describes a consumer. Its options are checked now; a {@link Worker} given
 * a consumer with a bad option fails with `InvalidOptions` before it
 * connects.
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = <
  S extends BodySchema,
  E,
  R,
  H extends BodySchema = Schema.Codec<Readonly<Record<string, unknown>>>
>(
  options: ConsumerOptions<S, H, E, R>
): Consumer<R> => {
  const queue = options.queue
  const policy = options.onFailure ?? Outcome.defaultPolicy
  const deadLetterQueue = Outcome.usesDeadLetterQueue(policy) ? `${queue}.dlq` : undefined
  const retryQueue = Outcome.retryQueueOf(queue, policy)
  const prepare = preparer(queue, options.schema, options.headers)
  const check = checkOptions(options, policy)
  // `queue`, its retry queues and its dead-letter queue, all of its type (see internal/queues.ts).
  const topology = queuesOf(queue, policy, options.queueOptions)

  const spec: Consume.Spec<S, H, E, R> = { options, policy, deadLetterQueue, retryQueue, prepare }
  const run = (connection: Connection, settings: RunSettings) => Consume.run(spec, connection, settings)

  return { [TypeId]: TypeId, queue, topology, deadLetterQueue, check, run }
}

/** AMQP short strings (queue names) hold at most 255 bytes. */
const MAX_NAME_BYTES = 255

const checkOptions = <S extends BodySchema, H extends BodySchema, E, R>(
  options: ConsumerOptions<S, H, E, R>,
  policy: Outcome.FailurePolicy
): Options.Checker => {
  const queue = options.queue
  const checker = new Options.Checker(`consumer ${JSON.stringify(queue)}: `)
  // The queues that serve it add to its name (`.retry.5000ms`, `.dlq`).
  const longest = Outcome.retryQueueOf(typeof queue === "string" ? queue : "", policy) ?? `${queue}.retry`
  checker.check(
    typeof queue === "string" && queue.length > 0 && Buffer.byteLength(longest) <= MAX_NAME_BYTES &&
      !queue.startsWith("amq."),
    "queue",
    queue,
    `a name that leaves room for its retry queue (${JSON.stringify(longest)}) within ${MAX_NAME_BYTES} bytes, not starting with "amq."`
  )
  checker.int("prefetch", options.prefetch, 1, 65535)
  checker.int("concurrency", options.concurrency, 1)
  checker.int("maxBodyBytes", options.maxBodyBytes, 1)
  checker.duration("handlerTimeout", options.handlerTimeout, true)
  const type = options.queueOptions?.type
  checker.check(type === undefined || type === "classic" || type === "quorum", "queueOptions.type", type, `"classic" or "quorum"`)
  Outcome.check(policy, checker)
  return checker
}
