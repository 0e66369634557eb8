/**
 * One subscription of a consumer on one channel: basic.consume until the
 * broker cancels it, the channel closes, or shutdown. Its deliveries go to
 * handler fibers (./dispatch.ts); at shutdown it drains (./drain.ts).
 *
 * - A watchdog interrupts a handler that runs longer than `handlerTimeout`;
 *   its message is then settled as a `HandlerTimeout` failure (without the
 *   handler, if it ignores the interruption: ./dispatch.ts).
 * - When the broker cancels the subscription (the queue was deleted, or a
 *   4.x quorum queue's `consumer_timeout`), its deliveries are void: the
 *   broker has taken them back, so their handlers are interrupted and
 *   nothing is sent for them (an ack would close the channel with 406
 *   unknown delivery tag). The consumer subscribes again after a backoff.
 * - At shutdown (the scope closes by interruption) it drains: cancel the
 *   subscription, requeue the deliveries no handler has started, wait for
 *   the running handlers up to the grace period (not a moment longer once the
 *   channel is gone), then interrupt the rest, whose messages are requeued.
 * - However it ends, the handlers still running are interrupted and
 *   awaited, but not one that ignores interruption for longer than
 *   `abandonAfter`: the next channel, or the exit, does not wait for it.
 *
 * @internal
 */
import { Cause, Data, Deferred, Duration, Effect, Exit, type Fiber, FiberSet, type Scope } from "effect"
import type * as Acks from "../Acks.ts"
import type * as Channel from "../Channel.ts"
import type { Connection } from "../Connection.ts"
import * as Outcome from "../Outcome.ts"
import * as Topology from "../Topology.ts"
import { abandonAfter, Dispatch, type Handle, type Slot, watchdog } from "./dispatch.ts"
import { drain } from "./drain.ts"

export type { Handle, Slot, State } from "./dispatch.ts"

/**
 * The broker cancelled the subscription: subscribe again.
 */
export class ConsumerCancelled extends Data.TaggedError("ConsumerCancelled")<{ readonly queue: string }> {
  override get message() {
    return `the broker cancelled the consumer of ${this.queue}`
  }
}

/**
 * A message's handling failed outside its outcome rules and left it
 * unsettled: the channel goes, so that the broker takes it back.
 */
export class HandlingFailed extends Data.TaggedError("HandlingFailed")<{ readonly queue: string }> {
  override get message() {
    return `a message of ${this.queue} could not be settled (its handling failed outside the outcome rules)`
  }
}

export interface SubscriptionOptions<R> {
  readonly queue: string
  readonly connection: Connection
  readonly channel: Channel.Channel
  readonly acks: Acks.Acks
  readonly topology: Topology.Topology
  readonly concurrency: number
  readonly handlerTimeout: Duration.Duration
  readonly shutdownGrace: Duration.Input
  readonly handle: Handle<R>
  /** Called once subscribed. */
  readonly ready: Effect.Effect<void>
}

/**
 * Subscribes and handles deliveries until the broker cancels the
 * subscription ({@link ConsumerCancelled}) or the channel closes.
 */
export const subscribe = <R>(
  options: SubscriptionOptions<R>
): Effect.Effect<
  never,
  ConsumerCancelled | HandlingFailed | Channel.ChannelClosed | Channel.ChannelError | Topology.TopologyConflict,
  R | Scope.Scope
