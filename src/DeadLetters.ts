/**
 * The parked messages of a consumer's dead-letter queue (`<queue>.dlq`), for
 * the people who run the worker: list them with why they were parked, show
 * one, send some or all back once the cause is fixed, or purge them. The
 * `effect-rabbitmq-dlq` command (`npm run dlq -- ...`) is these functions.
 *
 * - Listing and showing read the messages without taking them: each is
 *   fetched unacknowledged and put back, in its place.
 * - A replay publishes each chosen message, with confirms, to its original
 *   exchange and routing key (`x-original-exchange`, `x-original-routing-key`;
 *   the original queue when those are missing), without the headers that say
 *   why it was parked and without the broker's `x-death` record, so its
 *   attempts start again. Only once the broker confirmed the copy is the
 *   parked message removed. A replay stopped half-way loses nothing: what was
 *   not confirmed is still parked (a copy that was confirmed just before the
 *   stop can be replayed twice), and it can simply be run again.
 *
 * @example
 * ```ts
 * import { Effect, Redacted } from "effect"
 * import { DeadLetters } from "effect-rabbitmq-worker"
 *
 * const program = DeadLetters.replay(
 *   { url: Redacted.make("amqp://guest:guest@127.0.0.1:5672") },
 *   "orders.ship",
 *   { all: true }
 * )
 * ```
 *
 * @since 0.1.0
 */
import { Effect } from "effect"
import type * as Channel from "./Channel.ts"
import type * as Connection from "./Connection.ts"
import { call, DeadLettersError, scan, session, summary } from "./internal/parked.ts"
import { REPLAY_BATCH, sender, text } from "./internal/replay.ts"

export { DeadLettersError } from "./internal/parked.ts"

/**
 * One parked message, as `list` shows it.
 *
 * @category models
 * @since 0.1.0
 */
export interface Parked {
  readonly messageId: string | undefined
  /**
   * `x-error-tag`: e.g. `InvalidBody`, `HandlerTimeout`, `DeliveryLimit`, the
   * handler error's `_tag`, `Defect`; for a message the broker dead-lettered
   * itself, `broker:` and its reason (`broker:delivery_limit`).
   */
  readonly reason: string | undefined
  /** `x-error-message`. */
  readonly message: string | undefined
  /** `x-attempts`: deliveries before it was parked. */
  readonly attempts: number | undefined
  readonly originalExchange: string | undefined
  readonly originalRoutingKey: string | undefined
  /** When it was first published (the `timestamp` property, epoch seconds), if set. */
  readonly timestamp: number | undefined
  readonly bytes: number
}

/**
 * A parked message in full, as `show` shows it.
 *
 * @category models
 * @since 0.1.0
 */
export interface ParkedMessage extends Parked {
  readonly properties: Readonly<Record<string, unknown>>
  readonly headers: Readonly<Record<string, unknown>>
  readonly body: string
}

/**
 * @category models
 * @since 0.1.0
 */
export interface ReplayOptions {
  /** Replay these message ids only. */
  readonly ids?: ReadonlyArray<string> | undefined
  /** Replay every parked message (without `ids`). */
  readonly all?: boolean | undefined
  /** At most this many. */
  readonly limit?: number | undefined
  /** Called after each replayed message, with the counts so far. */
  readonly onProgress?: ((progress: ReplayProgress) => void) | undefined
}

/**
 * @category models
 * @since 0.1.0
 */
export interface ReplayProgress {
  /** Sent back and removed from the dead-letter queue. */
  readonly replayed: number
  /** Left parked: no queue took them (their route is gone); they stay in the dead-letter queue. */
  readonly unroutable: number
  /** Parked messages looked at. */
  readonly seen: number
}

/**
 * The dead-letter queue of `queue` (given either way).
 *
 * @category utils
 * @since 0.1.0
 */
export const deadLetterQueueOf = (queue: string): string => queue.endsWith(".dlq") ? queue : `${queue}.dlq`

/**
 * The parked messages of `queue` (its `.dlq`), oldest first, at most `limit`
 * (default 100). Nothing is taken: each is put back.
 *
 * @category utils
 * @since 0.1.0
 */
