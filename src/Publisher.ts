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
 * are tracked in `internal/confirms.ts`.
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
import type * as amqp from "amqplib"
import { randomUUID } from "node:crypto"
import { Cause, Context, Duration, Effect, Exit, Latch, Schema, SchemaAST, Tracer } from "effect"
import * as Channel from "./Channel.ts"
import type { Connection } from "./Connection.ts"
import * as Confirms from "./internal/confirms.ts"
import * as Metrics from "./Metrics.ts"
import * as Options from "./Options.ts"
import * as Outcome from "./Outcome.ts"
import * as Reconnect from "./Reconnect.ts"
import * as Tracing from "./Tracing.ts"

// The errors are their own module; the publisher is where users meet them.
export * from "./PublishError.ts"
import {
  type PublishError,
  PublishBufferFull,
  PublishEncodeError,
  PublishNacked,
  PublishRefused,
  PublishTimeout,
  PublishUnconfirmed,
  PublishUnroutable
} from "./PublishError.ts"

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
  readonly options: amqp.Options.Publish & { readonly messageId: string }
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
 * What a session gives the publisher's `attach`.
 *
 * @category models
 * @since 0.1.0
 */
export interface AttachSettings {
  readonly backoff: Reconnect.BackoffOptions
  /** The publisher has a channel. */
  readonly onReady: Effect.Effect<void>
  /** The publisher lost its channel and is opening a new one. */
  readonly onDown: Effect.Effect<void>
}

