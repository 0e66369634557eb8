/**
 * A consumer: a queue, schemas for the message body (and headers), and a typed
 * handler.
 *
 * `make` only describes a consumer; a {@link Worker} runs it inside every
 * session. While it runs, a consumer owns one channel at a time:
 *
 * - it declares its queues, sets the prefetch and subscribes (manual acks);
 * - each delivery is checked (size, content type, headers), decoded with the
 *   schema and handled by one of `concurrency` handler fibers; the outcome is
 *   settled on the channel that delivered it, by the rules in {@link Outcome};
 * - if the broker cancels the subscription (the queue was deleted), it
 *   declares the queue again and subscribes again on the same channel;
 * - if the broker closes the channel (404, 405, ...), it opens a new one after
 *   a backoff, without touching the connection;
 * - when its scope closes (shutdown), it cancels the subscription, puts the
 *   deliveries no handler has started back in the queue, lets running handlers
 *   finish within the grace period, and interrupts the rest, whose messages go
 *   back to the queue too.
 *
 * With the default failure policy (retry), a consumer of queue `q` also
 * declares `q.retry` (a queue whose messages expire after the retry delay and
 * go back to `q`) and `q.dlq` (where messages that will never succeed are
 * parked); `q` itself is declared with `q.retry` as its dead-letter target.
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
import type * as amqp from "amqplib"
import { randomUUID } from "node:crypto"
import { Cause, Context, Deferred, Duration, Effect, Exit, FiberSet, LogLevel, References, Schema, SchemaAST, Tracer } from "effect"
import { SchemaJITCompiler } from "effect/schema"
import * as Acks from "./Acks.ts"
import * as Channel from "./Channel.ts"
import type { Connection } from "./Connection.ts"
import type { Message } from "./Message.ts"
import * as Metrics from "./Metrics.ts"
import * as Outcome from "./Outcome.ts"
import type * as Publisher from "./Publisher.ts"
import * as Reconnect from "./Reconnect.ts"
import * as Topology from "./Topology.ts"
import * as Tracing from "./Tracing.ts"

/**
 * How the consumer's queue is declared (it is created when missing).
 *
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
  readonly queueOptions?: QueueOptions | undefined
}

/**
 * What a worker passes to each consumer it runs.
 *
 * @since 0.1.0
 */
