/**
 * Confirmed publishing in the worker's reconnecting sessions.
 *
 * `publish` succeeds only once the broker has confirmed the message. Every
 * other end is a typed {@link PublishError}: the broker nacked it, it was
 * unroutable (messages are published as mandatory by default), the client
 * refused it (a field AMQP cannot carry), it was not sent or not confirmed
 * within the timeout (one deadline for the whole publish), too many
 * publishes were already waiting, or the connection was lost before the
 * confirm came (then the message may or may not have arrived: publishing it
 * again can duplicate it, never lose it). The failures of the infrastructure
 * rather than of the message are marked transient ({@link Outcome.isTransient}):
 * a handler that fails with one has its message requeued without using up
 * an attempt.
 *
 * While there is no connection, or the broker has blocked it (a memory or
 * disk alarm), or the socket's write buffer is full, publishes wait instead
 * of piling up in memory, bounded by `timeout` and `maxWaiting`. Confirms
 * are tracked in `internal/confirms.ts`, the send is in `internal/send.ts`.
 *
 * Bodies are JSON, encoded with a Schema, so a value of the wrong shape
 * cannot be published. Every message gets a `messageId` (a random UUID unless
 * given), `contentType: application/json`, a timestamp, the caller's headers,
 * and is persistent unless told otherwise.
 *
 * Handlers of a {@link Worker} get the worker's publisher as the `Publisher`
 * service.
 *
 * @example
 * ```ts
 * import { Effect, Schema } from "effect"
 * import { Publisher } from "effect-rabbitmq-worker"
 *
 * const Done = Schema.Struct({ id: Schema.String, ok: Schema.Boolean })
 *
 * const reportDone = (id: string) =>
 *   Effect.gen(function*() {
 *     const publisher = yield* Publisher.Publisher
 *     yield* publisher.publish({ routingKey: "tasks.done", schema: Done, body: { id, ok: true }, messageId: id })
 *   })
 * ```
 *
 * @since 0.1.0
 */
import type * as Channel from "./Channel.ts"
import { randomUUID } from "node:crypto"
import { Cause, Context, Duration, Effect, Exit, type Schema } from "effect"
import { encoderOf } from "./internal/encode.ts"
import * as Outlet from "./internal/outlet.ts"
import { jsonMessage, sender, sendObserved } from "./internal/send.ts"
import * as Metrics from "./Metrics.ts"
import * as Options from "./Options.ts"

// The errors are their own module; the publisher is where users meet them.
export * from "./PublishError.ts"
import { PublishEncodeError, type PublishError } from "./PublishError.ts"

/**
 * A message to publish; `body` is encoded to JSON with `schema`.
 *
 * @category models
 * @since 0.1.0
 */
export interface OutgoingMessage<S extends Schema.Top> {
  /** Default "" (the default exchange, which routes by queue name). */
  readonly exchange?: string | undefined
  readonly routingKey: string
  readonly schema: S
  readonly body: S["Type"]
  /** Default: a random UUID. */
  readonly messageId?: string | undefined
  readonly correlationId?: string | undefined
  readonly headers?: Readonly<Record<string, unknown>> | undefined
  /** Fail with {@link PublishUnroutable} when no queue gets it. Default true. */
  readonly mandatory?: boolean | undefined
  /** Written to disk by durable queues. Default true. */
  readonly persistent?: boolean | undefined
}

/**
 * A message whose body is already bytes (used to dead-letter deliveries as
 * they came).
 *
 * @category models
 * @since 0.1.0
 */
export interface RawMessage {
  readonly exchange: string
  readonly routingKey: string
  readonly content: Buffer
  readonly options: Channel.PublishOptions & { readonly messageId: string }
  readonly mandatory?: boolean | undefined
}

/**
 * @category models
 * @since 0.1.0
 */
export interface PublisherOptions {
  /** One deadline for a whole publish: the wait for a usable connection and for the confirm. Default 10 seconds. */
  readonly timeout?: Duration.Input | undefined
  /** Publishes that may wait at once; more fail with {@link PublishBufferFull}. Default 1000. */
  readonly maxWaiting?: number | undefined
}