/** The session's confirm channel, while it is open. */
interface Live {
  readonly channel: Channel.Channel<amqp.ConfirmChannel>
  readonly confirms: Confirms.Confirms
  readonly unblocked: Latch.Latch
  readonly drained: Latch.Latch
}

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
    const maxWaiting = options.maxWaiting ?? Options.defaults.publishMaxWaiting
    const metrics = Metrics.forPublisher(yield* Effect.context<never>())
    let live: Live | undefined
    const available = yield* Latch.make(false)
    let waiting = 0

    const usable = (current: Live | undefined): current is Live =>
      current !== undefined && current.unblocked.isOpen() && current.drained.isOpen()

    /** Waits, for as long as it takes, until a channel can take a message: connected, unblocked, drained. */
    const awaitUsable: Effect.Effect<void> = Effect.suspend(() =>
      usable(live)
        ? Effect.void
        : available.await.pipe(
          Effect.andThen(Effect.suspend(() => live === undefined ? Effect.void : live.unblocked.await)),
          Effect.andThen(Effect.suspend(() => live === undefined ? Effect.void : live.drained.await)),
          Effect.andThen(Effect.suspend(() => awaitUsable))
        )
    )

    /**
     * A usable channel, waiting for one until `deadline` (one deadline for
     * the whole publish, however often the connection comes and goes).
     */
    const ready = (
      messageId: string,
      deadline: number
    ): Effect.Effect<Live, PublishTimeout | PublishBufferFull> =>
      Effect.suspend(() => {
        const current = live
        if (usable(current)) return Effect.succeed(current)
        if (waiting >= maxWaiting) return Effect.fail(new PublishBufferFull({ messageId, maxWaiting }))
        waiting++
        return awaitUsable.pipe(
          Effect.timeoutOrElse({
            duration: Math.max(0, deadline - Date.now()),
            orElse: () => Effect.fail(new PublishTimeout({ messageId, timeout, sent: false }))
          }),
          Effect.ensuring(Effect.sync(() => {
            waiting--
          })),
          Effect.andThen(Effect.suspend(() => ready(messageId, deadline)))
        )
      })

    /**
     * Sends on the live channel and waits for the confirm, until the
     * deadline; tries the next channel when this one closed before sending.
     * Counted in the metrics.
     */
    const send = (message: Confirms.Outgoing): Effect.Effect<void, PublishError> => {
      const messageId = message.options.messageId
      const deadline = Date.now() + timeoutMillis
      const on = (current: Live): Effect.Effect<void, PublishError> =>
        Effect.flatMap(current.confirms.send(message, deadline), (result) => {
          if (result._tag === "Confirmed") {
            metrics.confirmed()
            return Effect.void
          }
          if (result._tag === "NotSent") return Effect.andThen(Effect.yieldNow, attempt)
          const error = failure(message, result, current)
          metrics.failed(error._tag)
          return Effect.fail(error)
        })
      const attempt: Effect.Effect<void, PublishError> = Effect.suspend(() => {
        const current = live
        return usable(current) ? on(current) : Effect.flatMap(ready(messageId, deadline), on)
      })
      // Usable now (the usual case): straight to the channel.
      const current = live
      return usable(current) ? on(current) : attempt
    }

    const failure = (
      message: Confirms.Outgoing,
      result: Exclude<Confirms.SendResult, { readonly _tag: "Confirmed" | "NotSent" }>,
      current: Live
    ): PublishError => {
      const messageId = message.options.messageId
      switch (result._tag) {
        case "Refused":
          return new PublishRefused({ messageId, reason: result.reason })
        case "Returned":
          return new PublishUnroutable({ messageId, exchange: message.exchange, routingKey: message.routingKey })
        case "Nacked":
          return new PublishNacked({ messageId })
        case "TimedOut":
          return new PublishTimeout({ messageId, timeout, sent: true })
        case "Closed": {
          // Say why when the broker closed the channel (e.g. 404, no such exchange).
          const why = current.channel.serverError()
          return new PublishUnconfirmed({
            messageId,
            reason: why === undefined ? result.reason : `${result.reason}: ${why.reason}`,
            code: why?.code
          })
        }
      }
    }

    /**
     * `send`, in a producer span whose `traceparent` the message carries
     * (so the consumer's span continues the trace) when a tracer exports
     * spans; without one, spans and headers would be work for nothing.
     */
    const sendObserved = (message: Confirms.Outgoing): Effect.Effect<void, PublishError> =>
      Effect.withFiber((fiber) => {
        if (fiber.getRef(Tracer.Tracer) === defaultTracer) return send(message)
        return Effect.flatMap(
          Tracing.currentTraceparent,
          (traceparent) =>
            send({ ...message, options: { ...message.options, headers: { ...message.options.headers, ...traceparent } } })
        ).pipe(Tracing.publish(message.exchange, message.routingKey, message.options.messageId))
      })

    const publish = <S extends Schema.Top>(message: OutgoingMessage<S>): Effect.Effect<void, PublishError, S["EncodingServices"]> => {
      const messageId = message.messageId ?? randomUUID()
      const sendJson = (json: string) =>
        sendObserved({
          exchange: message.exchange ?? "",
          routingKey: message.routingKey,
          content: Buffer.from(json, "utf8"),
          options: {
            messageId,
            contentType: "application/json",
            persistent: message.persistent ?? true,
            mandatory: message.mandatory ?? true,
            timestamp: Math.floor(Date.now() / 1000),
            ...(message.correlationId === undefined ? {} : { correlationId: message.correlationId }),
            ...(message.headers === undefined ? {} : { headers: message.headers })
          }
        })
      const encodeFailed = (error: Schema.SchemaError) => {
        metrics.failed("PublishEncodeError")
        return new PublishEncodeError({ messageId, reason: error.message })
      }
      const encoded = encoderOf(message.schema)(message.body)
      // Most schemas encode synchronously: no fiber step for them.
      if (Exit.isExit(encoded)) {
        const exit = encoded as Exit.Exit<string, Schema.SchemaError>
        if (Exit.isSuccess(exit)) return sendJson(exit.value)
        const error = Cause.findErrorOption(exit.cause)
        return error._tag === "Some" ? Effect.fail(encodeFailed(error.value)) : Effect.die(Cause.squash(exit.cause))
      }
      return Effect.flatMap(Effect.mapError(encoded, encodeFailed), sendJson)
    }

    /** Bytes as they are, e.g. a delivery being dead-lettered: its own headers (and traceparent) are kept. */
    const publishRaw = (message: RawMessage) =>
      sendObserved({ ...message, options: { ...message.options, mandatory: message.mandatory ?? true } })

    const service = Publisher.of({
      publish,
      publishRaw,
      awaitUsable,
      stats: Effect.sync(() => ({ waiting, unconfirmed: live?.confirms.unconfirmed() ?? 0 }))
    })

    /**
     * Keeps a confirm channel open on `connection` for the publisher until
     * interrupted, opening a new one after the broker closed it.
     */
    const attach = (
      connection: Connection,
      settings: AttachSettings
    ): Effect.Effect<never> =>
      Reconnect.loop(
        {
          backoff: settings.backoff,
          onRetry: ({ attempt, cause, delay }) =>
            Effect.andThen(
              settings.onDown,
              Effect.logWarning(
                `publisher channel closed (${Outcome.describe(Cause.squash(cause))}); ` +
                  `opening a new one in ${Math.round(Duration.toMillis(delay))} ms (attempt ${attempt})`
              )
            )
        },
        (ready) =>
          Effect.gen(function*() {
            const channel = yield* Channel.makeConfirm(connection)
            const drained = Latch.makeUnsafe(true)
            channel.raw.on("drain", () => drained.openUnsafe())
            const confirms = yield* Confirms.make(channel, { timeoutMillis, onFull: () => drained.closeUnsafe() })
            const current: Live = { channel, confirms, unblocked: connection.unblocked, drained }
            yield* Effect.acquireRelease(
              Effect.sync(() => {
                live = current
                available.openUnsafe()
              }),
              () =>
                Effect.sync(() => {
                  live = undefined
                  available.closeUnsafe()
                  // Wake the waiters of this channel's latches: they wait for the next channel.
                  drained.openUnsafe()
                })
            )
            yield* ready
            yield* settings.onReady
            return yield* channel.closed
          }).pipe(
            Effect.scoped,
            Effect.catch(Channel.unlessConnectionLost(connection))
          )
      )

    return { service, attach } as const
  })

const defaultTracer = Tracer.Tracer.defaultValue()

/** Each schema's JSON encoder, made once: making one costs far more than running it. */
const encoders = new WeakMap<Schema.Top, (body: unknown) => Effect.Effect<string, Schema.SchemaError, unknown>>()

/**
 * A schema that transforms nothing needs no services to encode: it is run
 * synchronously, to an `Exit`. Others encode as an effect (their
 * transformations may need services).
 */
const encoderOf = <S extends Schema.Top>(schema: S): (body: S["Type"]) => Effect.Effect<string, Schema.SchemaError, S["EncodingServices"]> => {
  let encoder = encoders.get(schema)
  if (encoder === undefined) {
    const codec = Schema.fromJsonString(schema)
    encoder = SchemaAST.toEncoded(schema.ast) === schema.ast
      ? Schema.encodeUnknownExit(codec as unknown as Schema.Codec<unknown, string>)
      : Schema.encodeUnknownEffect(codec)
    encoders.set(schema, encoder)
  }
  return encoder as (body: S["Type"]) => Effect.Effect<string, Schema.SchemaError, S["EncodingServices"]>
}

