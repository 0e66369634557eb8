/**
 * A consumer: a queue, a schema for message bodies, and a typed handler.
 *
 * `make` only describes a consumer; a {@link Worker} runs it inside every
 * session. While it runs, a consumer owns one channel at a time:
 *
 * - it declares its queue, sets the prefetch and subscribes (manual acks);
 * - each delivery is decoded with the schema and handled by one of
 *   `concurrency` handler fibers; the outcome is settled on the channel that
 *   delivered it, following the rules in {@link Outcome};
 * - if the broker cancels the subscription (the queue was deleted), it
 *   declares the queue again and subscribes again on the same channel;
 * - if the broker closes the channel (404, 406, ...), it opens a new one after
 *   a backoff, without touching the connection;
 * - when its scope closes (shutdown), it cancels the subscription, puts the
 *   deliveries no handler has started back in the queue, lets running handlers
 *   finish within the grace period, and interrupts the rest, whose messages go
 *   back to the queue too.
 *
 * @example
 * ```ts
 * import { Effect, Schema } from "effect"
 * import { Consumer } from "effect-rabbitmq-worker"
 *
 * const Task = Schema.Struct({ id: Schema.String })
 *
 * export const tasks = Consumer.make({
 *   queue: "tasks",
 *   schema: Task,
 *   handler: (task) => Effect.log(`handled task ${task.id}`),
 *   onFailure: "requeue"
 * })
 * ```
 *
 * @since 0.1.0
 */
import type * as amqp from "amqplib"
import { Cause, Deferred, Duration, Effect, Exit, FiberSet, Queue, Schema } from "effect"
import * as Channel from "./Channel.ts"
import type { Connection } from "./Connection.ts"
import type { Message } from "./Message.ts"
import * as Outcome from "./Outcome.ts"
import * as Reconnect from "./Reconnect.ts"

/**
 * How the queue is declared before subscribing (it is created when missing).
 *
 * @since 0.1.0
 */
export interface QueueOptions {
  /** Survives a broker restart. Default true. */
  readonly durable?: boolean | undefined
  /** `x-` arguments, e.g. `{ "x-queue-type": "quorum" }` or a dead-letter exchange. */
  readonly arguments?: Readonly<Record<string, unknown>> | undefined
}

/**
 * @since 0.1.0
 */
export interface ConsumerOptions<S extends Schema.Top, E, R> {
  readonly queue: string
  /** Decodes the JSON body. A body that does not decode is rejected, never handled. */
  readonly schema: S
  readonly handler: (body: S["Type"], message: Message) => Effect.Effect<unknown, E, R>
  /** What to do when the handler fails or dies. Default `"requeue"`. */
  readonly onFailure?: Outcome.FailurePolicy | undefined
  /** Unacknowledged messages the broker sends at once. Default: the worker's prefetch. */
  readonly prefetch?: number | undefined
  /** Handlers running at once. Default: the prefetch. */
  readonly concurrency?: number | undefined
  readonly queueOptions?: QueueOptions | undefined
}

/**
 * What a worker passes to each consumer it runs.
 *
 * @since 0.1.0
 */
export interface RunSettings {
  readonly prefetch: number
  readonly shutdownGrace: Duration.Input
  /** Backoff for reopening the channel after the broker closed it. */
  readonly backoff: Reconnect.BackoffOptions
  /** Called each time the consumer has subscribed, and each time it stopped consuming. */
  readonly onSubscribed: (subscribed: boolean) => Effect.Effect<void>
}

const TypeId = "~effect-rabbitmq-worker/Consumer"

/**
 * A consumer whose handler needs the services `R`.
 *
 * @since 0.1.0
 */
export interface Consumer<out R = never> {
  readonly [TypeId]: typeof TypeId
  readonly queue: string
  /** Runs the consumer on `connection` until interrupted. Used by {@link Worker}. */
  readonly run: (connection: Connection, settings: RunSettings) => Effect.Effect<never, never, R>
}

/**
 * Describes a consumer.
 *
 * @since 0.1.0
 */
