/**
 * One subscription of a consumer on one channel (basic.consume until the
 * broker cancels it, the channel closes, or shutdown), and the handler fibers
 * that work through its deliveries.
 *
 * - Deliveries wait in `waiting` for a handler fiber; at most `concurrency`
 *   run at once, and none starts while the broker blocks the connection (a
 *   memory or disk alarm: handlers could not publish their results).
 * - A watchdog interrupts a handler that runs longer than `handlerTimeout`;
 *   its message is then settled as a `HandlerTimeout` failure.
 * - When the broker cancels the subscription (the queue was deleted, or a
 *   4.x quorum queue's `consumer_timeout`), its deliveries are void: the
 *   broker has taken them back, so their handlers are interrupted and
 *   nothing is sent for them (an ack would close the channel with 406
 *   unknown delivery tag). The consumer subscribes again after a backoff.
 * - At shutdown (the scope closes by interruption) it drains: cancel the
 *   subscription, requeue the deliveries no handler has started, wait for
 *   the running handlers up to the grace period (not a moment longer once the
 *   channel is gone), then interrupt the rest, whose messages are requeued.
 *
 * @internal
 */
import { Context, Data, Deferred, Duration, Effect, Exit, type Fiber, FiberSet, References, type Scope } from "effect"
import type * as Acks from "../Acks.ts"
import type * as Channel from "../Channel.ts"
import type { Connection } from "../Connection.ts"
import * as Outcome from "../Outcome.ts"
import * as Topology from "../Topology.ts"
import { stringOrUndefined } from "./decode.ts"

/**
 * The broker cancelled the subscription: subscribe again.
 */
export class ConsumerCancelled extends Data.TaggedError("ConsumerCancelled")<{ readonly queue: string }> {
  override get message() {
    return `the broker cancelled the consumer of ${this.queue}`
  }
}

/** A handler fiber, as the watchdog sees it. */
export interface Slot {
  readonly fiber: Fiber.Fiber<unknown, unknown>
  /** When its current handler started (`performance.now()`), or -1 between handlers. */
  startedAt: number
  /** The watchdog interrupted it: its handler ran out of time. */
  timedOut: boolean
}

/** What a subscription tells the handling of each delivery. */
export interface State {
  /** The worker is stopping this subscription's handlers (shutdown, lost channel): an interruption is not the message's fault. */
  readonly stopping: () => boolean
  /** The broker took the deliveries back: nothing may be sent for them. */
  readonly voided: () => boolean
}

/**
 * Handles one delivery to its settled end, then runs `next`. Only the
 * handler itself may run in `restore` (interruptibly).
 */
export type Handle<R> = (
  delivery: Channel.Delivery,
  attempt: number,
  /** The broker's count of this message's deliveries that ended unsettled (0 where it counts every return). */
  failedDeliveries: number,
  slot: Slot,
  state: State,
  restore: <A, E, R1>(effect: Effect.Effect<A, E, R1>) => Effect.Effect<A, E, R1>,
  next: Effect.Effect<void, never, R>
) => Effect.Effect<void, never, R>

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
): Effect.Effect<never, ConsumerCancelled | Channel.ChannelClosed | Channel.ChannelError | Topology.TopologyConflict, R | Scope.Scope> =>
  Effect.gen(function*() {
    const { acks, channel, concurrency, connection, queue } = options
    const waiting: Array<Channel.Delivery> = []
    const slots = new Set<Slot>()
    let running = 0
    let stopping = false
    let voided = false
    let pumpScheduled = false
    const state: State = { stopping: () => stopping, voided: () => voided }
    // Read once a connection: whether the broker's delivery count is one of failures.
    const countsFailures = Outcome.countsFailedDeliveries(connection.brokerVersion)
    const paused = () => !connection.unblocked.isOpen()

    /**
     * A handler fiber: handles waiting deliveries one after another until
     * none wait. At tens of thousands of messages a second the per-message
     * cost of the runtime shows, so the fiber is made uninterruptible once
     * (handlers run in `restore`), and each message's log annotations are
     * set on the fiber's context directly rather than with a scoped
     * `Effect.annotateLogs` around every message. A fiber the watchdog
     * interrupted ends after settling its message (its interruption would
     * hit the next handler too); `pump` starts another.
     */
    const work: Effect.Effect<void, never, R> = Effect.uninterruptibleMask((restore) =>
      Effect.withFiber((fiber) => {
        const slot: Slot = { fiber, startedAt: -1, timedOut: false }
        slots.add(slot)
        const base = fiber.context
        const annotations = Context.get(base, References.CurrentLogAnnotations)
        const next: Effect.Effect<void, never, R> = Effect.suspend(() => {
          const delivery = stopping || slot.timedOut || paused() ? undefined : waiting.shift()
          if (delivery === undefined) {
            fiber.setContext(base)
            slots.delete(slot)
            running--
            if (slot.timedOut) schedulePump()
            return Effect.void
          }
          const messageId = stringOrUndefined(delivery.properties.messageId)
          const headers = delivery.properties.headers
          const failed = countsFailures ? Outcome.failedDeliveriesOf(headers) : 0
          const attempt = Outcome.attemptOf(headers, queue, failed)
          fiber.setContext(Context.add(
            base,
            References.CurrentLogAnnotations,
            messageId === undefined ? { ...annotations, attempt } : { ...annotations, messageId, attempt }
          ))
          return options.handle(delivery, attempt, failed, slot, state, restore, next)
        })
        return next
      })
    )
    const handlers = yield* FiberSet.make<void, never>()
    const start = yield* FiberSet.runtime(handlers)<R>()
    /**
     * Starts handler fibers for the deliveries that wait, up to
     * `concurrency`. A fiber runs at once, synchronously, until its handler
     * suspends: one whose handlers never suspend works through every
     * waiting delivery before `start` returns, so a burst of deliveries
     * costs one fiber; each handler that suspends leaves the rest to the
     * next fiber.
     */
    const pump = () => {
      pumpScheduled = false
      while (!stopping && !paused() && waiting.length > 0 && running < concurrency) {
        running++
        start(work)
      }
    }
    const schedulePump = () => {
      if (pumpScheduled) return
      pumpScheduled = true
      // After the rest of this socket read, so that its deliveries go as a burst.
      queueMicrotask(pump)
    }

    // Handlers paused by the broker's block go on once it lifts.
    yield* Effect.acquireRelease(
      Effect.sync(() => connection.model.on("unblocked", schedulePump)),
      () => Effect.sync(() => connection.model.off("unblocked", schedulePump))
    )
    yield* watchdog(slots, Duration.toMillis(options.handlerTimeout))

    let consumerTag: string | undefined
    // Registered after the handler fibers, so it runs before they are
    // interrupted and before the channel closes: the drain still has a
    // channel to settle on.
    yield* Effect.addFinalizer(() =>
      Effect.suspend(() => {
        stopping = true
        if (voided) return Effect.void
        return drain(channel, {
          consumerTag,
          unstarted: () => waiting.splice(0),
          requeue: (delivery) => acks.nack(delivery, true),
          handlers,
          grace: options.shutdownGrace
        })
      })
    )

    yield* Topology.declareQueue(channel, options.topology, queue)
    const cancelled = yield* Deferred.make<void>()
    const reply = yield* channel.call("basic.consume", (ch) =>
      ch.consume(queue, (delivery) => {
        if (delivery === null) {
          Deferred.doneUnsafe(cancelled, Exit.void)
          return
        }
        acks.delivered(delivery)
        if (stopping) {
          // Arrived after the drain began: straight back to the queue.
          acks.nack(delivery, true)
          return
        }
        waiting.push(delivery)
        schedulePump()
      }, { noAck: false }))
    consumerTag = reply.consumerTag
    yield* options.ready

    /** Nothing can be settled any more: stop every handler, send nothing. */
    const voidAll = Effect.sync(() => {
      voided = true
      stopping = true
      waiting.length = 0
      acks.reset()
    })
    return yield* Effect.raceFirst(
      Effect.andThen(Deferred.await(cancelled), Effect.andThen(voidAll, Effect.fail(new ConsumerCancelled({ queue })))),
      // Handlers still running find the channel gone when they settle: nothing is sent.
      Effect.tapError(channel.closed, () => Effect.sync(() => {
        stopping = true
      }))
    )
  })