/**
 * Counts for tests and metrics.
 *
 * @category models
 * @since 0.1.0
 */
export interface PublisherStats {
  /** Waiting for a connection, an unblocked broker or a drained socket. */
  readonly waiting: number
  /** Sent, not yet confirmed. */
  readonly unconfirmed: number
}

/**
 * @category services
 * @since 0.1.0
 */
export class Publisher extends Context.Service<Publisher, {
  readonly publish: <S extends Schema.Top>(
    message: OutgoingMessage<S>
  ) => Effect.Effect<void, PublishError, S["EncodingServices"]>
  readonly publishRaw: (message: RawMessage) => Effect.Effect<void, PublishError>
  /** Waits, without a deadline, until a publish would go out at once: connected, unblocked, drained. */
  readonly awaitUsable: Effect.Effect<void>
  readonly stats: Effect.Effect<PublisherStats>
}>()("effect-rabbitmq-worker/Publisher") {}

/**
 * What a session gives the publisher's `attach`: its backoff, and what to
 * report when the publisher gets a channel and loses it.
 *
 * @category models
 * @since 0.1.0
 */
export type AttachSettings = Outlet.AttachSettings

/**
 * The publisher of a worker, and `attach`, which a session runs to give it a
 * channel on the session's connection.
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = (options: PublisherOptions = {}) =>
  Effect.gen(function*() {
    const timeout = Duration.fromInputUnsafe(options.timeout ?? Options.defaults.publishTimeout)
    const timeoutMillis = Duration.toMillis(timeout)
    const metrics = Metrics.forPublisher(yield* Effect.context<never>())
    const outlet = yield* Outlet.make({ timeout, maxWaiting: options.maxWaiting ?? Options.defaults.publishMaxWaiting, metrics })
    const send = sender(outlet)

    const encodeFailed = (messageId: string, error: Schema.SchemaError) => {
      metrics.failed("PublishEncodeError")
      return new PublishEncodeError({ messageId, reason: error.message })
    }
    /** The rare publish whose schema encodes as an effect (its transformations may need services). */
    const encodeThenSend = <S extends Schema.Top>(
      message: OutgoingMessage<S>,
      messageId: string,
      encoded: Effect.Effect<string, Schema.SchemaError, S["EncodingServices"]>
    ) =>
      Effect.flatMap(
        Effect.mapError(encoded, (error) => encodeFailed(messageId, error)),
        (json) => sendObserved(send, jsonMessage(message, messageId, json), timeoutMillis)
      )

    const publish = <S extends Schema.Top>(message: OutgoingMessage<S>): Effect.Effect<void, PublishError, S["EncodingServices"]> => {
      const messageId = message.messageId ?? randomUUID()
      const encoded = encoderOf(message.schema)(message.body)
      // Most schemas encode synchronously, to an `Exit`: no fiber step for them.
      if (!Exit.isExit(encoded)) return encodeThenSend(message, messageId, encoded)
      const exit = encoded as Exit.Exit<string, Schema.SchemaError>
      if (Exit.isSuccess(exit)) return sendObserved(send, jsonMessage(message, messageId, exit.value), timeoutMillis)
      const error = Cause.findErrorOption(exit.cause)
      return error._tag === "Some" ? Effect.fail(encodeFailed(messageId, error.value)) : Effect.die(Cause.squash(exit.cause))
    }

    const service = Publisher.of({
      publish,
      // Bytes as they are, e.g. a delivery being dead-lettered: its own headers (and traceparent) are kept.
      publishRaw: (message) =>
        sendObserved(send, { ...message, options: { ...message.options, mandatory: message.mandatory ?? true } }, timeoutMillis),
      awaitUsable: outlet.awaitUsable,
      stats: Effect.sync(outlet.stats)
    })

    return { service, attach: outlet.attach } as const
  })
