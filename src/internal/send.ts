/**
 * One publish, from the message to its confirm: the JSON message with the
 * publisher's defaults, the send on a usable channel (trying the next
 * channel when this one closed before sending) within one deadline, the
 * typed error for every end but a confirm, and the producer span when a
 * tracer exports spans.
 *
 * @internal
 */
import { type Duration, Effect, type Schema, Tracer } from "effect"
import type * as Metrics from "../Metrics.ts"
import type { OutgoingMessage } from "../Publisher.ts"
import {
  type PublishError,
  PublishNacked,
  PublishRefused,
  PublishTimeout,
  PublishUnconfirmed,
  PublishUnroutable
} from "../PublishError.ts"
import * as Tracing from "../Tracing.ts"
import type * as Confirms from "./confirms.ts"
import type * as Outlet from "./outlet.ts"

/**
 * The message `publish` sends: the JSON body with the publisher's defaults.
 *
 * Instances of classes, not object literals: a publish holds its message
 * until the confirm, and V8 allocates straight into the old generation the
 * objects of a literal whose objects it sees survive young collections
 * (allocation-site pretenuring). With many publishes in flight it did so for
 * these, and every message then lived until a full collection: at 1,000 in
 * flight, one about every 4 seconds, and young collections of 20-28 ms.
 */
export const jsonMessage = (message: OutgoingMessage<Schema.Top>, messageId: string, json: string): Confirms.Outgoing =>
  new JsonMessage(message.exchange ?? "", message.routingKey, Buffer.from(json, "utf8"), new JsonProperties(message, messageId))

class JsonMessage implements Confirms.Outgoing {
  readonly exchange: string
  readonly routingKey: string
  readonly content: Buffer
  readonly options: JsonProperties
  constructor(exchange: string, routingKey: string, content: Buffer, options: JsonProperties) {
    this.exchange = exchange
    this.routingKey = routingKey
    this.content = content
    this.options = options
  }
}

/** The AMQP properties of a JSON message (amqplib reads them by name; those left undefined are not sent). */
class JsonProperties {
  readonly messageId: string
  readonly contentType = "application/json"
  readonly persistent: boolean
  readonly mandatory: boolean
  readonly timestamp = Math.floor(Date.now() / 1000)
  readonly correlationId?: string
  readonly headers?: Readonly<Record<string, unknown>>
  constructor(message: OutgoingMessage<Schema.Top>, messageId: string) {
    this.messageId = messageId
    this.persistent = message.persistent ?? true
    this.mandatory = message.mandatory ?? true
    if (message.correlationId !== undefined) this.correlationId = message.correlationId
    if (message.headers !== undefined) this.headers = message.headers
  }
}

/**
 * Sends on the usable channel and waits for the confirm, until the deadline;
 * tries the next channel when this one closed before sending. Counted in
 * the metrics.
 */
export const sender = (
  outlet: Outlet.Outlet,
  timeout: Duration.Duration,
  timeoutMillis: number,
  metrics: ReturnType<typeof Metrics.forPublisher>
) =>
(message: Confirms.Outgoing): Effect.Effect<void, PublishError> => {
  const messageId = message.options.messageId
  const deadline = Date.now() + timeoutMillis
  const on = (current: Outlet.Live): Effect.Effect<void, PublishError> =>
    Effect.flatMap(current.confirms.send(message, deadline), (result) => {
      if (result._tag === "Confirmed") {
        metrics.confirmed()
        return Effect.void
      }
      if (result._tag === "NotSent") return Effect.andThen(Effect.yieldNow, attempt)
      const error = failure(message, result, current, timeout)
      metrics.failed(error._tag)
      return Effect.fail(error)
    })
  const attempt: Effect.Effect<void, PublishError> = Effect.suspend(() => {
    const current = outlet.usableNow()
    return current !== undefined ? on(current) : Effect.flatMap(outlet.ready(messageId, deadline), on)
  })
  // Usable now (the usual case): straight to the channel.
  const current = outlet.usableNow()
  return current !== undefined ? on(current) : attempt
}

/** The typed error for a send that did not end in a confirm. */
const failure = (
  message: Confirms.Outgoing,
  result: Exclude<Confirms.SendResult, { readonly _tag: "Confirmed" | "NotSent" }>,
  current: Outlet.Live,
  timeout: Duration.Duration
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
 * `send`, in a producer span whose `traceparent` the message carries (so the
 * consumer's span continues the trace) when a tracer exports spans; without
 * one, spans and headers would be work for nothing.
 */
export const sendObserved = (
  send: (message: Confirms.Outgoing) => Effect.Effect<void, PublishError>,
  message: Confirms.Outgoing
): Effect.Effect<void, PublishError> =>
  Effect.withFiber((fiber) => {
    if (fiber.getRef(Tracer.Tracer) === defaultTracer) return send(message)
    return Effect.flatMap(
      Tracing.currentTraceparent,
      (traceparent) => send({ ...message, options: { ...message.options, headers: { ...message.options.headers, ...traceparent } } })
    ).pipe(Tracing.publish(message.exchange, message.routingKey, message.options.messageId))
  })

const defaultTracer = Tracer.Tracer.defaultValue()
