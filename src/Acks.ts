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

/** Where a delivery stands in a {@link Batch}. */
const State = {
  /** Being handled. */
  Unsettled: 0,
  /** Acked, not sent yet; counted in `onSent`. */
  Queued: 1,
  /** Acked, not sent yet; not counted (it settles a dead-lettered message). */
  QueuedUncounted: 2,
  /** Sent (ack or nack): nothing more to do. */
  Done: 3
} as const
type State = typeof State[keyof typeof State]

/**
 * The channel's unsettled deliveries in arrival (tag) order, from `head`,
 * with a state each: arrays rather than a map and sets, since at tens of
 * thousands of messages a second their entries were a good part of the
 * garbage a message made.
 */
class Batch implements Acks {
  private readonly channel: Channel.RawChannel
  private readonly options: AcksOptions
  /** Emptied before `head`: a settled delivery (its body, and the socket chunk it is cut from) is not kept until the arrays are reset. */
  private deliveries: Array<Channel.Delivery | undefined> = []
  private states: Array<State> = []
  /** The first delivery not `Done`; every one before it is. */
  private head = 0
  /** How many from `head` on are `Done` (settled behind one still being handled). */
  private done = 0
  /** Indexes of the queued acks, in the order they were queued. */
  private queued: Array<number> = []
  private scheduled = false

  constructor(channel: Channel.RawChannel, options: AcksOptions) {
    this.channel = channel
    this.options = options
  }

  readonly delivered = (delivery: Channel.Delivery): void => {
    this.deliveries.push(delivery)
    this.states.push(State.Unsettled)
  }

  readonly ack = (delivery: Channel.Delivery, counted = true): void => {
    const at = this.indexOf(delivery)
    // Unknown (the broker took it back, see `reset`) or settled already: nothing to send.
    if (at < 0 || this.states[at] !== State.Unsettled) return
    this.states[at] = counted ? State.Queued : State.QueuedUncounted
    this.queued.push(at)
    if (this.queued.length >= this.options.maxPending) {
      this.flush()
    } else if (!this.scheduled) {
      this.scheduled = true
      setImmediate(this.flush)
    }
  }

  readonly nack = (delivery: Channel.Delivery, requeue: boolean): boolean => {
    const at = this.indexOf(delivery)
    if (at >= 0) {
      this.settle(at)
      this.advance()
    }
    if (!this.options.isOpen()) return false
    try {
      this.channel.nack(delivery, false, requeue)
      return true
    } catch {
      return false
    }
  }

  readonly reset = (): void => {
    this.deliveries = []
    this.states = []
    this.head = 0
    this.done = 0
    this.queued = []
  }

  readonly flush = (): void => {
    this.scheduled = false
    const queued = this.queued
    if (queued.length === 0) return
    if (!this.options.isOpen()) return this.reset()
    this.queued = []
    const { deliveries, states } = this
    let sent = 0
    try {
      sent += this.ackHead()
      // Acked deliveries behind one still being handled: one by one.
      for (const at of queued) {
        const state = states[at]
        if (state !== State.Queued && state !== State.QueuedUncounted) continue
        this.channel.ack(deliveries[at]!, false)
        this.settle(at)
        if (state === State.Queued) sent++
      }
    } catch {
      // The channel is closing: the broker requeues what was not acked.
      for (const at of queued) if (states[at] !== State.Done) states[at] = State.Unsettled
    }
    this.advance()
    if (sent > 0) this.options.onSent(sent)
  }

  /**
   * The run of acked deliveries at the head (settled ones in it are passed
   * over: a `multiple` ack no longer covers them): one `multiple` ack covers
   * it. Returns how many it counted.
   */
  private ackHead(): number {
    const { deliveries, states } = this
    let last = -1
    for (let at = this.head; at < states.length; at++) {
      const state = states[at]
      if (state === State.Unsettled) break
      if (state !== State.Done) last = at
    }
    if (last < 0) return 0
    this.channel.ack(deliveries[last]!, true)
    let sent = 0
    for (let at = this.head; at <= last; at++) {
      if (states[at] === State.Queued) sent++
      this.settle(at)
    }
    return sent
  }

  /** Where `delivery` is, or -1. Tags count up by one a delivery, so the first guess is nearly always right. */
  private indexOf(delivery: Channel.Delivery): number {
    const { deliveries, head } = this
    if (head >= deliveries.length) return -1
    const tag = delivery.fields.deliveryTag
    const guess = head + (tag - deliveries[head]!.fields.deliveryTag)
    if (guess >= head && guess < deliveries.length && deliveries[guess]!.fields.deliveryTag === tag) return guess
    // Tags only grow: search the rest by halves.
    let low = head
    let high = deliveries.length - 1
    while (low <= high) {
      const mid = (low + high) >>> 1
      const at = deliveries[mid]!.fields.deliveryTag
      if (at === tag) return mid
      if (at < tag) low = mid + 1
      else high = mid - 1
    }
    return -1
  }

  private settle(at: number): void {
    if (this.states[at] === State.Done) return
    this.states[at] = State.Done
    this.done++
  }

  /**
   * Moves `head` past settled deliveries. Once they are most of the arrays
   * (before `head`, or behind a delivery a handler still holds), the arrays
   * keep only the others: a stuck handler does not make them grow.
   */
  private advance(): void {
    const { deliveries, states } = this
    while (this.head < states.length && states[this.head] === State.Done) {
      deliveries[this.head++] = undefined
      this.done--
    }
    const length = states.length
    if (this.head === length) {
      deliveries.length = 0
      states.length = 0
      this.head = 0
      this.done = 0
    } else if (length > 1024 && (this.head + this.done) * 2 > length) {
      // Where each kept delivery goes; -1 for a settled one.
      const moved = new Int32Array(length).fill(-1)
      let kept = 0
      for (let at = this.head; at < length; at++) {
        if (states[at] === State.Done) continue
        moved[at] = kept
        deliveries[kept] = deliveries[at]!
        states[kept] = states[at]!
        kept++
      }
      deliveries.length = kept
      states.length = kept
      this.queued = this.queued.flatMap((at) => (moved[at]! >= 0 ? [moved[at]!] : []))
      this.head = 0
      this.done = 0
    }
  }
}