export interface RunSettings {
  readonly prefetch: number
  readonly maxBodyBytes: number
  readonly shutdownGrace: Duration.Input
  /** Backoff for reopening the channel after the broker closed it. */
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
 * @since 0.1.0
 */
export interface Consumer<out R = never> {
  readonly [TypeId]: typeof TypeId
  readonly queue: string
  /** The queues this consumer needs (its own, and the retry and dead-letter queues of its policy). */
  readonly topology: Topology.Topology
  /** Where messages are parked, unless the policy is `reject`. */
  readonly deadLetterQueue: string | undefined
  /**
   * Runs the consumer on `connection` until interrupted; fails only when its
   * queue conflicts with the broker's. Used by {@link Worker}.
   */
  readonly run: (connection: Connection, settings: RunSettings) => Effect.Effect<never, Topology.TopologyConflict, R>
}

/**
 * A schema that decodes without services: `Schema.Struct(...)` and friends.
 *
 * @since 0.1.0
 */
export type BodySchema = Schema.Top & Schema.ConstraintDecoder<unknown>

const isJson = (contentType: string) => {
  const type = contentType.split(";")[0]!.trim().toLowerCase()
  return type === "application/json" || type.endsWith("+json")
}

/**
 * Describes a consumer.
 *
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
  const retryQueue = `${queue}.retry`
  const deadLetterQueue = Outcome.usesDeadLetterQueue(policy) ? `${queue}.dlq` : undefined
  const decodeBody = jsonDecoder(options.schema)
  const decodeHeaders = options.headers === undefined ? undefined : Schema.decodeUnknownExit(options.headers)

  const topology = Topology.make({
    queues: [
      {
        name: queue,
        type: options.queueOptions?.type,
        durable: options.queueOptions?.durable,
        arguments: options.queueOptions?.arguments,
        // A retry is a rejection: the broker moves the message to the retry
        // queue, where it waits out the delay and comes back.
        deadLetter: typeof policy === "object" ? { exchange: "", routingKey: retryQueue } : undefined
      },
      ...(typeof policy === "object"
        ? [{
          name: retryQueue,
          messageTtlMs: Math.round(Duration.toMillis(policy.delay)),
          deadLetter: { exchange: "", routingKey: queue }
        }]
        : []),
      ...(deadLetterQueue === undefined ? [] : [{ name: deadLetterQueue }])
    ]
  })

  /**
   * Size, content type, headers, body: each can stop the message before the
   * handler. Synchronous, so a message that never reaches a handler costs no
   * fiber.
   */
  const prepare = (
    delivery: amqp.ConsumeMessage,
    maxBodyBytes: number,
    attempt: number
  ): { readonly body: S["Type"]; readonly message: Message<H["Type"]> } | Outcome.DecodeError => {
    const content = delivery.content
    if (content.length > maxBodyBytes) {
      return new Outcome.DecodeError({
        kind: "BodyTooLarge",
        reason: `${content.length} bytes, more than the maximum of ${maxBodyBytes}`
      })
    }
    const contentType = stringOrUndefined(delivery.properties.contentType)
    if (contentType !== undefined && !isJson(contentType)) {
      return new Outcome.DecodeError({
        kind: "UnsupportedContentType",
        reason: `content type ${contentType}, expected application/json`
      })
    }
    const rawHeaders: Readonly<Record<string, unknown>> = delivery.properties.headers ?? {}
    let headers: H["Type"] = rawHeaders
    if (decodeHeaders !== undefined) {
      const decoded = decodeHeaders(rawHeaders)
      if (Exit.isFailure(decoded)) {
        return new Outcome.DecodeError({ kind: "InvalidHeaders", reason: causeMessage(decoded.cause) })
      }
      headers = decoded.value
    }
    const body = decodeBody(content.toString("utf8"))
    if (Exit.isFailure(body)) {
      return new Outcome.DecodeError({ kind: "InvalidBody", reason: causeMessage(body.cause) })
    }
    return {
      body: body.value,
      message: {
        id: stringOrUndefined(delivery.properties.messageId),
        queue,
        redelivered: delivery.fields.redelivered,
        attempt,
        exchange: delivery.fields.exchange,
        routingKey: delivery.fields.routingKey,
        headers,
        contentType,
        correlationId: stringOrUndefined(delivery.properties.correlationId),
        content
      }
    }
  }

  const decide = (
    delivery: amqp.ConsumeMessage,
    attempt: number,
    exit: Exit.Exit<unknown, Outcome.DecodeError | Outcome.HandlerError<E>>
  ): Outcome.Decision => Outcome.decide(exit, policy, { attempt, redelivered: delivery.fields.redelivered })

  /** A handler that throws instead of returning an effect has died: same outcome as a defect. */
  const callHandler = (body: S["Type"], message: Message<H["Type"]>): Effect.Effect<unknown, E, R> => {
    try {
      return options.handler(body, message)
    } catch (defect) {
      return Effect.die(defect)
    }
  }

