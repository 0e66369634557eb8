/**
 * Reading a dead-letter queue for the tools (`list`, `show`, `replay`,
 * `purge`): a connection of their own, parked messages taken one by one and
 * held unacknowledged (so they all go back, in order, when the channel
 * closes), and what a parked message says about itself.
 *
 * @internal
 */
import { Data, Effect } from "effect"
import * as Channel from "../Channel.ts"
import * as Connection from "../Connection.ts"
import type { Parked } from "../DeadLetters.ts"
import { text } from "./replay.ts"

/**
 * Talking to the broker failed (no connection, no such queue, a refused publish).
 *
 * @category errors
 * @since 0.1.0
 */
export class DeadLettersError extends Data.TaggedError("DeadLettersError")<{
  readonly operation: string
  readonly reason: string
}> {
  override get message() {
    return `${this.operation}: ${this.reason}`
  }
}

const brokerReason = (reason: unknown): string | undefined => {
  const value = text(reason)
  return value === undefined ? undefined : `broker:${value}`
}

export const summary = (message: Channel.Fetched): Parked => {
  const headers = message.properties.headers ?? {}
  const attempts: unknown = headers["x-attempts"]
  const timestamp: unknown = message.properties.timestamp
  return {
    messageId: text(message.properties.messageId),
    // Parked by the broker itself (a quorum queue's delivery limit, a length limit): its reason.
    reason: text(headers["x-error-tag"]) ?? brokerReason(headers["x-first-death-reason"]),
    message: text(headers["x-error-message"]),
    attempts: typeof attempts === "number" ? attempts : undefined,
    originalExchange: text(headers["x-original-exchange"]),
    originalRoutingKey: text(headers["x-original-routing-key"]),
    timestamp: typeof timestamp === "number" ? timestamp : undefined,
    bytes: message.content.length
  }
}

/** A connection and a confirm channel, closed with the scope. */
export const session = (options: Connection.ConnectionOptions) =>
  Effect.gen(function*() {
    const connection = yield* Connection.make({ name: "effect-rabbitmq-dlq", ...options })
    const channel = yield* Channel.makeConfirm(connection)
    return { connection, channel }
  }).pipe(Effect.mapError((error) => new DeadLettersError({ operation: "connect", reason: error.message })))

export const call = <A>(channel: Channel.Channel<Channel.RawConfirmChannel>, operation: string, f: (ch: Channel.RawConfirmChannel) => Promise<A>) =>
  channel.call(operation, f).pipe(Effect.mapError((error) => new DeadLettersError({ operation, reason: error.reason })))

/**
 * Takes the parked messages one by one, unacknowledged, and hands each to
 * `visit`; stops after `limit` or when the queue is empty. Whatever `visit`
 * leaves unsettled goes back to the queue when the channel closes.
 */
export const scan = (
  channel: Channel.Channel<Channel.RawConfirmChannel>,
  dlq: string,
  limit: number,
  visit: (message: Channel.Fetched) => Effect.Effect<"continue" | "stop", DeadLettersError>
) =>
  Effect.gen(function*() {
    // Only the messages there now: a replayed message that comes back parked is not seen twice.
    const { messageCount } = yield* call(channel, `queue.declare ${dlq} (passive)`, (ch) => ch.checkQueue(dlq))
    const upTo = Math.min(limit, messageCount)
    for (let seen = 0; seen < upTo; seen++) {
      const message = yield* call(channel, `basic.get ${dlq}`, (ch) => ch.get(dlq, { noAck: false }))
      if (message === false) return
      if ((yield* visit(message)) === "stop") return
    }
  })

