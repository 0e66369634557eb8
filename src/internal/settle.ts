/**
 * Carrying out an outcome decision ({@link Outcome.decide}) on the channel
 * that delivered the message: ack, nack (requeue or not), or park a copy in
 * the dead-letter queue and ack the original once the copy is confirmed.
 *
 * @internal
 */
import { randomUUID } from "node:crypto"
import { Effect } from "effect"
import type * as Acks from "../Acks.ts"
import type * as Channel from "../Channel.ts"
import * as Outcome from "../Outcome.ts"
import * as Publisher from "../Publisher.ts"
import { originalRoute, stringOrUndefined } from "./decode.ts"

/** What was done with a delivery, and the log line that says so. */
export interface Settled {
  /** The outcome sent to the broker; undefined when nothing was sent (the channel was gone, or the delivery void). */
  readonly outcome: Outcome.Decision["_tag"] | undefined
  readonly log: Effect.Effect<void>
}

export const channelGone = (decision: string): Settled => ({
  outcome: undefined,
  log: Effect.logDebug(`channel closed before the message could be settled (${decision}); the broker redelivers it`)
})

/** Settles one delivery: synchronously, except where a publish or a wait comes first. */
export type Settle = (delivery: Channel.Delivery, decision: Outcome.Decision) => Settled | Effect.Effect<Settled>

/** The longest `x-error-message` a dead-letter copy carries: enough to read, never enough to refuse the copy. */
const MAX_ERROR_MESSAGE = 1000

/** Where a consumer's decisions are carried out. */
interface Target {
  readonly channel: Channel.Channel
  readonly acks: Acks.Acks
  readonly publisher: Publisher.Publisher["Service"]
  readonly queue: string
  readonly deadLetterQueue: string
  readonly retryQueue: string
}

/**
 * Carries out decisions on the delivering channel. Dead-lettering publishes
 * a copy to the dead-letter queue and acks the original once the broker
 * confirmed the copy; if that fails, the original goes back to the queue
 * (after a pause, so a dead-letter queue that cannot take messages does not
 * make a hot loop). A transient failure is requeued once the publisher can
 * publish again.
 */
export const settler = (
  channel: Channel.Channel,
  acks: Acks.Acks,
  publisher: Publisher.Publisher["Service"],
  names: { readonly queue: string; readonly deadLetterQueue: string | undefined; readonly retryQueue: string | undefined }
): Settle => {
  const target: Target = {
    channel,
    acks,
    publisher,
    queue: names.queue,
    deadLetterQueue: names.deadLetterQueue ?? `${names.queue}.dlq`,
    retryQueue: names.retryQueue ?? `${names.queue}.retry`
  }
  return (delivery, decision) => {
    switch (decision._tag) {
      case "Ack":
        return acked(target, delivery, ackLog)
      case "Requeue":
        return decision.whenPublisherReady === true
          ? requeueWhenPublisherReady(target, delivery, decision)
          : nacked(target, delivery, decision, true, Effect.logWarning(`message requeued: ${decision.reason}`))
      case "Reject":
        return nacked(target, delivery, decision, false, Effect.logWarning(`message rejected: ${decision.reason}`))
      case "Retry":
        return retry(target, delivery, decision)
      case "DeadLetter":
        return deadLetter(target, delivery, decision.failure)
    }
  }
}

const ackLog = Effect.logDebug("message acked")
/** The usual end, made once. */
const ackSettled: Settled = { outcome: "Ack", log: ackLog }

const nacked = (
  target: Target,
  delivery: Channel.Delivery,
  decision: Outcome.Decision,
  requeue: boolean,
  log: Effect.Effect<void>
): Settled => target.acks.nack(delivery, requeue) ? { outcome: decision._tag, log } : channelGone(decision._tag)

const acked = (target: Target, delivery: Channel.Delivery, log: Effect.Effect<void>, counted = true): Settled => {
  if (!target.channel.isOpen()) return channelGone("Ack")
  target.acks.ack(delivery, counted)
  return log === ackLog ? ackSettled : { outcome: "Ack", log }
}

const requeueWhenPublisherReady = (
  target: Target,
  delivery: Channel.Delivery,
  decision: Outcome.Decision & { _tag: "Requeue" }
): Effect.Effect<Settled> =>
  // Interruptible, so that shutdown does not wait for a broker that stays blocked.
  Effect.interruptible(Effect.raceFirst(target.publisher.awaitUsable, target.channel.closed)).pipe(
    Effect.exit,
    Effect.map(() => nacked(target, delivery, decision, true, Effect.logWarning(`message requeued: ${decision.reason}`)))
  )

/**
 * Publishes a confirmed copy, then acks the original once the broker
 * confirmed it; if that fails, the original goes back to the queue after a
 * pause (the copy may or may not be there: at least once, never lost).
 */