> =>
  Effect.gen(function*() {
    const { acks, channel, connection, queue } = options
    const handlers = yield* FiberSet.make<void, never>()
    const broken = yield* Deferred.make<void>()
    const dispatch = new Dispatch<R>({
      queue,
      concurrency: options.concurrency,
      // Read once a connection: whether the broker's delivery count is one of failures.
      countsFailures: Outcome.countsFailedDeliveries(connection.brokerVersion),
      paused: () => !connection.unblocked.isOpen(),
      handle: options.handle,
      start: yield* FiberSet.runtime(handlers)<R>(),
      forget: (fiber) => backingOf(handlers)?.delete(fiber),
      broken: () => Deferred.doneUnsafe(broken, Exit.void)
    })
    // Handlers paused by the broker's block go on once it lifts.
    yield* Effect.acquireRelease(
      Effect.sync(() => connection.model.on("unblocked", dispatch.schedulePump)),
      () => Effect.sync(() => connection.model.off("unblocked", dispatch.schedulePump))
    )
    yield* watchdog(dispatch, Duration.toMillis(options.handlerTimeout))

    let consumerTag: string | undefined
    // Registered after the handler fibers, so it runs before they are
    // interrupted and before the channel closes: the drain still has a
    // channel to settle on.
    yield* Effect.addFinalizer((exit) =>
      Effect.suspend(() => {
        dispatch.stop()
        const drained = dispatch.voided() ? Effect.void : drain(channel, {
          consumerTag,
          unstarted: () => dispatch.waiting.splice(0),
          requeue: (delivery) => acks.nack(delivery, true),
          handlers,
          grace: options.shutdownGrace,
          why: drainReason(queue, exit)
        })
        return Effect.andThen(drained, stopHandlers(handlers, dispatch.slots))
      })
    )

    yield* Topology.declareQueue(channel, options.topology, queue)
    const cancelled = yield* Deferred.make<void>()
    consumerTag = (yield* consume(channel, queue, acks, dispatch, () => Deferred.doneUnsafe(cancelled, Exit.void))).consumerTag
    yield* options.ready

    return yield* Effect.raceFirst(
      Deferred.await(cancelled).pipe(
        // Nothing can be settled any more: stop every handler, send nothing.
        Effect.andThen(Effect.sync(() => {
          dispatch.void()
          acks.reset()
        })),
        Effect.andThen(Effect.fail(new ConsumerCancelled({ queue })))
      ),
      Effect.raceFirst(
        // Handlers still running find the channel gone when they settle: nothing is sent.
        Effect.tapError(channel.closed, () => Effect.sync(() => dispatch.stop())),
        // The handlers still running settle their messages in the drain, before the channel goes.
        Effect.andThen(Deferred.await(broken), Effect.fail(new HandlingFailed({ queue })))
      )
    )
  })

/**
 * Interrupts the handlers still running and waits for them to stop, up to
 * {@link abandonAfter}. A handler still running then is abandoned: left
 * running, no longer awaited (its fiber leaves the set, whose closing would
 * wait for it), and logged with its message id. Its message is settled by
 * nobody: the broker takes it back when the channel closes (at shutdown, a
 * lost channel) or has already (a cancelled subscription); if the handler
 * ever ends, it finds the subscription stopped and sends nothing.
 */
const stopHandlers = (handlers: FiberSet.FiberSet<void, never>, slots: ReadonlySet<Slot>): Effect.Effect<void> =>
  Effect.suspend(() => {
    const backing = backingOf(handlers)
    if (backing === undefined || backing.size === 0) return Effect.void
    for (const fiber of backing) fiber.interruptUnsafe()
    return FiberSet.awaitEmpty(handlers).pipe(
      Effect.timeoutOption(abandonAfter),
      Effect.flatMap((stopped) => {
        if (stopped._tag === "Some" || backing.size === 0) return Effect.void
        const count = backing.size
        const ids = [...slots].filter((slot) => backing.has(slot.fiber)).map((slot) => slot.messageId() ?? "(none)")
        backing.clear()
        return Effect.logError(
          `${count} handler(s) still running ${Duration.format(abandonAfter)} after being interrupted ` +
            `(they ignore interruption): abandoned; their messages go back to the queue (message ids: ${ids.join(", ")})`
        )
      })
    )
  })

/** Why a subscription drains: shutdown (an interruption), or the failure that ends its channel (a lost channel does not drain). */
const drainReason = (queue: string, exit: Exit.Exit<unknown, unknown>): string => {
  if (exit._tag === "Success" || Cause.hasInterruptsOnly(exit.cause)) return "shutdown"
  const error = Cause.squash(exit.cause)
  return `closing the channel of ${queue} (${error instanceof Error ? error.message : String(error)})`
}

/** The fibers of an open fiber set (`FiberSet`'s own state), as fibers of any result. */
const backingOf = (handlers: FiberSet.FiberSet<void, never>): Set<Fiber.Fiber<unknown, unknown>> | undefined =>
  handlers.state._tag === "Open" ? handlers.state.backing as Set<Fiber.Fiber<unknown, unknown>> : undefined

/** basic.consume: each delivery is recorded as unsettled and waits for a handler. */
const consume = <R>(
  channel: Channel.Channel,
  queue: string,
  acks: Acks.Acks,
  dispatch: Dispatch<R>,
  onCancel: () => void
) =>
  channel.call("basic.consume", (ch) =>
    ch.consume(queue, (delivery) => {
      if (delivery === null) return onCancel()
      acks.delivered(delivery)
      if (dispatch.stopping()) {
        // Arrived after the drain began: straight back to the queue.
        acks.nack(delivery, true)
        return
      }
      dispatch.push(delivery)
    }, { noAck: false }))