  const run = (connection: Connection, settings: RunSettings) => {
    const prefetch = options.prefetch ?? settings.prefetch
    const concurrency = options.concurrency ?? prefetch
    const maxBodyBytes = options.maxBodyBytes ?? settings.maxBodyBytes
    return Effect.gen(function*() {
      const context = yield* Effect.context<never>()
      const metrics = Metrics.forQueue(queue, context)
      // Decided once, not per message: spans only when a tracer exports them,
      // ack log lines only when someone reads Debug.
      const traced = (yield* Tracer.Tracer) !== Tracer.Tracer.defaultValue()
      const logAcks = yield* LogLevel.isEnabled("Debug")
      return yield* Reconnect.loop(
        {
          backoff: settings.backoff,
          isFatal: (error: unknown): error is Topology.TopologyConflict => error instanceof Topology.TopologyConflict,
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
          consumeOnChannel(connection, { prefetch, concurrency, maxBodyBytes, settings, ready, metrics, traced, logAcks })
            .pipe(Effect.catch(Channel.unlessConnectionLost(connection)))
      )
    }).pipe(Effect.annotateLogs({ queue }))
  }

  /**
   * One channel's lifetime: ends (fails) when the channel closes.
   *
   * Deliveries wait in `waiting` for a handler fiber (see `pump`); at most
   * `concurrency` run at once.
   */
  const consumeOnChannel = (
    connection: Connection,
    { concurrency, logAcks, maxBodyBytes, metrics, prefetch, ready, settings, traced }: {
      readonly prefetch: number
      readonly concurrency: number
      readonly maxBodyBytes: number
      readonly settings: RunSettings
      readonly ready: Effect.Effect<void>
      readonly metrics: ReturnType<typeof Metrics.forQueue>
      readonly traced: boolean
      readonly logAcks: boolean
    }
  ) =>
    Effect.gen(function*() {
      const channel = yield* Channel.make(connection, { prefetch })
      const acks = Acks.make(channel.raw, {
        isOpen: channel.isOpen,
        // Often enough that the broker's prefetch window never runs dry.
        maxPending: Math.max(1, Math.floor(prefetch / 4)),
        onSent: metrics.acked
      })
      // Runs after the handlers are done (or interrupted) and before the
      // channel closes: acks still queued go out on this channel.
      yield* Effect.addFinalizer(() => Effect.sync(acks.flush))
      const settle = settler(channel, acks, settings.publisher, { queue, deadLetterQueue })

      /**
       * Decides, settles and counts the end of one delivery's handling; returns
       * the log line to write, if any (an ack is logged only at Debug).
       */
      const finish = (
        delivery: amqp.ConsumeMessage,
        startedAt: number,
        decision: Outcome.Decision
      ): Effect.Effect<void> | undefined => {
        const settled = settle(delivery, decision)
        return Effect.isEffect(settled)
          ? Effect.flatMap(settled, (s) => report(s, startedAt) ?? Effect.void)
          : report(settled, startedAt)
      }
      const report = ({ log, outcome }: Settled, startedAt: number): Effect.Effect<void> | undefined => {
        const seconds = (performance.now() - startedAt) / 1000
        metrics.settled(outcome, seconds)
        return outcome === "Ack" && !logAcks
          ? undefined
          : Effect.annotateLogs(log, { outcome: outcome ?? "none", durationMs: Math.round(seconds * 1000) })
      }

      /**
       * Handles one delivery, settles it, then goes on with `next`. The
       * handler alone runs interruptibly (`restore`), so that an outcome is
       * always settled.
       */
      const handleOne = (
        delivery: amqp.ConsumeMessage,
        attempt: number,
        restore: <A, E1, R1>(effect: Effect.Effect<A, E1, R1>) => Effect.Effect<A, E1, R1>,
        next: Effect.Effect<void, never, R>
      ): Effect.Effect<void, never, R> => {
        const startedAt = performance.now()
        const headers = delivery.properties.headers
        metrics.received()
        const prepared = prepare(delivery, maxBodyBytes, attempt)
        if (prepared instanceof Outcome.DecodeError) {
          return andThen(finish(delivery, startedAt, decide(delivery, attempt, Exit.fail(prepared))), next)
        }
        const handler = callHandler(prepared.body, prepared.message)
        const succeeded = () => finish(delivery, startedAt, ack)
        const failed = (cause: Cause.Cause<E>) => finish(delivery, startedAt, decide(delivery, attempt, handlerFailure(cause)))
        if (!traced) {
          return Effect.matchCauseEffect(restore(handler), {
            onSuccess: () => andThen(succeeded(), next),
            onFailure: (cause) => andThen(failed(cause), next)
          })
        }
        // Traced: the outcome is settled (and logged) inside the message's span; `next` runs after it.
        const handled = Effect.matchCauseEffect(restore(Tracing.handle(handler)), {
          onSuccess: () => succeeded() ?? Effect.void,
          onFailure: (cause) => failed(cause) ?? Effect.void
        })
        return Effect.flatMap(
          Tracing.consume(queue, headers, {
            "messaging.message.id": prepared.message.id,
            "messaging.rabbitmq.destination.routing_key": delivery.fields.routingKey,
            "messaging.rabbitmq.message.attempt": attempt
          })(handled),
          () => next
        )
      }

      const waiting: Array<amqp.ConsumeMessage> = []
      let running = 0
      let draining = false
      let pumpScheduled = false
      /**
       * A handler fiber: handles waiting deliveries one after another until
       * none wait. At tens of thousands of messages a second the per-message
       * cost of the runtime shows, so the fiber is made uninterruptible once
       * (handlers run in `restore`), and each message's log annotations are
       * set on the fiber's context directly rather than with a scoped
       * `Effect.annotateLogs` around every message.
       */
      const work: Effect.Effect<void, never, R> = Effect.uninterruptibleMask((restore) =>
        Effect.withFiber((fiber) => {
          const base = fiber.context
          const annotations = Context.get(base, References.CurrentLogAnnotations)
          const next: Effect.Effect<void, never, R> = Effect.suspend(() => {
            const delivery = draining ? undefined : waiting.shift()
            if (delivery === undefined) {
              fiber.setContext(base)
              running--
              return Effect.void
            }
            const messageId = stringOrUndefined(delivery.properties.messageId)
            const attempt = Outcome.attemptOf(delivery.properties.headers, queue)
            fiber.setContext(Context.add(
              base,
              References.CurrentLogAnnotations,
              messageId === undefined ? { ...annotations, attempt } : { ...annotations, messageId, attempt }
            ))
            return handleOne(delivery, attempt, restore, next)
          })
          return next
        })
      )
      const handlers = yield* FiberSet.make<void, never>()
      const start = yield* FiberSet.runtime(handlers)<R>()
      /**
       * Starts handler fibers for the deliveries that wait, up to
       * `concurrency`. A fiber runs at once, synchronously, until its handler
       * suspends: one whose handlers never suspend works through every
       * waiting delivery before `start` returns, so a burst of deliveries
       * costs one fiber; each handler that suspends leaves the rest to the
       * next fiber.
       */
      const pump = () => {
        pumpScheduled = false
        while (!draining && waiting.length > 0 && running < concurrency) {
          running++
          start(work)
        }
      }

      let consumerTag: string | undefined
      // Registered after the channel and the handler fibers, so it runs before
      // either is closed: the drain still has a channel to ack on.
      yield* Effect.addFinalizer(() =>
        Effect.suspend(() => {
          draining = true
          return drain(channel, {
            consumerTag,
            unstarted: () => waiting.splice(0),
            requeue: (delivery) => acks.nack(delivery, true),
            handlers,
            grace: settings.shutdownGrace
          })
        })
      )

      while (true) {
        yield* Topology.declareQueue(channel, settings.topology, queue)
        const cancelled = yield* Deferred.make<void>()
        const reply = yield* channel.call("basic.consume", (ch) =>
          ch.consume(queue, (delivery) => {
            if (delivery === null) {
              // The broker cancelled the subscription (the queue was deleted).
              Deferred.doneUnsafe(cancelled, Exit.void)
              return
            }
            acks.delivered(delivery)
            if (draining) {
              // Arrived after the drain began: straight back to the queue.
              acks.nack(delivery, true)
              return
            }
            waiting.push(delivery)
            // After the rest of this socket read, so that its deliveries go as a burst.
            if (!pumpScheduled) {
              pumpScheduled = true
              queueMicrotask(pump)
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

  return { [TypeId]: TypeId, queue, topology, deadLetterQueue, run }
}

/**
 * Cancels the subscription, returns unstarted deliveries, waits for running
 * handlers up to the grace period. Handlers still running afterwards are
 * interrupted when the handler fiber set closes, and requeue their messages.
 */
const drain = (
  channel: Channel.Channel,
  options: {
    readonly consumerTag: string | undefined
    readonly unstarted: () => ReadonlyArray<amqp.ConsumeMessage>
    readonly requeue: (delivery: amqp.ConsumeMessage) => boolean
    readonly handlers: FiberSet.FiberSet<void, never>
    readonly grace: Duration.Input
  }
) =>
  Effect.gen(function*() {
    // On a dead channel nothing can be settled any more: the broker has
    // already requeued every unacked delivery of it.
    if (!channel.isOpen()) return
    const tag = options.consumerTag
    if (tag !== undefined) {
      yield* channel.call("basic.cancel", (ch) => ch.cancel(tag)).pipe(Effect.timeout("5 seconds"), Effect.ignore)
    }
    const unstarted = options.unstarted()
    for (const delivery of unstarted) options.requeue(delivery)
    const drained = yield* FiberSet.awaitEmpty(options.handlers).pipe(
      Effect.interruptible,
      Effect.timeoutOption(options.grace)
    )
    if (drained._tag === "None") {
      yield* Effect.logWarning(
        `shutdown grace period of ${Duration.format(Duration.fromInputUnsafe(options.grace))} is over: ` +
          `interrupting the handlers still running; their messages go back to the queue`
      )
    } else if (unstarted.length > 0) {
      yield* Effect.logDebug(`drained: ${unstarted.length} unstarted messages requeued`)
    }
  })

/** What was done with a delivery, and the log line that says so. */
interface Settled {
  /** The outcome sent to the broker; undefined when the channel was gone. */
  readonly outcome: Outcome.Decision["_tag"] | undefined
  readonly log: Effect.Effect<void>
}

const channelGone = (decision: string): Settled => ({
  outcome: undefined,
  log: Effect.logDebug(`channel closed before the message could be settled (${decision}); the broker redelivers it`)
})

/**
 * Carries out a decision on the delivering channel. Dead-lettering publishes
 * a copy to the dead-letter queue and acks the original once the broker
 * confirmed the copy; if that fails, the original goes back to the queue
 * (after a pause, so a dead-letter queue that cannot take messages does not
 * make a hot loop).
 */
const settler = (
  channel: Channel.Channel,
  acks: Acks.Acks,
  publisher: Publisher.Publisher["Service"],
  names: { readonly queue: string; readonly deadLetterQueue: string | undefined }
) => {
  const nacked = (delivery: amqp.ConsumeMessage, decision: Outcome.Decision, requeue: boolean, log: Effect.Effect<void>) =>
    acks.nack(delivery, requeue) ? { outcome: decision._tag, log } : channelGone(decision._tag)
  const acked = (delivery: amqp.ConsumeMessage, log: Effect.Effect<void>, counted = true): Settled => {
    if (!channel.isOpen()) return channelGone("Ack")
    acks.ack(delivery, counted)
    return { outcome: "Ack", log }
  }
  const ackLog = Effect.logDebug("message acked")

  /** Synchronous, except dead-lettering, which publishes first. */
  return (delivery: amqp.ConsumeMessage, decision: Outcome.Decision): Settled | Effect.Effect<Settled> => {
    switch (decision._tag) {
      case "Ack":
        return acked(delivery, ackLog)
      case "Requeue":
        return nacked(delivery, decision, true, Effect.logWarning(`message requeued: ${decision.reason}`))
      case "Reject":
        return nacked(delivery, decision, false, Effect.logWarning(`message rejected: ${decision.reason}`))
      case "Retry":
        // Without requeue: the queue's dead-letter target is the retry queue.
        return nacked(
          delivery,
          decision,
          false,
          Effect.logWarning(`message failed (attempt ${decision.attempt}), will be retried: ${decision.reason}`)
        )
      case "DeadLetter":
        break
    }
    const { failure } = decision
    const deadLetterQueue = names.deadLetterQueue ?? `${names.queue}.dlq`
    const properties = delivery.properties
    const park = publisher.publishRaw({
      exchange: "",
      routingKey: deadLetterQueue,
      content: delivery.content,
      options: {
        messageId: stringOrUndefined(properties.messageId) ?? randomUUID(),
        persistent: true,
        ...(typeof properties.contentType === "string" ? { contentType: properties.contentType } : {}),
        ...(typeof properties.correlationId === "string" ? { correlationId: properties.correlationId } : {}),
        headers: {
          ...properties.headers,
          "x-error-tag": failure.tag,
          "x-error-message": failure.message,
          "x-attempts": failure.attempts,
          "x-original-queue": names.queue,
          "x-original-exchange": delivery.fields.exchange,
          "x-original-routing-key": delivery.fields.routingKey
        }
      }
    })
    return park.pipe(
      // Once the delivering channel is gone the original comes back anyway.
      Effect.raceFirst(channel.closed),
      Effect.matchEffect({
        onSuccess: () => {
          const settled = acked(
            delivery,
            Effect.logWarning(
              `message dead-lettered to ${deadLetterQueue} after ${failure.attempts} attempt(s): ` +
                `${failure.tag}: ${failure.message}`
            ),
            false
          )
          return Effect.succeed(settled.outcome === "Ack" ? { ...settled, outcome: "DeadLetter" as const } : settled)
        },
        onFailure: (error) =>
          channel.isOpen()
            ? Effect.sleep("1 second").pipe(
              Effect.as(nacked(
                delivery,
                { _tag: "Requeue", reason: "dead-lettering failed" },
                true,
                Effect.logError(`could not dead-letter the message (${error.message}); requeued it`)
              ))
            )
            : Effect.succeed(channelGone("DeadLetter"))
      })
    )
  }
}

const ack: Outcome.Decision = { _tag: "Ack" }

/** Runs `first`, if there is anything to run, then `next`. */
const andThen = <R>(first: Effect.Effect<void> | undefined, next: Effect.Effect<void, never, R>): Effect.Effect<void, never, R> =>
  first === undefined ? next : Effect.flatMap(first, () => next)

/** A handler's failure or defect, as the outcome rules see it. */
const handlerFailure = <E>(cause: Cause.Cause<E>): Exit.Exit<never, Outcome.HandlerError<E>> =>
  Exit.failCause(Cause.map(cause, (error) => new Outcome.HandlerError({ error })))

/**
 * Decodes JSON text with a schema. When decoding changes nothing (the schema's
 * encoded and decoded forms are the same, as for plain structs of strings,
 * numbers and arrays), `JSON.parse` and a type check do the work at half the
 * cost; the full decoder runs only to explain a failure. The type check is
 * compiled by Effect's schema JIT (about ten times faster than the interpreter
 * on a small struct; where code generation is not allowed, Effect falls back
 * to the interpreter).
 */
const jsonDecoder = <S extends BodySchema>(schema: S) => {
  const decode = Schema.decodeUnknownExit(Schema.fromJsonString(schema))
  if (SchemaAST.toEncoded(schema.ast) !== schema.ast) return decode
  SchemaJITCompiler.enable(SchemaAST.toType(schema.ast))
  const is = Schema.is(schema)
  return (text: string): Exit.Exit<S["Type"], Schema.SchemaError> => {
    let value: unknown
    try {
      value = JSON.parse(text)
    } catch {
      return decode(text)
    }
    return is(value) ? Exit.succeed(value) : decode(text)
  }
}

/** The message of a schema failure, from the cause `decodeUnknownExit` returns. */
const causeMessage = (cause: Cause.Cause<Schema.SchemaError>): string => {
  const error = Cause.findErrorOption(cause)
  return error._tag === "Some" ? error.value.message : Cause.pretty(cause)
}

const stringOrUndefined = (value: unknown): string | undefined => typeof value === "string" ? value : undefined
