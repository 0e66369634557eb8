/**
 * Starts the health server on a free port with a shared status, and reads it
 * over real HTTP.
 */
import { Context, Effect, Layer, Metric, type Scope } from "effect"
import { HttpServer } from "effect/http"
import * as Health from "../../src/Health.ts"
import * as Status from "../../src/Status.ts"

export interface Endpoint {
  readonly get: (path: string) => Effect.Effect<{ readonly status: number; readonly body: string }>
  readonly json: (path: string) => Effect.Effect<{ readonly status: number; readonly body: Record<string, unknown> }>
  /** The worker status and a private metric registry: provide them to the worker under test. */
  readonly context: Context.Context<Status.WorkerStatus>
}

export const start: Effect.Effect<Endpoint, never, Scope.Scope> = Effect.gen(function*() {
  const context = yield* Layer.build(Layer.provideMerge(Health.layer({ port: 0 }), Status.layer)).pipe(Effect.orDie)
  const address = Context.get(context, HttpServer.HttpServer).address
  const port = address._tag === "UnixPathAddress" ? 0 : address.port
  const get = (path: string) =>
    Effect.promise(async () => {
      const response = await fetch(`http://127.0.0.1:${port}${path}`)
      return { status: response.status, body: await response.text() }
    })
  return {
    get,
    json: (path) => Effect.map(get(path), ({ body, status }) => ({ status, body: JSON.parse(body) as Record<string, unknown> })),
    context: Context.pick(Status.WorkerStatus)(context)
  }
})

/** Runs `effect` with a metric registry of its own, so counts start at zero. */
export const isolatedMetrics = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.provideService(effect, Metric.MetricRegistry, new Map())
