/**
 * The drain of one subscription before its channel closes (at shutdown, or
 * after a message's handling failed outside its outcome rules): cancel the subscription,
 * requeue the deliveries no handler has started, wait for the running
 * handlers up to the grace period (not a moment longer once the channel is
 * gone). Handlers still running afterwards are interrupted when their fiber
 * set closes, and requeue their messages.
 *
 * @internal
 */
import { Duration, Effect, FiberSet } from "effect"
import type * as Channel from "../Channel.ts"

export interface DrainOptions {
  readonly consumerTag: string | undefined
  readonly unstarted: () => ReadonlyArray<Channel.Delivery>
  readonly requeue: (delivery: Channel.Delivery) => boolean
  readonly handlers: FiberSet.FiberSet<void, never>
  readonly grace: Duration.Input
  /** Why the subscription drains, for the log: "shutdown", or what failed. */
  readonly why: string
}

/** Ends when the handlers are done, the channel is gone (the broker then requeues their messages), or the grace is over. */
export const drain = (channel: Channel.Channel, options: DrainOptions): Effect.Effect<void> =>
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
        `${options.why}: the grace period of ${Duration.format(Duration.fromInputUnsafe(options.grace))} is over: ` +
          `interrupting the handlers still running; their messages go back to the queue`
      )
    } else if (drained.value === "channel closed") {
      yield* Effect.logWarning("the channel closed during the drain: the broker requeues the messages still being handled")
    } else if (unstarted.length > 0) {
      yield* Effect.logDebug(`drained: ${unstarted.length} unstarted messages requeued`)
    }
  })