const copyThenAck = (
  target: Target,
  delivery: Channel.Delivery,
  copy: Effect.Effect<void, Publisher.PublishError>,
  done: { readonly outcome: "Retry" | "DeadLetter"; readonly log: Effect.Effect<void> },
  what: string
): Effect.Effect<Settled> =>
  copy.pipe(
    // Once the delivering channel is gone the original comes back anyway.
    Effect.raceFirst(target.channel.closed),
    Effect.matchEffect({
      onSuccess: () => {
        const settled = acked(target, delivery, done.log, false)
        return Effect.succeed(settled.outcome === "Ack" ? { ...settled, outcome: done.outcome } : settled)
      },
      onFailure: (error) =>
        target.channel.isOpen()
          ? Effect.sleep("1 second").pipe(
            Effect.as(nacked(
              target,
              delivery,
              { _tag: "Requeue", reason: `${what} failed` },
              true,
              Effect.logError(`could not ${what} the message (${error.message}); requeued it`)
            ))
          )
          : Effect.succeed(channelGone(done.outcome))
    })
  )

/** A retry: a confirmed copy to the delay's retry queue, carrying its next attempt and its first route. */
const retry = (
  target: Target,
  delivery: Channel.Delivery,
  decision: Outcome.Decision & { _tag: "Retry" }
): Effect.Effect<Settled> => {
  const route = originalRoute(delivery, target.queue)
  const base = copyOf(delivery, target.retryQueue)
  const copy: Publisher.RawMessage = {
    ...base,
    options: {
      ...base.options,
      headers: {
        ...base.options.headers,
        [Outcome.attemptHeader]: decision.attempt + 1,
        "x-original-exchange": route.exchange,
        "x-original-routing-key": route.routingKey
      }
    }
  }
  return copyThenAck(target, delivery, target.publisher.publishRaw(copy), {
    outcome: "Retry",
    log: Effect.logWarning(`message failed (attempt ${decision.attempt}), will be retried: ${decision.reason}`)
  }, "retry")
}

const deadLetter = (target: Target, delivery: Channel.Delivery, failure: Outcome.Failure): Effect.Effect<Settled> => {
  const copy = deadLetterCopy(delivery, failure, target.queue, target.deadLetterQueue)
  const published = target.publisher.publishRaw(copy).pipe(
    // Headers the client cannot encode (they came from another client, or
    // grew past the frame with ours): park it with ours alone.
    Effect.catchIf(
      (error) => error._tag === "PublishRefused",
      () => target.publisher.publishRaw(withoutOriginalHeaders(copy))
    )
  )
  return copyThenAck(target, delivery, published, {
    outcome: "DeadLetter",
    log: Effect.logWarning(
      `message dead-lettered to ${target.deadLetterQueue} after ${failure.attempts} attempt(s): ` +
        `${failure.tag}: ${failure.message}`
    )
  }, "dead-letter")
}

/**
 * A copy of a delivery for `routingKey` (on the default exchange): its body
 * and properties. Not kept: the expiration (it would drop the copy from the
 * queue it waits in), the user id (the broker refuses one that is not the
 * publisher's), the delivery mode (a copy is always persistent), the
 * deprecated cluster id, the broker's delivery counts.
 */
const copyOf = (delivery: Channel.Delivery, routingKey: string): Publisher.RawMessage => {
  const { clusterId: _c, deliveryMode: _d, expiration: _e, headers, messageId, userId: _u, ...properties } = delivery.properties
  return {
    exchange: "",
    routingKey,
    content: delivery.content,
    options: {
      ...definedOnly(properties),
      messageId: stringOrUndefined(messageId) ?? randomUUID(),
      persistent: true,
      headers: withoutDeliveryCounts(headers)
    }
  }
}

/**
 * The broker's counts of this delivery go: a copy is a new message, and a
 * quorum queue would take a copied `x-delivery-count` for its own (it adds
 * the header only once it counted one).
 */
const withoutDeliveryCounts = (headers: Channel.Headers | undefined): Record<string, unknown> => {
  const { "x-delivery-count": _d, "x-acquired-count": _a, ...rest } = headers ?? {}
  return rest
}

/** The copy parked in the dead-letter queue, with headers that say why. */
const deadLetterCopy = (
  delivery: Channel.Delivery,
  failure: Outcome.Failure,
  queue: string,
  deadLetterQueue: string
): Publisher.RawMessage => {
  const base = copyOf(delivery, deadLetterQueue)
  const route = originalRoute(delivery, queue)
  return {
    ...base,
    options: {
      ...base.options,
      headers: {
        ...base.options.headers,
        "x-error-tag": truncate(failure.tag, 200),
        "x-error-message": truncate(failure.message, MAX_ERROR_MESSAGE),
        "x-attempts": failure.attempts,
        "x-original-queue": queue,
        "x-original-exchange": route.exchange,
        "x-original-routing-key": route.routingKey
      }
    }
  }
}

const withoutOriginalHeaders = (copy: Publisher.RawMessage): Publisher.RawMessage => {
  const ours = Object.fromEntries(
    Object.entries(copy.options.headers ?? {}).filter(([key]) => key.startsWith("x-error-") || key.startsWith("x-original-") || key === "x-attempts")
  )
  return { ...copy, options: { ...copy.options, headers: { ...ours, "x-original-headers-dropped": true } } }
}

/** amqplib reports absent properties as `undefined`; passing them on would only clutter the copy. */
const definedOnly = (properties: Record<string, unknown>): Record<string, unknown> =>
  Object.fromEntries(Object.entries(properties).filter(([, value]) => value !== undefined && value !== null))

const truncate = (text: string, max: number): string => text.length > max ? `${text.slice(0, max - 3)}...` : text
