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
 * @category models
 * @since 0.1.0
 */
export interface AcksOptions {
  readonly isOpen: () => boolean
  readonly maxPending: number
  /** How many (counted) acks reached the socket, after each flush. */
  readonly onSent: (count: number) => void
}

/**
 * @category constructors
 * @since 0.1.0
 */
export const make = (channel: Channel.RawChannel, options: AcksOptions): Acks => new Batch(channel, options)

class Batch implements Acks {
  private readonly channel: Channel.RawChannel
  private readonly options: AcksOptions
  // Insertion order is tag order: deliveries arrive with increasing tags.
  private readonly unsettled = new Map<number, Channel.Delivery>()
  private readonly queued = new Set<number>()
  private readonly uncounted = new Set<number>()
  private scheduled = false

  constructor(channel: Channel.RawChannel, options: AcksOptions) {
    this.channel = channel
    this.options = options
  }

  readonly delivered = (delivery: Channel.Delivery): void => {
    this.unsettled.set(delivery.fields.deliveryTag, delivery)
  }

  readonly ack = (delivery: Channel.Delivery, counted = true): void => {
    this.queued.add(delivery.fields.deliveryTag)
    if (!counted) this.uncounted.add(delivery.fields.deliveryTag)
    if (this.queued.size >= this.options.maxPending) {
      this.flush()
    } else if (!this.scheduled) {
      this.scheduled = true
      setImmediate(this.flush)
    }
  }

  readonly nack = (delivery: Channel.Delivery, requeue: boolean): boolean => {
    const tag = delivery.fields.deliveryTag
    this.unsettled.delete(tag)
    this.queued.delete(tag)
    if (!this.options.isOpen()) return false
    try {
      this.channel.nack(delivery, false, requeue)
      return true
    } catch {
      return false
    }
  }

  readonly reset = (): void => {
    this.queued.clear()
    this.uncounted.clear()
    this.unsettled.clear()
  }

  readonly flush = (): void => {
    this.scheduled = false
    if (this.queued.size === 0) return
    if (!this.options.isOpen()) return this.reset()
    let sent = 0
    try {
      sent += this.ackHead()
      // Acked deliveries behind one still being handled: one by one.
      for (const tag of this.queued) {
        const delivery = this.unsettled.get(tag)
        if (delivery === undefined) continue
        this.channel.ack(delivery, false)
        sent += this.settled(tag)
      }
    } catch {
      // The channel is closing: the broker requeues what was not acked.
    }
    this.queued.clear()
    this.uncounted.clear()
    if (sent > 0) this.options.onSent(sent)
  }

  /** The run of acked deliveries at the head: one `multiple` ack covers it. Returns how many it counted. */
  private ackHead(): number {
    let last: Channel.Delivery | undefined
    const run: Array<number> = []
    for (const [tag, delivery] of this.unsettled) {
      if (!this.queued.has(tag)) break
      last = delivery
      run.push(tag)
    }
    if (last === undefined) return 0
    this.channel.ack(last, true)
    let sent = 0
    for (const tag of run) sent += this.settled(tag)
    return sent
  }

  /** Forgets a delivery that an ack on the socket settled; 1 if it counts. */
  private settled(tag: number): number {
    this.unsettled.delete(tag)
    this.queued.delete(tag)
    return this.uncounted.delete(tag) ? 0 : 1
  }
}