export const make = <S extends Schema.Top, E, R>(
  options: ConsumerOptions<S, E, R>
): Consumer<R | S["DecodingServices"]> => {
  const queue = options.queue
  const policy = options.onFailure ?? "requeue"
  const decodeBody = Schema.decodeUnknownEffect(Schema.fromJsonString(options.schema))

  const process = (delivery: amqp.ConsumeMessage, message: Message) =>
    decodeBody(delivery.content.toString("utf8")).pipe(
      Effect.mapError((error) => new Outcome.DecodeError({ reason: error.message })),
      Effect.flatMap((body) =>
        Effect.mapError(options.handler(body, message), (error) => new Outcome.HandlerError({ error }))
      )
    )

  const run = (connection: Connection, settings: RunSettings) => {
    const prefetch = options.prefetch ?? settings.prefetch
    const concurrency = options.concurrency ?? prefetch
    return Reconnect.loop(
      {
        backoff: settings.backoff,
        onRetry: ({ attempt, cause, delay }) =>
          Effect.andThen(
            settings.onSubscribed(false),
            Effect.logWarning(
              `consumer of ${queue} stopped (${Outcome.describe(Cause.squash(cause))}); ` +
                `opening a new channel in ${Math.round(Duration.toMillis(delay))} ms (attempt ${attempt})`
            )
          )
      },
      (ready) =>
        consumeOnChannel(connection, { prefetch, concurrency, settings, ready }).pipe(
          // A channel that closed with its connection needs no new channel: the
          // session ends and the next one starts this consumer again. (A
          // channel closed by the broker carries a reply code; one closed with
          // its connection does not, and its `close` event comes before the
          // connection's.)
          Effect.catch((error) =>
            (error._tag === "ChannelClosed" && error.code === undefined) || !connection.isOpen()
              ? Effect.never
              : Effect.fail(error)
          )
        )
    ).pipe(Effect.annotateLogs({ queue }))
  }

  /** One channel's lifetime: ends (fails) when the channel closes. */
  const consumeOnChannel = (
    connection: Connection,
    { concurrency, prefetch, ready, settings }: {
      readonly prefetch: number
      readonly concurrency: number
      readonly settings: RunSettings
      readonly ready: Effect.Effect<void>
    }
  ) =>
    Effect.gen(function*() {
      const channel = yield* Channel.make(connection, { prefetch })
      const deliveries = yield* Queue.unbounded<amqp.ConsumeMessage, Cause.Done>()

      const handleNext = Effect.uninterruptibleMask((restore) =>
        Effect.flatMap(restore(Queue.take(deliveries)), (delivery) => {
          const message = toMessage(delivery, queue)
          return restore(process(delivery, message)).pipe(
            Effect.exit,
            Effect.flatMap((exit) => settle(channel, delivery, Outcome.decide(exit, policy))),
            Effect.annotateLogs(message.id === undefined ? {} : { messageId: message.id })
          )
        })
      )
      const handlers = yield* FiberSet.make()
      for (let i = 0; i < concurrency; i++) {
        // A handler fiber stops when the delivery queue ends (shutdown).
        yield* FiberSet.run(handlers, Effect.forever(handleNext).pipe(Effect.catch(() => Effect.void)))
      }

      let consumerTag: string | undefined
      // Registered after the channel and the handler fibers, so it runs before
      // either is closed: the drain still has a channel to ack on.
      yield* Effect.addFinalizer(() =>
        drain(channel, {
          consumerTag: () => consumerTag,
          deliveries,
          handlers,
          grace: settings.shutdownGrace
        })
      )

      const declare = channel.call("queue.declare", (ch) =>
        ch.assertQueue(queue, {
          durable: options.queueOptions?.durable ?? true,
          arguments: options.queueOptions?.arguments
        }))

      while (true) {
        yield* declare
        const cancelled = yield* Deferred.make<void>()
        const reply = yield* channel.call("basic.consume", (ch) =>
          ch.consume(queue, (delivery) => {
            if (delivery === null) {
              // The broker cancelled the subscription (the queue was deleted).
              Deferred.doneUnsafe(cancelled, Exit.void)
            } else if (!Queue.offerUnsafe(deliveries, delivery)) {
              // Arrived after the drain began: straight back to the queue.
              settleNow(channel, delivery, requeueAtShutdown)
            }
          }, { noAck: false }))
        consumerTag = reply.consumerTag
        yield* ready
        yield* settings.onSubscribed(true)
        yield* Effect.raceFirst(Deferred.await(cancelled), channel.closed)
        consumerTag = undefined
        yield* settings.onSubscribed(false)
        yield* Effect.logWarning(`the broker cancelled the consumer of ${queue}; declaring the queue and subscribing again`)
      }
    }).pipe(Effect.scoped)

  return { [TypeId]: TypeId, queue, run }
}

