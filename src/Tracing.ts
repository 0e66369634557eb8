/**
 * Spans for publishing, consuming and handling messages, and the W3C
 * `traceparent` header that carries a trace from the publisher to the
 * consumer through the broker. Spans go to whatever `Tracer` the program
 * provides (an OTLP exporter in the worker process when
 * `OTEL_EXPORTER_OTLP_ENDPOINT` is set, see {@link Telemetry}).
 *
 * Span names and attributes follow OpenTelemetry's messaging conventions:
 * `<queue> process` (kind consumer, parent: the publisher's span when the
 * message carries a `traceparent`), `handle` inside it for the handler, and
 * `<exchange or queue> publish` (kind producer).
 *
 * @since 0.1.0
 */
import { Effect, Option, type Tracer } from "effect"

/** Spans on the per-message path skip the stack trace: capturing it costs more than the rest of the span. */
const captureStackTrace = false
import * as Headers from "effect/http/Headers"
import * as HttpTraceContext from "effect/http/HttpTraceContext"

/**
 * The span a message's `traceparent` header names, if it has a valid one.
 *
 * @category utils
 * @since 0.1.0
 */
export const parentOf = (headers: Readonly<Record<string, unknown>> | undefined): Tracer.ExternalSpan | undefined => {
  const traceparent = headers?.["traceparent"]
  if (typeof traceparent !== "string") return undefined
  return Option.getOrUndefined(HttpTraceContext.w3c(Headers.fromRecordUnsafe({ traceparent })))
}

/**
 * The `traceparent` header for the current span, or nothing outside a span.
 *
 * @category utils
 * @since 0.1.0
 */
export const currentTraceparent: Effect.Effect<Readonly<Record<string, string>>> = Effect.currentSpan.pipe(
  Effect.map((span) => ({ traceparent: HttpTraceContext.toHeaders(span)["traceparent"]! })),
  Effect.orElseSucceed(() => ({}))
)

/**
 * Runs the processing of one delivery in a consumer span.
 *
 * @category utils
 * @since 0.1.0
 */
export const consume = (
  queue: string,
  headers: Readonly<Record<string, unknown>> | undefined,
  attributes: Record<string, unknown>
) =>
<A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> => {
  const parent = parentOf(headers)
  return Effect.withSpan(self, `${queue} process`, {
    kind: "consumer",
    captureStackTrace,
    ...(parent === undefined ? {} : { parent }),
    attributes: {
      "messaging.system": "rabbitmq",
      "messaging.operation.type": "process",
      "messaging.destination.name": queue,
      ...attributes
    }
  })
}

/**
 * Runs a handler in its span.
 *
 * @category utils
 * @since 0.1.0
 */
export const handle = <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.withSpan(self, "handle", { captureStackTrace })

/**
 * Runs a publish in a producer span.
 *
 * @category utils
 * @since 0.1.0
 */
export const publish = (exchange: string, routingKey: string, messageId: string) =>
<A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.withSpan(self, `${exchange === "" ? routingKey : exchange} publish`, {
    kind: "producer",
    captureStackTrace,
    attributes: {
      "messaging.system": "rabbitmq",
      "messaging.operation.type": "publish",
      "messaging.destination.name": exchange === "" ? routingKey : exchange,
      "messaging.rabbitmq.destination.routing_key": routingKey,
      "messaging.message.id": messageId
    }
  })
