/**
 * What a handler sees of a delivery besides its decoded body: the AMQP
 * properties and delivery fields, as plain read-only data.
 *
 * @since 0.1.0
 */

/**
 * @category models
 * @since 0.1.0
 */
export interface Message<Headers = Readonly<Record<string, unknown>>> {
  /** The `message-id` property set by the publisher, if any. */
  readonly id: string | undefined
  /** The queue the message was consumed from. */
  readonly queue: string
  /** True when the broker delivered this message before (to this or another consumer). */
  readonly redelivered: boolean
  /** 1 for the first delivery, 2 after one retry, ... (carried by each retry, see {@link Outcome.attemptOf}). */
  readonly attempt: number
  readonly exchange: string
  readonly routingKey: string
  /** The headers, decoded with the consumer's `headers` schema when it has one. */
  readonly headers: Headers
  readonly contentType: string | undefined
  readonly correlationId: string | undefined
  /** The raw body, before decoding. */
  readonly content: Uint8Array
}
