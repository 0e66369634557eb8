/**
 * One connection's lifetime: open the connection, declare the topology, open
 * the publisher's channel, run every consumer, and end when the connection is
 * lost. The session's scope owns the connection, and each consumer's scope
 * its channel, so every way out of a session (lost connection, interruption
 * at shutdown) closes in order: consumers drain first (their handlers can
 * still publish), then the publisher's channel, then the connection.
 *
 * @since 0.1.0
 */
import { type Duration, Effect, Queue, SubscriptionRef } from "effect"
import * as Channel from "./Channel.ts"
import * as Connection from "./Connection.ts"
import type * as Consumer from "./Consumer.ts"
import type * as Publisher from "./Publisher.ts"
import type * as Reconnect from "./Reconnect.ts"
import type { Status } from "./Status.ts"
import * as Topology from "./Topology.ts"

/**
 * @category models
 * @since 0.1.0
 */
export interface SessionOptions {
  readonly connection: Connection.ConnectionOptions
  readonly prefetch: number
  readonly maxBodyBytes: number
  readonly handlerTimeout: Duration.Input
  readonly shutdownGrace: Duration.Input
  readonly backoff: Reconnect.BackoffOptions
  readonly topology: Topology.Topology
}

/**
 * Why a session ended. Only a {@link Topology.TopologyConflict} is final.
 *
 * @category models
 * @since 0.1.0
 */
export type SessionError =
  | Connection.ConnectError
  | Connection.ConnectionLost
  | Channel.ChannelError
  | Topology.TopologyConflict

/**
 * A session for {@link Reconnect.loop}: `ready` is called once every consumer
 * has subscribed.
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = <R>(
  options: SessionOptions,
  consumers: ReadonlyArray<SessionConsumer<R>>,
  publisher: SessionPublisher,
  status: SubscriptionRef.SubscriptionRef<Status>
) => {
  // With several broker addresses (the nodes of a cluster), the first session
  // starts at a random one, so that replicas spread over the nodes, and each
  // next session at the one after the address it was connected to, so that a
  // lost node is the last one tried again.
  let next = Math.floor(Math.random() * Connection.addresses(options.connection.url).length)
  return (ready: Effect.Effect<void>): Effect.Effect<never, SessionError, R> =>
    Effect.gen(function*() {
      const connection = yield* Connection.make(options.connection, next)
      next = connection.address + 1
      yield* Effect.logInfo(`connected to ${connection.server}`)
      // Declared before anything consumes, so that a conflict stops the worker
      // before a single message is taken.
      yield* Topology.declare(connection, options.topology)
      yield* connected(status, consumers)
      yield* Effect.forkScoped(reportBlocks(connection, status))

      const checkReady = readiness(status, consumers, ready)
      // Forked into the session's scope before the consumers run, so its channel
      // closes after they drained.
      const publisherUp = (up: boolean) => SubscriptionRef.update(status, (s): Status => ({ ...s, publisher: up }))
      yield* Effect.forkScoped(publisher.attach(connection, {
        backoff: options.backoff,
        onReady: Effect.andThen(publisherUp(true), checkReady),
        onDown: publisherUp(false)
      }))

      const runConsumers = Effect.forEach(
        consumers,
        ({ consumer, name }) =>
          consumer.run(connection, {
            prefetch: options.prefetch,
            maxBodyBytes: options.maxBodyBytes,
            handlerTimeout: options.handlerTimeout,
            shutdownGrace: options.shutdownGrace,
            backoff: options.backoff,
            topology: options.topology,
            publisher: publisher.service,
            onSubscribed: (subscribed) =>
              Effect.andThen(
                SubscriptionRef.update(status, (s) => ({ ...s, consumers: { ...s.consumers, [name]: subscribed } })),
                checkReady
              )
          }),
        { concurrency: "unbounded", discard: true }
      )
      // Consumers only end on a topology conflict: otherwise the session ends
      // with the connection.
      return yield* Effect.raceFirst(connection.lost, Effect.andThen(runConsumers, Effect.never))
    }).pipe(Effect.scoped)
}

/**
 * @category models
 * @since 0.1.0
 */
export interface SessionConsumer<R> {
  readonly name: string
  readonly consumer: Consumer.Consumer<R>
}

/**
 * @category models
 * @since 0.1.0
 */
export interface SessionPublisher {
  readonly service: Publisher.Publisher["Service"]
  readonly attach: (connection: Connection.Connection, settings: Publisher.AttachSettings) => Effect.Effect<never>
}

/** A new connection: what went wrong before is over. */
const connected = <R>(status: SubscriptionRef.SubscriptionRef<Status>, consumers: ReadonlyArray<SessionConsumer<R>>) =>
  SubscriptionRef.update(status, (s): Status => ({
    ...s,
    connection: "connected",
    attempt: 0,
    nextRetryMs: undefined,
    lastError: undefined,
    blocked: undefined,
    publisher: false,
    consumers: Object.fromEntries(consumers.map(({ name }) => [name, false]))
  }))

/** The broker's blocks and unblocks of the connection, in the status and the log. */
const reportBlocks = (connection: Connection.Connection, status: SubscriptionRef.SubscriptionRef<Status>) =>
  Effect.forever(
    Effect.flatMap(Queue.take(connection.blockedChanges), ({ blocked, reason }) =>
      Effect.andThen(
        SubscriptionRef.update(status, (s): Status => ({ ...s, blocked: blocked ? reason ?? "blocked" : undefined })),
        blocked
          ? Effect.logWarning(`the broker blocked the connection (${reason}): publishing waits`)
          : Effect.logInfo("the broker unblocked the connection")
      ))
  )

/** Checked whenever a part comes up: calls `ready` once, when the publisher and every consumer are. */
const readiness = <R>(
  status: SubscriptionRef.SubscriptionRef<Status>,
  consumers: ReadonlyArray<SessionConsumer<R>>,
  ready: Effect.Effect<void>
) => {
  let reported = false
  return Effect.gen(function*() {
    const current = yield* SubscriptionRef.get(status)
    if (!reported && current.publisher && Object.values(current.consumers).every(Boolean)) {
      reported = true
      yield* ready
      yield* Effect.logInfo(
        consumers.length === 0
          ? "ready (no consumers)"
          : `consuming from ${consumers.map((c) => c.consumer.queue).join(", ")}`
      )
    }
  })
}
