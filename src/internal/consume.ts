/**
 * A consumer's run on one connection: channels one after another (a new
 * one after a backoff when the broker closes one), and on each channel
 * subscriptions one after another (a new one after a backoff when the
 * broker cancels one). The connection's loss ends the run: the worker's
 * session loop starts the next.
 *
 * @internal
 */
import { Cause, Duration, Effect, LogLevel, Tracer } from "effect"
import * as Acks from "../Acks.ts"
import * as Channel from "../Channel.ts"
import type { Connection } from "../Connection.ts"
import type { ConsumerOptions, RunSettings } from "../Consumer.ts"
import * as Metrics from "../Metrics.ts"
import * as Outcome from "../Outcome.ts"
import * as Reconnect from "../Reconnect.ts"
import * as Topology from "../Topology.ts"
import type { BodySchema, Prepared } from "./decode.ts"
import { type HandleOptions, handler } from "./handle.ts"
import { settler } from "./settle.ts"
import { ConsumerCancelled, subscribe } from "./subscription.ts"

/** What `Consumer.make` worked out once from the consumer's options. */
export interface Spec<S extends BodySchema, H extends BodySchema, E, R> {
  readonly options: ConsumerOptions<S, H, E, R>
  readonly policy: Outcome.FailurePolicy
  readonly deadLetterQueue: string | undefined
  readonly retryQueue: string | undefined
  readonly prepare: (delivery: Channel.Delivery, maxBodyBytes: number, attempt: number) =>
    | Prepared<S["Type"], H["Type"]>
    | Outcome.DecodeError
}

/** Runs until interrupted, or until the consumer's queue conflicts with the broker's. */
export const run = <S extends BodySchema, H extends BodySchema, E, R>(
  spec: Spec<S, H, E, R>,
  connection: Connection,
  settings: RunSettings
): Effect.Effect<never, Topology.TopologyConflict, R> => {
  const queue = spec.options.queue
  return Effect.gen(function*() {
    const prefetch = spec.options.prefetch ?? settings.prefetch
    const handling = yield* handlingOf(spec, settings)
    return yield* Reconnect.loop(
      {
        backoff: settings.backoff,
        isFatal: (error: unknown): error is Topology.TopologyConflict => error instanceof Topology.TopologyConflict,
        onRetry: ({ attempt, cause, delay }) =>
          Effect.andThen(
            settings.onSubscribed(false),
            Effect.logWarning(
              `consumer of ${queue} stopped (${Outcome.describe(Cause.squash(cause))}); ` +
                `opening a new channel in ${Math.round(Duration.toMillis(delay))} ms (attempt ${attempt})`
            )
          )
      },
      (ready) =>
        onChannel(spec, connection, settings, prefetch, handling, ready).pipe(
          Effect.catch(Channel.unlessConnectionLost(connection))
        )
    )
  }).pipe(Effect.annotateLogs({ queue }))
}

/** The parts of the handling that stay the same from channel to channel; decided once, not per message. */
const handlingOf = <S extends BodySchema, H extends BodySchema, E, R>(spec: Spec<S, H, E, R>, settings: RunSettings) =>
  Effect.gen(function*() {
    const context = yield* Effect.context<never>()
    return {
      queue: spec.options.queue,
      policy: spec.policy,
      prepare: spec.prepare,
      handler: spec.options.handler,
      maxBodyBytes: spec.options.maxBodyBytes ?? settings.maxBodyBytes,
      handlerTimeout: Duration.fromInputUnsafe(spec.options.handlerTimeout ?? settings.handlerTimeout),
      metrics: Metrics.forQueue(spec.options.queue, context),
      traced: (yield* Tracer.Tracer) !== Tracer.Tracer.defaultValue(),
      logAcks: yield* LogLevel.isEnabled("Debug")
    } satisfies Omit<HandleOptions<S, H, E, R>, "settle">
  })

/** One channel's lifetime: subscriptions one after another, until the channel closes. */
const onChannel = <S extends BodySchema, H extends BodySchema, E, R>(
  spec: Spec<S, H, E, R>,
  connection: Connection,
  settings: RunSettings,
  prefetch: number,
  handling: Omit<HandleOptions<S, H, E, R>, "settle">,
  ready: Effect.Effect<void>
) =>
  Effect.gen(function*() {
    const queue = spec.options.queue
    const channel = yield* Channel.make(connection, { prefetch })
    const acks = Acks.make(channel.raw, {
      isOpen: channel.isOpen,
      // Often enough that the broker's prefetch window never runs dry.
      maxPending: Math.max(1, Math.floor(prefetch / 4)),
      onSent: handling.metrics.acked
    })
    // Runs after the handlers are done (or interrupted) and before the
    // channel closes: acks still queued go out on this channel.
    yield* Effect.addFinalizer(() => Effect.sync(acks.flush))
    const handle = handler({
      ...handling,
      settle: settler(channel, acks, settings.publisher, {
        queue,
        deadLetterQueue: spec.deadLetterQueue,
        retryQueue: spec.retryQueue
      })
    })
    return yield* Reconnect.loop(
      {
        backoff: settings.backoff,
        // Only a cancel is retried here; a closed channel ends this channel's lifetime.
        isFatal: (error): error is Exclude<typeof error, ConsumerCancelled> => !(error instanceof ConsumerCancelled),
        onRetry: ({ attempt, delay }) =>
          Effect.andThen(
            settings.onSubscribed(false),
            Effect.logWarning(
              `the broker cancelled the consumer of ${queue}; declaring the queue and subscribing again ` +
                `in ${Math.round(Duration.toMillis(delay))} ms (attempt ${attempt})`
            )
          )
      },
      (subscribed) =>
        Effect.scoped(subscribe({
          queue,
          connection,
          channel,
          acks,
          topology: settings.topology,
          concurrency: spec.options.concurrency ?? prefetch,
          handlerTimeout: handling.handlerTimeout,
          shutdownGrace: settings.shutdownGrace,
          handle,
          ready: Effect.andThen(Effect.andThen(ready, subscribed), settings.onSubscribed(true))
        }))
    )
  }).pipe(Effect.scoped)
