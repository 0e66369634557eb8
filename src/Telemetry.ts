/**
 * Trace export for the worker process. When `OTEL_EXPORTER_OTLP_ENDPOINT` (or
 * `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, the spans of {@link Tracing}
 * (publish, process, handle) are sent with Effect's OTLP/HTTP exporter (JSON),
 * as `OTEL_SERVICE_NAME` (default `effect-rabbitmq-worker`), in batches every
 * `OTEL_BSP_SCHEDULE_DELAY` milliseconds (default 5000) and once more at
 * shutdown. `OTEL_SDK_DISABLED=true` turns it off. Without an endpoint,
 * nothing is exported.
 *
 * @since 0.1.0
 */
import { Config, Effect, Layer, Option, Schema } from "effect"
import { FetchHttpClient } from "effect/http"
import { OtlpExporter, OtlpSerialization, OtlpTracer } from "effect/observability"

const endpoint = Config.URL("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").pipe(
  Config.orElse(() =>
    Config.URL("OTEL_EXPORTER_OTLP_ENDPOINT").pipe(
      Config.map((url) => {
        url.pathname = `${url.pathname.replace(/\/$/, "")}/v1/traces`
        return url
      })
    )
  ),
  Config.option
)

/**
 * @category config
 * @since 0.1.0
 */
export const options = Config.all({
  endpoint,
  disabled: Config.Boolean("OTEL_SDK_DISABLED").pipe(Config.withDefault(false)),
  serviceName: Config.schema(Schema.NonEmptyString, "OTEL_SERVICE_NAME").pipe(
    Config.withDefault("effect-rabbitmq-worker")
  ),
  scheduleDelayMs: Config.schema(Schema.Int.check(Schema.isGreaterThan(0)), "OTEL_BSP_SCHEDULE_DELAY").pipe(
    Config.withDefault(5000)
  )
})

/**
 * The OTLP trace exporter as configured by the environment, or nothing.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerConfig: Layer.Layer<OtlpExporter.Flusher, Config.ConfigError> = Layer.unwrap(
  Effect.gen(function*() {
    const config = yield* options
    if (config.disabled || Option.isNone(config.endpoint)) return OtlpExporter.layerFlusher
    return OtlpTracer.layer({
      url: config.endpoint.value.toString(),
      resource: { serviceName: config.serviceName },
      exportInterval: config.scheduleDelayMs
    }).pipe(Layer.provide([OtlpSerialization.layerJson, FetchHttpClient.layer]))
  })
)
