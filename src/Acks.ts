/**
 * Acknowledgements for one channel, sent in batches.
 *
 * Acking each message with its own frame costs a socket write per message;
 * RabbitMQ's `multiple` flag acks every unacked delivery up to a tag with one
 * frame. This module folds acks together without changing what counts as
 * settled:
 *
 * - a queued ack is sent within one turn of the event loop (`setImmediate`),
 *   or at once when `maxPending` acks are waiting, so a quiet consumer never
 *   holds an ack back;
 * - a `multiple` ack only ever covers the run of acked deliveries at the head
 *   of the channel's unsettled deliveries (in tag order): never a delivery
 *   still being handled, and never one that was nacked or rejected (those
 *   are sent at once, on their own);
 * - acks queued behind a delivery still being handled are sent one by one;
 * - if the channel is gone before a flush, the queued acks are dropped: the
 *   broker requeues those deliveries, exactly as it would have had the
 *   connection died a moment before the handler finished.
 *
 * @since 0.1.0
 */
import type * as Channel from "./Channel.ts"

/**
 * @category models
 * @since 0.1.0
 */
export interface Acks {
  /** Records a delivery as unsettled; call in arrival order. */
  readonly delivered: (delivery: Channel.Delivery) => void
  /**
   * Queues an ack, sent within one turn of the event loop. `counted: false`
   * keeps it out of `onSent` (an ack that settles a dead-lettered message).
   */
  readonly ack: (delivery: Channel.Delivery, counted?: boolean) => void
  /** Sends a nack now (`requeue`: back to the queue; otherwise to the dead-letter target); false if the channel is gone. */
  readonly nack: (delivery: Channel.Delivery, requeue: boolean) => boolean
  /** Sends the queued acks now. */
  readonly flush: () => void
  /**
   * Forgets every unsettled delivery and queued ack without sending
   * anything: the broker took them back (it cancelled the subscription).
   */
  readonly reset: () => void
}

/**
 * @category constructors
 * @since 0.1.0
 */
export const make = (
  channel: Channel.RawChannel,
  options: {
    readonly isOpen: () => boolean
    readonly maxPending: number
    /** How many (counted) acks reached the socket, after each flush. */
    readonly onSent: (count: number) => void
  }
): Acks => {
  // Insertion order is tag order: deliveries arrive with increasing tags.
  const unsettled = new Map<number, Channel.Delivery>()
  const queued = new Set<number>()
  const uncounted = new Set<number>()
  let scheduled = false

  const reset = () => {
    queued.clear()
    uncounted.clear()
    unsettled.clear()
  }

  const flush = () => {
    scheduled = false
    if (queued.size === 0) return
    if (!options.isOpen()) return reset()
    // The run of acked deliveries at the head: one `multiple` ack covers it.
    let last: Channel.Delivery | undefined
    const run: Array<number> = []
    for (const [tag, delivery] of unsettled) {
      if (!queued.has(tag)) break
      last = delivery
      run.push(tag)
    }
    let sent = 0
    const settled = (tag: number) => {
      unsettled.delete(tag)
      queued.delete(tag)
      if (!uncounted.delete(tag)) sent++
    }
    try {
      if (last !== undefined) {
        channel.ack(last, true)
        for (const tag of run) settled(tag)
      }
      // Acked deliveries behind one still being handled: one by one.
      for (const tag of queued) {
        const delivery = unsettled.get(tag)
        if (delivery === undefined) continue
        channel.ack(delivery, false)
        settled(tag)
      }
    } catch {
      // The channel is closing: the broker requeues what was not acked.
    }
    queued.clear()
    uncounted.clear()
    if (sent > 0) options.onSent(sent)
  }

  return {
    delivered: (delivery) => {
      unsettled.set(delivery.fields.deliveryTag, delivery)
    },
    ack: (delivery, counted = true) => {
      queued.add(delivery.fields.deliveryTag)
      if (!counted) uncounted.add(delivery.fields.deliveryTag)
      if (queued.size >= options.maxPending) {
        flush()
      } else if (!scheduled) {
        scheduled = true
        setImmediate(flush)
      }
    },
    nack: (delivery, requeue) => {
      const tag = delivery.fields.deliveryTag
      unsettled.delete(tag)
      queued.delete(tag)
      if (!options.isOpen()) return false
      try {
        channel.nack(delivery, false, requeue)
        return true
      } catch {
        return false
      }
    },
    flush,
    reset
  }
}
