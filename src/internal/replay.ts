/**
 * Sending parked messages back for a replay: each to its first route,
 * mandatory and confirmed, without the headers that say why it was parked
 * (so its attempts start again); a return (its route is gone) is told apart
 * from a confirm.
 *
 * @internal
 */
import { Effect } from "effect"
import type * as Channel from "../Channel.ts"

/** What failed, for the caller's own error. */
export interface ReplayFailed {
  readonly operation: string
  readonly reason: string
}

/** The headers the worker adds when it parks a message (and the broker's record of dead-lettering). */
const parkingHeaders = (key: string): boolean =>
  key.startsWith("x-error-") || key.startsWith("x-original-") || key === "x-attempts" || key === "x-attempt" || key === "x-death" ||
  key.startsWith("x-first-death-") || key.startsWith("x-last-death-") || key === "x-delivery-count" || key === "x-acquired-count"

export const text = (value: unknown): string | undefined =>
  typeof value === "string" ? value : Buffer.isBuffer(value) ? value.toString("utf8") : undefined

/** Copies of parked messages in flight at once during a replay. */
export const REPLAY_BATCH = 100

/**
 * Publishes parked messages back, mandatory and confirmed; one listener for
 * the returns of all of them (a return comes before its confirm).
 */
export const sender = (channel: Channel.Channel<Channel.RawConfirmChannel>, queue: string) => {
  const returns = new Map<unknown, number>()
  channel.raw.on("return", (back: Channel.RawMessage) => {
    const id: unknown = back.properties.messageId
    returns.set(id, (returns.get(id) ?? 0) + 1)
  })
  const takeReturn = (id: unknown): boolean => {
    const n = returns.get(id) ?? 0
    if (n === 0) return false
    if (n === 1) returns.delete(id)
    else returns.set(id, n - 1)
    return true
  }
  return (message: Channel.Fetched): Effect.Effect<"sent" | "unroutable", ReplayFailed> => {
    const headers = message.properties.headers ?? {}
    const exchange = text(headers["x-original-exchange"]) ?? ""
    const routingKey = text(headers["x-original-routing-key"]) ??
      text(headers["x-original-queue"]) ?? queue.replace(/\.dlq$/, "")
    const { clusterId: _c, deliveryMode: _d, headers: _h, userId: _u, ...properties } = message.properties
    const kept = Object.fromEntries(Object.entries(headers).filter(([key]) => !parkingHeaders(key)))
    const operation = `replay to ${exchange || "(default)"}/${routingKey}`
    return Effect.callback<"sent" | "unroutable", ReplayFailed>((resume) => {
      try {
        channel.raw.publish(
          exchange,
          routingKey,
          message.content,
          {
            ...Object.fromEntries(Object.entries(properties).filter(([, v]) => v !== undefined && v !== null)),
            persistent: true,
            mandatory: true,
            headers: kept
          },
          (error: unknown) => {
            if (error !== null && error !== undefined) {
              resume(Effect.fail({ operation, reason: String(error) }))
            } else {
              resume(Effect.succeed(takeReturn(message.properties.messageId) ? "unroutable" : "sent"))
            }
          }
        )
      } catch (error) {
        resume(Effect.fail({ operation, reason: String(error) }))
      }
    })
  }
}
