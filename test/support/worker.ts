/**
 * Starts an in-process worker against the test broker, with a unique
 * connection name (so a test can close exactly its own connection), short
 * heartbeats and a short backoff.
 */
import { Effect, Redacted, type Scope } from "effect"
import type * as Connection from "../../src/Connection.ts"
import type * as Consumer from "../../src/Consumer.ts"
import type * as Publisher from "../../src/Publisher.ts"
import * as Worker from "../../src/Worker.ts"
import { uniqueName, URL } from "./broker.ts"

export const fastBackoff = { base: "100 millis", max: "1 second", healthyAfter: "2 seconds" } as const

export const startWorker = <R = never>(
  consumers: ReadonlyArray<Consumer.Consumer<R>>,
  overrides: Partial<Worker.WorkerOptions> & { readonly url?: string; readonly tls?: Connection.TlsOptions } = {}
): Effect.Effect<
  { readonly worker: Worker.Worker["Service"]; readonly name: string },
  never,
  Exclude<R, Publisher.Publisher> | Scope.Scope
> =>
  Effect.gen(function*() {
    const name = uniqueName("worker")
    const { tls, url, ...rest } = overrides
    const worker = yield* Worker.make({
      connection: { url: Redacted.make(url ?? URL), name, heartbeatSeconds: 2, tls },
      reconnect: fastBackoff,
      shutdownGrace: "2 seconds",
      ...rest
    }, consumers).pipe(Effect.orDie)
    return { worker, name }
  })