export const list = (
  options: Connection.ConnectionOptions,
  queue: string,
  limit = 100
): Effect.Effect<ReadonlyArray<Parked>, DeadLettersError> =>
  Effect.scoped(Effect.gen(function*() {
    const { channel } = yield* session(options)
    const parked: Array<Parked> = []
    // Held unacknowledged until the channel closes, so each is fetched once and all go back in order.
    yield* scan(channel, deadLetterQueueOf(queue), limit, (message) =>
      Effect.sync(() => {
        parked.push(summary(message))
        return "continue" as const
      }))
    return parked
  }))

/**
 * One parked message in full, by message id; undefined when none has it.
 *
 * @category utils
 * @since 0.1.0
 */
export const show = (
  options: Connection.ConnectionOptions,
  queue: string,
  messageId: string
): Effect.Effect<ParkedMessage | undefined, DeadLettersError> =>
  Effect.scoped(Effect.gen(function*() {
    const { channel } = yield* session(options)
    let found: ParkedMessage | undefined
    yield* scan(channel, deadLetterQueueOf(queue), Number.MAX_SAFE_INTEGER, (message) =>
      Effect.sync(() => {
        if (text(message.properties.messageId) !== messageId) return "continue" as const
        const { headers, ...properties } = message.properties
        found = {
          ...summary(message),
          properties: Object.fromEntries(Object.entries(properties).filter(([, v]) => v !== undefined)),
          headers: headers ?? {},
          body: message.content.toString("utf8")
        }
        return "stop" as const
      }))
    return found
  }))

/**
 * Sends parked messages back to where they first went, each removed from
 * the dead-letter queue only after the broker confirmed its copy. Without
 * `ids` or `all`, nothing is replayed.
 *
 * @category utils
 * @since 0.1.0
 */
export const replay = (
  options: Connection.ConnectionOptions,
  queue: string,
  replayOptions: ReplayOptions
): Effect.Effect<ReplayProgress, DeadLettersError> =>
  Effect.scoped(Effect.gen(function*() {
    const { channel } = yield* session(options)
    const dlq = deadLetterQueueOf(queue)
    const wanted = replayOptions.ids === undefined ? undefined : new Set(replayOptions.ids)
    const progress = { replayed: 0, unroutable: 0, seen: 0 }
    if (wanted === undefined && replayOptions.all !== true) return progress
    let remaining = wanted?.size ?? replayOptions.limit ?? Number.MAX_SAFE_INTEGER
    // Only the messages there now: a replayed message that comes back parked is not seen twice.
    const { messageCount } = yield* call(channel, `queue.declare ${dlq} (passive)`, (ch) => ch.checkQueue(dlq))

    const send = sender(channel, queue)
    const sendBack = (message: Channel.Fetched) => Effect.mapError(send(message), (failed) => new DeadLettersError(failed))
    const sendOne = (message: Channel.Fetched) =>
      Effect.flatMap(sendBack(message), (outcome) =>
        Effect.gen(function*() {
          if (outcome === "unroutable") {
            // Stays parked (it goes back when the channel closes): its route is gone.
            progress.unroutable++
          } else {
            yield* call(channel, "basic.ack", async (ch) => ch.ack(message))
            progress.replayed++
          }
          replayOptions.onProgress?.({ ...progress })
        }))

    // A batch of copies in flight at once, each parked message acked as soon
    // as its own copy is confirmed: one confirm round trip a batch, not a message.
    while (progress.seen < messageCount && remaining > 0) {
      const batch: Array<Channel.Fetched> = []
      while (batch.length < REPLAY_BATCH && progress.seen < messageCount && remaining > 0) {
        const message = yield* call(channel, `basic.get ${dlq}`, (ch) => ch.get(dlq, { noAck: false }))
        if (message === false) {
          remaining = 0
          break
        }
        progress.seen++
        const id = text(message.properties.messageId)
        if (wanted !== undefined && (id === undefined || !wanted.delete(id))) continue
        batch.push(message)
        remaining = wanted?.size ?? remaining - 1
      }
      yield* Effect.forEach(batch, sendOne, { concurrency: "unbounded", discard: true })
    }
    return progress
  }))

/**
 * Deletes every parked message of `queue`; returns how many there were.
 *
 * @category utils
 * @since 0.1.0
 */
export const purge = (
  options: Connection.ConnectionOptions,
  queue: string
): Effect.Effect<number, DeadLettersError> =>
  Effect.scoped(Effect.gen(function*() {
    const { channel } = yield* session(options)
    const dlq = deadLetterQueueOf(queue)
    const { messageCount } = yield* call(channel, `queue.purge ${dlq}`, (ch) => ch.purgeQueue(dlq))
    return messageCount
  }))
