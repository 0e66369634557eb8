/**
 * One publish, from the message to its confirm: the JSON message with the
 * publisher's defaults, the send on a usable channel (trying the next
 * channel when this one closed before sending) within one deadline, and the
 * producer span when a tracer exports spans. How a sent publish ends (and
 * its typed error) is `internal/confirms.ts`.
 *
 * @internal
 */
import { Effect, type Schema, Tracer } from "effect"
import type { OutgoingMessage } from "../Publisher.ts"
import type { PublishError } from "../PublishError.ts"
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
 * tries the next channel when this one closed before sending. Usable now
 * (the usual case), a publish goes straight to the channel's confirms,
 * which end it: no step of its own.
 */
export const sender = (outlet: Outlet.Outlet) => {
  const on = (message: Confirms.Outgoing, deadline: number) => (current: Outlet.Live) => current.confirms.send(message, deadline, retry)
  const attempt = (message: Confirms.Outgoing, deadline: number): Effect.Effect<void, PublishError> => {
    const current = outlet.usableNow()
    return current !== undefined
      ? current.confirms.send(message, deadline, retry)
      : Effect.flatMap(outlet.ready(message.options.messageId, deadline), on(message, deadline))
  }
  // The channel closed before the message went out: the next one cannot duplicate it.
  const retry: Confirms.Retry = (message, deadline) => Effect.andThen(Effect.yieldNow, Effect.suspend(() => attempt(message, deadline)))
  return attempt
}

/**
 * `send`, in a producer span whose `traceparent` the message carries (so the
 * consumer's span continues the trace) when a tracer exports spans; without
 * one, spans and headers would be work for nothing.
 */
export const sendObserved = (
  send: (message: Confirms.Outgoing, deadline: number) => Effect.Effect<void, PublishError>,
  message: Confirms.Outgoing,
  timeoutMillis: number
): Effect.Effect<void, PublishError> =>
  Effect.withFiber((fiber) => {
    // One deadline for the whole publish, from when it starts.
    const deadline = Date.now() + timeoutMillis
    if (fiber.getRef(Tracer.Tracer) === defaultTracer) return send(message, deadline)
    return Effect.flatMap(
      Tracing.currentTraceparent,
      (traceparent) =>
        send({ ...message, options: { ...message.options, headers: { ...message.options.headers, ...traceparent } } }, deadline)
    ).pipe(Tracing.publish(message.exchange, message.routingKey, message.options.messageId))
  })

const defaultTracer = Tracer.Tracer.defaultValue()
