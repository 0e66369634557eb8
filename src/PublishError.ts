/**
 * The ways a publish can fail, each a typed error that says whether
 * publishing the same message again can succeed (`isRetryable`). The
 * retryable ones are failures of the infrastructure, not of the message, and
 * are marked transient ({@link Outcome.isTransient}): a handler that fails
 * with one has its message requeued without using up an attempt.
 *
 * | error | when | retryable |
 * | --- | --- | --- |
 * | {@link PublishNacked} | the broker nacked it | no |
 * | {@link PublishUnroutable} | mandatory, and no queue took it | no |
 * | {@link PublishRefused} | a field AMQP cannot carry; nothing sent | no |
 * | {@link PublishEncodeError} | the body does not encode with its schema | no |
 * | {@link PublishTimeout} | not sent, or not confirmed, within the timeout | yes |
 * | {@link PublishBufferFull} | too many publishes already waiting | yes |
 * | {@link PublishUnconfirmed} | the channel closed before the confirm | yes, unless the broker closed it over this publish (its reply code) |
 *
 * The publisher re-exports them: `Publisher.PublishTimeout` is this module's.
 *
 * @since 0.1.0
 */
import { Data, Duration } from "effect"
import * as ReplyCode from "./internal/replyCode.ts"
import * as Outcome from "./Outcome.ts"

/**
 * The broker refused the message (basic.nack).
 *
 * @category errors
 * @since 0.1.0
 */
export class PublishNacked extends Data.TaggedError("PublishNacked")<{ readonly messageId: string }> {
  /** The broker refused it: sent again, it is refused again (or not: RabbitMQ nacks only on its own internal errors). */
  readonly isRetryable = false
  override get message() {
    return `the broker nacked message ${this.messageId}`
  }
}

/**
 * A mandatory message matched no queue and came back (basic.return).
 *
 * @category errors
 * @since 0.1.0
 */
export class PublishUnroutable extends Data.TaggedError("PublishUnroutable")<{
  readonly messageId: string
  readonly exchange: string
  readonly routingKey: string
}> {
  /** No queue is bound for it; sending it again finds none. */
  readonly isRetryable = false
  override get message() {
    return `message ${this.messageId} to exchange "${this.exchange}" with routing key "${this.routingKey}" matched no queue`
  }
}

/**
 * No session could take the message within the timeout (the connection is
 * down or blocked).
 *
 * @category errors
 * @since 0.1.0
 */
export class PublishTimeout extends Data.TaggedError("PublishTimeout")<{
  readonly messageId: string
  readonly timeout: Duration.Duration
  /** Whether it went out (and its confirm did not come in time) or never left. */
  readonly sent: boolean
}> {
  readonly isRetryable = true
  readonly [Outcome.TransientTypeId] = true
  override get message() {
    return this.sent
      ? `message ${this.messageId} was sent but not confirmed within ${Duration.format(this.timeout)}`
      : `message ${this.messageId} not sent within ${Duration.format(this.timeout)}: no connection, or the broker blocked it`
  }
}

/**
 * Too many publishes are already waiting for a session.
 *
 * @category errors
 * @since 0.1.0
 */
export class PublishBufferFull extends Data.TaggedError("PublishBufferFull")<{
  readonly messageId: string
  readonly maxWaiting: number
}> {
  readonly isRetryable = true
  readonly [Outcome.TransientTypeId] = true
  override get message() {
    return `message ${this.messageId} refused: ${this.maxWaiting} publishes are already waiting for the broker`
  }
}

/**
 * The channel closed after the message was sent and before the broker
 * confirmed it: it may or may not have arrived.
 *
 * @category errors
 * @since 0.1.0
 */
export class PublishUnconfirmed extends Data.TaggedError("PublishUnconfirmed")<{
  readonly messageId: string
  readonly reason: string
  /**
   * The broker's reply code when the broker closed the channel because of
   * this publish (e.g. 404: no such exchange): publishing it again fails
   * again. Undefined when the connection went away.
   */
  readonly code?: number | undefined
}> {
  /** Unless the broker refused the publish itself (its reply code says so: see internal/replyCode.ts). */
  get isRetryable(): boolean {
    return ReplyCode.isRetryable(this.code)
  }
  /** Transient when retryable: a handler's message is requeued without using up an attempt. */
  get [Outcome.TransientTypeId]() {
    return this.isRetryable
  }
  override get message() {
    return `message ${this.messageId} was sent but not confirmed: ${this.reason}`
  }
}

/**
 * The client refused the message before sending it: a field does not fit AMQP
 * (a message id, routing key or exchange over 255 bytes, a header value such
 * as `NaN` or a `bigint`, headers too large). Nothing was sent; sending it
 * again fails again.
 *
 * @category errors
 * @since 0.1.0
 */
export class PublishRefused extends Data.TaggedError("PublishRefused")<{
  readonly messageId: string
  readonly reason: string
}> {
  /** A field AMQP cannot carry: it is refused again. */
  readonly isRetryable = false
  override get message() {
    return `message ${truncate(this.messageId, 80)} refused before sending: ${this.reason}`
  }
}

/**
 * The body did not encode with its schema.
 *
 * @category errors
 * @since 0.1.0
 */
export class PublishEncodeError extends Data.TaggedError("PublishEncodeError")<{
  readonly messageId: string
  readonly reason: string
}> {
  /** The value does not fit its schema: it fails again. */
  readonly isRetryable = false
  override get message() {
    return `message ${this.messageId} does not encode: ${this.reason}`
  }
}

/**
 * Every way a publish can fail.
 *
 * @category models
 * @since 0.1.0
 */
export type PublishError =
  | PublishNacked
  | PublishUnroutable
  | PublishTimeout
  | PublishBufferFull
  | PublishUnconfirmed
  | PublishEncodeError
  | PublishRefused

/**
 * Whether publishing the same message again can succeed.
 *
 * @category guards
 * @since 0.1.0
 */
export const isRetryable = (error: PublishError): boolean => error.isRetryable

const truncate = (text: string, max: number): string => text.length > max ? `${text.slice(0, max)}...` : text
