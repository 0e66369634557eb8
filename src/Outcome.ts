/**
 * The message outcome rules: what happens to a delivery once its handler is
 * done. This is the one table to read to know when a message is acked,
 * requeued or rejected:
 *
 * | the handler...                        | decision                          |
 * | ------------------------------------- | --------------------------------- |
 * | succeeded                             | ack                               |
 * | never ran: the body failed to decode  | reject, never requeue (it would fail again; a dead-letter exchange on the queue keeps it) |
 * | failed with its typed error           | the consumer's policy: requeue or reject |
 * | died (a defect: a bug, a throw)       | the consumer's policy: requeue or reject |
 * | was interrupted (shutdown grace over) | requeue                           |
 *
 * A decision is only sent on the channel that delivered the message. If that
 * channel is gone, nothing is sent: the broker has already put the message
 * back, and will deliver it again.
 *
 * @since 0.1.0
 */
import { Cause, Data, Exit, Option } from "effect"

/**
 * The body of a message could not be decoded into the consumer's schema
 * (not JSON, wrong shape, empty).
 *
 * @since 0.1.0
 */
export class DecodeError extends Data.TaggedError("DecodeError")<{ readonly reason: string }> {
  override get message() {
    return `cannot decode the message body: ${this.reason}`
  }
}

/**
 * The handler failed with its own typed error.
 *
 * @since 0.1.0
 */
export class HandlerError<E> extends Data.TaggedError("HandlerError")<{ readonly error: E }> {
  override get message() {
    return `handler failed: ${describe(this.error)}`
  }
}

/**
 * What to do with a message whose handler failed or died.
 * - `"requeue"`: put it back in the queue to be delivered again;
 * - `"reject"`: reject it without requeue, so the queue's dead-letter
 *   exchange receives it (without one, the broker drops it).
 *
 * @since 0.1.0
 */
export type FailurePolicy = "requeue" | "reject"

/**
 * @since 0.1.0
 */
export type Decision =
  | { readonly _tag: "Ack" }
  | { readonly _tag: "Requeue"; readonly reason: string }
  | { readonly _tag: "Reject"; readonly reason: string }

const ack: Decision = { _tag: "Ack" }

const byPolicy = (policy: FailurePolicy, reason: string): Decision =>
  policy === "requeue" ? { _tag: "Requeue", reason } : { _tag: "Reject", reason }

/**
 * The decision for a handled message, from how its processing ended.
 *
 * @since 0.1.0
 */
export const decide = <E>(
  exit: Exit.Exit<unknown, DecodeError | HandlerError<E>>,
  policy: FailurePolicy
): Decision => {
  if (Exit.isSuccess(exit)) return ack
  const error = Cause.findErrorOption(exit.cause)
  if (Option.isSome(error)) {
    return error.value._tag === "DecodeError"
      ? { _tag: "Reject", reason: error.value.message }
      : byPolicy(policy, error.value.message)
  }
  if (Cause.hasDies(exit.cause)) {
    return byPolicy(policy, `handler died: ${describe(Cause.squash(exit.cause))}`)
  }
  return { _tag: "Requeue", reason: "handler interrupted" }
}

/**
 * A short, loggable description of an error: its tag and message.
 *
 * @since 0.1.0
 */
export const describe = (error: unknown): string => {
  if (error instanceof Error) {
    const tag = "_tag" in error && typeof error._tag === "string" ? error._tag : error.name
    return error.message.length > 0 ? `${tag}: ${error.message}` : tag
  }
  if (typeof error === "object" && error !== null && "_tag" in error && typeof error._tag === "string") {
    return error._tag
  }
  return String(error)
}