const requeueAtShutdown: Outcome.Decision = { _tag: "Requeue", reason: "not started before shutdown" }

/**
 * Cancels the subscription, returns unstarted deliveries, waits for running
 * handlers up to the grace period. Handlers still running afterwards are
 * interrupted when the handler fiber set closes, and requeue their messages.
 */
const drain = (
  channel: Channel.Channel,
  options: {
    readonly consumerTag: () => string | undefined
    readonly deliveries: Queue.Queue<amqp.ConsumeMessage, Cause.Done>
    readonly handlers: FiberSet.FiberSet<unknown, unknown>
    readonly grace: Duration.Input
  }
) =>
  Effect.gen(function*() {
    // On a dead channel nothing can be settled any more: the broker has
    // already requeued every unacked delivery of it.
    if (!channel.isOpen()) return
    const tag = options.consumerTag()
    if (tag !== undefined) {
      yield* channel.call("basic.cancel", (ch) => ch.cancel(tag)).pipe(Effect.timeout("5 seconds"), Effect.ignore)
    }
    const unstarted = yield* Queue.clear(options.deliveries)
    for (const delivery of unstarted) settleNow(channel, delivery, requeueAtShutdown)
    yield* Queue.end(options.deliveries)
    const running = yield* FiberSet.size(options.handlers)
    const drained = yield* FiberSet.awaitEmpty(options.handlers).pipe(
      Effect.interruptible,
      Effect.timeoutOption(options.grace)
    )
    if (drained._tag === "None") {
      yield* Effect.logWarning(
        `shutdown grace period of ${Duration.format(Duration.fromInputUnsafe(options.grace))} is over: ` +
          `interrupting the handlers still running; their messages go back to the queue`
      )
    } else if (unstarted.length > 0 || running > 0) {
      yield* Effect.logDebug(`drained: ${unstarted.length} unstarted messages requeued`)
    }
  })

/** Sends the decision on the delivering channel; false when that channel is gone. */
const settleNow = (channel: Channel.Channel, delivery: amqp.ConsumeMessage, decision: Outcome.Decision): boolean => {
  if (!channel.isOpen()) return false
  try {
    switch (decision._tag) {
      case "Ack":
        channel.raw.ack(delivery)
        break
      case "Requeue":
        channel.raw.nack(delivery, false, true)
        break
      case "Reject":
        channel.raw.nack(delivery, false, false)
        break
    }
    return true
  } catch {
    // The channel is closing: the broker requeues the message.
    return false
  }
}

const settle = (channel: Channel.Channel, delivery: amqp.ConsumeMessage, decision: Outcome.Decision) => {
  const sent = settleNow(channel, delivery, decision)
  if (!sent) {
    return Effect.logDebug(`channel closed before the message could be settled (${decision._tag}); the broker redelivers it`)
  }
  switch (decision._tag) {
    case "Ack":
      return Effect.void
    case "Requeue":
      return Effect.logWarning(`message requeued: ${decision.reason}`)
    case "Reject":
      return Effect.logWarning(`message rejected: ${decision.reason}`)
  }
}

const stringOrUndefined = (value: unknown): string | undefined => typeof value === "string" ? value : undefined

const toMessage = (delivery: amqp.ConsumeMessage, queue: string): Message => ({
  id: stringOrUndefined(delivery.properties.messageId),
  queue,
  redelivered: delivery.fields.redelivered,
  exchange: delivery.fields.exchange,
  routingKey: delivery.fields.routingKey,
  headers: delivery.properties.headers ?? {},
  contentType: stringOrUndefined(delivery.properties.contentType),
  correlationId: stringOrUndefined(delivery.properties.correlationId),
  content: delivery.content
})
