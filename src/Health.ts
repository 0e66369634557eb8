/**
 * The HTTP endpoints an operator (or Kubernetes, or Prometheus) uses to watch
 * a worker:
 *
 * - `GET /healthz`: liveness. 200 while the worker runs, even while the broker
 *   is unreachable (restarting the process would not bring the broker back);
 *   503 once the worker has stopped.
 * - `GET /readyz`: readiness. 200 while everything a handler needs is there:
 *   connected, not blocked by a broker alarm, the publisher's channel open,
 *   every consumer subscribed; otherwise 503 with a JSON body that says what
 *   is missing, e.g.
 *   `{"status":"not ready","connection":"reconnecting","attempt":4,"nextRetryMs":1600,...}`,
 *   and 503 from the moment shutdown begins.
 * - `GET /metrics`: the {@link Metrics} in the Prometheus text format.
 *
 * The server reads the shared {@link Status.WorkerStatus}; build it before the
 * worker, so it closes after the worker drained.
 *
 * @example
 * ```ts
 * import { Effect, Layer } from "effect"
 * import { Health, Status, Worker } from "effect-rabbitmq-worker"
 *
 * const program = Worker.run(options, [tasks]).pipe(
 *   Effect.provide(Health.layer({ host: "0.0.0.0", port: 9464 })),
 *   Effect.provide(Status.layer)
 * )
 * ```
 *
 * @since 0.1.0
 */
import { NodeHttpServer } from "@effect/platform-node"
import { createServer } from "node:http"
import { Config, Effect, Layer, Schema, SubscriptionRef } from "effect"
import { HttpRouter, HttpServerResponse } from "effect/http"
import type { HttpServer, HttpServerError } from "effect/http"
import { PrometheusMetrics } from "effect/observability"
import * as Status from "./Status.ts"

/**
 * @category models
 * @since 0.1.0
 */
export interface HealthOptions {
  /** Default 127.0.0.1; `0.0.0.0` to be reachable from outside a container. */
  readonly host?: string | undefined
  /** Default 9464; 0 picks a free port. */
  readonly port?: number | undefined
}

const json = (status: number, body: unknown) => HttpServerResponse.jsonUnsafe(body, { status })

const liveness = Effect.gen(function*() {
  const status = yield* SubscriptionRef.get(yield* Status.WorkerStatus)
  return status.connection === "stopped"
    ? json(503, { status: "stopped" })
    : json(200, { status: "ok", connection: status.connection })
})

const readiness = Effect.gen(function*() {
  const status = yield* SubscriptionRef.get(yield* Status.WorkerStatus)
  return Status.isReady(status)
    ? json(200, { status: "ready", connection: status.connection, consumers: status.consumers })
    : json(503, { status: "not ready", ...status })
})

/**
 * The routes, for an application that runs its own HTTP server.
 *
 * @category layers
 * @since 0.1.0
 */
export const routes = Layer.mergeAll(
  HttpRouter.add("GET", "/healthz", liveness),
  HttpRouter.add("GET", "/readyz", readiness),
  PrometheusMetrics.layerHttp({ path: "/metrics" })
)

/**
 * Serves the routes on `host:port`.
 *
 * @category layers
 * @since 0.1.0
 */
export const layer = (
  options: HealthOptions = {}
): Layer.Layer<HttpServer.HttpServer, HttpServerError.ServeError, Status.WorkerStatus> =>
  HttpRouter.serve(routes, { disableLogger: true }).pipe(
    Layer.provideMerge(NodeHttpServer.layer(createServer, {
      host: options.host ?? "127.0.0.1",
      port: options.port ?? 9464
    }))
  )

/**
 * `HTTP_HOST` (default 127.0.0.1) and `HTTP_PORT` (default 9464) from the
 * environment.
 *
 * @category config
 * @since 0.1.0
 */
export const options: Config.Config<HealthOptions> = Config.all({
  host: Config.schema(Schema.NonEmptyString, "HTTP_HOST").pipe(Config.withDefault("127.0.0.1")),
  port: Config.Port("HTTP_PORT").pipe(Config.withDefault(9464))
})

/**
 * The server on `HTTP_HOST:HTTP_PORT`.
 *
 * @category layers
 * @since 0.1.0
 */
export const layerConfig: Layer.Layer<
  HttpServer.HttpServer,
  HttpServerError.ServeError | Config.ConfigError,
  Status.WorkerStatus
> = Layer.unwrap(
  Effect.gen(function*() {
    return layer(yield* options)
  })
)
