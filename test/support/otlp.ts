/**
 * A small OTLP/HTTP (JSON) receiver for traces: what a collector would get.
 */
import * as http from "node:http"
import { Effect, type Scope } from "effect"

export interface ReceivedSpan {
  readonly traceId: string
  readonly spanId: string
  readonly parentSpanId: string | undefined
  readonly name: string
  readonly kind: number
  readonly attributes: Record<string, unknown>
  readonly service: string | undefined
}

interface KeyValue {
  readonly key: string
  readonly value: Record<string, unknown>
}

const plain = (attributes: ReadonlyArray<KeyValue> | undefined) =>
  Object.fromEntries((attributes ?? []).map(({ key, value }) => [key, Object.values(value)[0]]))

export const receiver: Effect.Effect<{ readonly url: string; readonly spans: Array<ReceivedSpan> }, never, Scope.Scope> =
  Effect.gen(function*() {
    const spans: Array<ReceivedSpan> = []
    const server = http.createServer((request, response) => {
      let body = ""
      request.setEncoding("utf8")
      request.on("data", (chunk: string) => (body += chunk))
      request.on("end", () => {
        if (request.url === "/v1/traces") {
          const data = JSON.parse(body) as {
            resourceSpans: Array<{
              resource: { attributes?: ReadonlyArray<KeyValue> }
              scopeSpans: Array<{ spans: Array<Omit<ReceivedSpan, "attributes" | "service"> & { attributes?: ReadonlyArray<KeyValue> }> }>
            }>
          }
          for (const resourceSpan of data.resourceSpans) {
            const service = plain(resourceSpan.resource.attributes)["service.name"]
            for (const scope of resourceSpan.scopeSpans) {
              for (const span of scope.spans) {
                spans.push({
                  ...span,
                  attributes: plain(span.attributes),
                  service: typeof service === "string" ? service : undefined
                })
              }
            }
          }
        }
        response.writeHead(200, { "content-type": "application/json" })
        response.end("{}")
      })
    })
    const port = yield* Effect.acquireRelease(
      Effect.callback<number>((resume) => {
        server.listen(0, "127.0.0.1", () => {
          const address = server.address()
          resume(Effect.succeed(typeof address === "object" && address !== null ? address.port : 0))
        })
      }),
      () => Effect.sync(() => server.close())
    )
    return { url: `http://127.0.0.1:${port}`, spans }
  })