/** Interrupts each handler that has run longer than `timeoutMs`. */
const watchdog = (slots: ReadonlySet<Slot>, timeoutMs: number) => {
  // Checked often enough that a handler overruns by at most a tenth of the timeout (and at most 1 s).
  const every = Math.max(10, Math.min(1000, timeoutMs / 10))
  const check = () => {
    const now = performance.now()
    for (const slot of slots) {
      if (slot.startedAt >= 0 && !slot.timedOut && now - slot.startedAt >= timeoutMs) {
        slot.timedOut = true
        slot.fiber.interruptUnsafe()
      }
    }
  }
  return Effect.acquireRelease(
    Effect.sync(() => setInterval(check, every).unref()),
    (timer) => Effect.sync(() => clearInterval(timer))
  )
}

/**
 * Cancels the subscription, returns unstarted deliveries, waits for running
 * handlers up to the grace period, or until the channel is gone (then the
 * broker has requeued their messages already). Handlers still running
 * afterwards are interrupted when the handler fiber set closes, and requeue
 * their messages.
 */
const drain = (
  channel: Channel.Channel,
  options: {
    readonly consumerTag: string | undefined
    readonly unstarted: () => ReadonlyArray<Channel.Delivery>
    readonly requeue: (delivery: Channel.Delivery) => boolean
    readonly handlers: FiberSet.FiberSet<void, never>
    readonly grace: Duration.Input
  }
) =>
  Effect.gen(function*() {
    // On a dead channel nothing can be settled any more: the broker has
    // already requeued every unacked delivery of it.
    if (!channel.isOpen()) return
    const tag = options.consumerTag
    if (tag !== undefined) {
      yield* channel.call("basic.cancel", (ch) => ch.cancel(tag)).pipe(Effect.timeout("5 seconds"), Effect.ignore)
    }
    const unstarted = options.unstarted()
    for (const delivery of unstarted) options.requeue(delivery)
    const drained = yield* Effect.raceFirst(
      Effect.as(FiberSet.awaitEmpty(options.handlers), "drained" as const),
      Effect.as(Effect.ignore(channel.closed), "channel closed" as const)
    ).pipe(
      Effect.interruptible,
      Effect.timeoutOption(options.grace)
    )
    if (drained._tag === "None") {
      yield* Effect.logWarning(
        `shutdown grace period of ${Duration.format(Duration.fromInputUnsafe(options.grace))} is over: ` +
          `interrupting the handlers still running; their messages go back to the queue`
      )
    } else if (drained.value === "channel closed") {
      yield* Effect.logWarning("the channel closed during the drain: the broker requeues the messages still being handled")
    } else if (unstarted.length > 0) {
      yield* Effect.logDebug(`drained: ${unstarted.length} unstarted messages requeued`)
    }
  })
