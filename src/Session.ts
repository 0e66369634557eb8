/**
 * One connection's lifetime: open the connection, run every consumer on it,
 * and end when the connection is lost. The session's scope owns the
 * connection, and each consumer's scope its channel, so every way out of a
 * session (lost connection, interruption at shutdown) closes consumers first,
 * then channels, then the connection.
 *
 * @since 0.1.0
 */
import { type Duration, Effect, SubscriptionRef } from "effect"
import * as Connection from "./Connection.ts"
import type * as Consumer from "./Consumer.ts"
import type * as Reconnect from "./Reconnect.ts"
import type { Status } from "./Status.ts"

/**
 * @since 0.1.0
 */
export interface SessionOptions {
  readonly connection: Connection.ConnectionOptions
  readonly prefetch: number
  readonly shutdownGrace: Duration.Input
  readonly backoff: Reconnect.BackoffOptions
}

/**
 * A session for {@link Reconnect.loop}: `ready` is called once every consumer
 * has subscribed. Fails when connecting fails or the connection is lost.
 *
 * @since 0.1.0
 */
export const make = <R>(
  options: SessionOptions,
  consumers: ReadonlyArray<{ readonly name: string; readonly consumer: Consumer.Consumer<R> }>,
  status: SubscriptionRef.SubscriptionRef<Status>
) =>
(ready: Effect.Effect<void>): Effect.Effect<never, Connection.ConnectError | Connection.ConnectionLost, R> =>
  Effect.gen(function*() {
    const connection = yield* Connection.make(options.connection)
    yield* SubscriptionRef.update(status, (s): Status => ({
      ...s,
      connection: "connected",
      nextRetryMs: undefined,
      consumers: Object.fromEntries(consumers.map(({ name }) => [name, false]))
    }))
    yield* Effect.logInfo(`connected to ${connection.server}`)

    let readyReported = false
    const onSubscribed = (name: string) => (subscribed: boolean) =>
      Effect.gen(function*() {
        const next = yield* SubscriptionRef.updateAndGet(status, (s) => ({
          ...s,
          consumers: { ...s.consumers, [name]: subscribed }
        }))
        if (!readyReported && Object.values(next.consumers).every(Boolean)) {
          readyReported = true
          yield* ready
          yield* Effect.logInfo(`consuming from ${consumers.map((c) => c.consumer.queue).join(", ")}`)
        }
      })

    const runConsumers = Effect.forEach(
      consumers,
      ({ consumer, name }) =>
        consumer.run(connection, {
          prefetch: options.prefetch,
          shutdownGrace: options.shutdownGrace,
          backoff: options.backoff,
          onSubscribed: onSubscribed(name)
        }),
      { concurrency: "unbounded", discard: true }
    )
    // Consumers never end on their own: the session ends with the connection.
    return yield* Effect.raceFirst(connection.lost, Effect.andThen(runConsumers, Effect.never))
  }).pipe(Effect.scoped)
