/**
 * The message outcome rules: what happens to a delivery once its handler is
 * done. This is the one table to read to know when a message is acked,
 * retried, requeued, rejected or parked in the dead-letter queue.
 *
 * | the handler...                              | decision                                                    |
 * | ------------------------------------------- | ----------------------------------------------------------- |
 * | succeeded                                   | ack                                                         |
 * | never ran: body too large, wrong content type, invalid headers, body not JSON or of the wrong shape | dead-letter at once (policy `reject`: reject) |
 * | failed with its typed error, or died        | by the consumer's policy, below                             |
 * | ran past its `handlerTimeout`               | a failure (`HandlerTimeout`), by the policy                 |
 * | ended in its own interruption               | a failure (`Interrupted`), by the policy                    |
 * | failed on the infrastructure: a publish timed out, found no connection or lost its confirm ({@link isTransient}) | requeue once the publisher can publish again; not an attempt, whatever the policy |
 * | was interrupted by the worker (shutdown grace over, channel lost) | requeue                                |
 * | never settled, again and again: the broker counted its failed deliveries (RabbitMQ 4.3+, {@link countsFailedDeliveries}) past the policy's attempts | dead-letter as `DeliveryLimit` before it runs again ({@link unsettled}) |
 *
 * | policy             | on failure                                                                      |
 * | ------------------ | ------------------------------------------------------------------------------- |
 * | `retry` (default)  | retry after the delay (a confirmed copy to the delay's retry queue, then ack) up to `maxAttempts`, then dead-letter |
 * | `"dead-letter"`    | dead-letter at once                                                             |
 * | `"requeue"`        | requeue at once, the first time only; a redelivered message that fails again is dead-lettered |
 * | `"reject"`         | reject without requeue (the queue's own dead-letter exchange, if any, gets it) |
 *
 * "Dead-letter" means: published, confirmed, to the consumer's dead-letter
 * queue with headers saying why (`x-error-tag`, `x-error-message`,
 * `x-attempts`, `x-original-queue`), then acked. "Retry" means the same to
 * the retry queue of the delay, the copy carrying its next attempt
 * (`x-attempt`), so attempts survive restarts of the worker and of the
 * broker. No rule requeues the same message twice in a row, so no message can
 * loop hot: a transient failure is requeued only once the publisher is usable
 * again.
 *
 * A decision is only sent on the channel that delivered the message. If that
 * channel is gone, nothing is sent: the broker has already put the message
 * back, and will deliver it again.
 *
 * @since 0.1.0
 */
import { Cause, Data, Duration, Exit, Option } from "effect"
import type { Checker } from "./Options.ts"

/**
 * The message never reached the handler: its body or headers are unusable.
 *
 * @category errors
 * @since 0.1.0
 */
export class DecodeError extends Data.TaggedError("DecodeError")<{
  readonly kind: "BodyTooLarge" | "UnsupportedContentType" | "InvalidHeaders" | "InvalidBody"
  readonly reason: string
}> {
  override get message() {
    return `cannot decode the message (${this.kind}): ${this.reason}`
  }
}

/**
 * The handler failed with its own typed error.
 *
 * @category errors
 * @since 0.1.0
 */
export class HandlerError<E> extends Data.TaggedError("HandlerError")<{ readonly error: E }> {
  override get message() {
    return `handler failed: ${describe(this.error)}`
  }
}

/**
 * The handler ran longer than the consumer's `handlerTimeout` and was
 * interrupted: a failure like any other, settled by the policy.
 *
 * @category errors
 * @since 0.1.0
 */
export class HandlerTimeout extends Data.TaggedError("HandlerTimeout")<{ readonly timeout: Duration.Duration }> {
  override get message() {
    return `the handler did not finish within ${Duration.format(this.timeout)}`
  }
}

/**
 * Marks an error as a failure of the infrastructure rather than of the
 * message (no connection, a blocked broker, a lost confirm): see
 * {@link isTransient}. The publisher's errors carry it where it applies; an
 * application's own error can carry it too.
 *
 * @category errors
 * @since 0.1.0
 */
export const TransientTypeId: unique symbol = Symbol.for("effect-rabbitmq-worker/Transient")

/**
 * Whether an error (or the error it wraps, as `cause`) is transient: the
 * message did nothing wrong, so its failure must not use up an attempt.
 *
 * @category errors
 * @since 0.1.0
 */
export const isTransient = (error: unknown): boolean => {
  try {
    for (let depth = 0; depth < 4 && typeof error === "object" && error !== null; depth++) {
      if ((error as { readonly [TransientTypeId]?: unknown })[TransientTypeId] === true) return true
      error = (error as { readonly cause?: unknown }).cause
    }
  } catch {
    // A getter that throws: not one of the infrastructure's errors.
  }
  return false
}

/**
 * Retry after `delay`, up to `maxAttempts` deliveries in all, then dead-letter.
 *
 * @category models
 * @since 0.1.0
 */
export interface Retry {
  readonly _tag: "Retry"
  readonly maxAttempts: number
  readonly delay: Duration.Duration
}

/**
 * @category constructors
 * @since 0.1.0
 */
export const retry = (options: { readonly maxAttempts: number; readonly delay: Duration.Input }): Retry => ({
  _tag: "Retry",
  // Kept as given: a worker refuses to start with a bad value (see `check`).
  maxAttempts: options.maxAttempts,
  delay: Option.getOrElse(Duration.fromInput(options.delay), () => Duration.infinity)
})

/**
 * Adds the problems of a policy to `checker`: a retry needs a positive
 * integer `maxAttempts` and a finite `delay` above 0.
 *
 * @category checks
 * @since 0.1.0
 */
export const check = (policy: FailurePolicy, checker: Checker): void => {
  if (typeof policy === "object") {
    checker.int("onFailure.maxAttempts", policy.maxAttempts, 1)
    checker.duration("onFailure.delay", policy.delay, true)
  } else {
    checker.check(
      ["dead-letter", "requeue", "reject"].includes(policy),
      "onFailure",
      policy,
      "Outcome.retry(...), \"dead-letter\", \"requeue\" or \"reject\""
    )
  }
}

/**
 * What to do with a message whose handler failed or died.
 *
 * @category models
 * @since 0.1.0
 */
export type FailurePolicy = Retry | "dead-letter" | "requeue" | "reject"

/**
 * The default policy: 5 attempts, 5 seconds apart.
 *
 * @category constants
 * @since 0.1.0
 */
export const defaultPolicy: FailurePolicy = retry({ maxAttempts: 5, delay: "5 seconds" })

/**
 * Whether a policy parks messages in a dead-letter queue of the consumer.
 *
 * @category guards
 * @since 0.1.0
 */
export const usesDeadLetterQueue = (policy: FailurePolicy): boolean => policy !== "reject"

/**
 * Why a message is parked: written into the dead-letter queue's headers.
 *
 * @category models
 * @since 0.1.0
 */
export interface Failure {
  readonly tag: string
  readonly message: string
  readonly attempts: number
}

/**
 * @category models
 * @since 0.1.0
 */
export type Decision =
  | { readonly _tag: "Ack" }
  | {
    readonly _tag: "Requeue"
    readonly reason: string
    /** A transient failure: requeue only once the publisher can publish again. */
    readonly whenPublisherReady?: boolean | undefined
  }
  | { readonly _tag: "Reject"; readonly reason: string }
  | { readonly _tag: "Retry"; readonly reason: string; readonly attempt: number }
  | { readonly _tag: "DeadLetter"; readonly failure: Failure }

const ack: Decision = { _tag: "Ack" }

/**
 * What the decision needs to know about the delivery.
 *
 * @category models
 * @since 0.1.0
 */
export interface Delivery {
  /** This delivery's attempt: 1 for the first ({@link attemptOf}). */
  readonly attempt: number
  readonly redelivered: boolean
  /** The worker interrupted the handler (shutdown grace over, channel lost): not a failure of the message. */
  readonly interruptedByWorker?: boolean | undefined
}

/**
 * The decision for a handled message, from how its processing ended.
 *
 * @category outcome rules
 * @since 0.1.0
 */
export const decide = <E>(
  exit: Exit.Exit<unknown, DecodeError | HandlerError<E>>,
  policy: FailurePolicy,
  delivery: Delivery
): Decision => {
  if (Exit.isSuccess(exit)) return ack
  const error = Cause.findErrorOption(exit.cause)
  let failure: Failure
  if (Option.isSome(error)) {
    if (error.value._tag === "DecodeError") {
      const failure = { tag: error.value.kind, message: error.value.reason, attempts: delivery.attempt }
      return policy === "reject"
        ? { _tag: "Reject", reason: error.value.message }
        : { _tag: "DeadLetter", failure }
    }
    const cause = error.value.error
    if (isTransient(cause)) return transient(cause)
    failure = { tag: tagOf(cause), message: messageOf(cause), attempts: delivery.attempt }
  } else if (Cause.hasDies(exit.cause)) {
    const defect = Cause.squash(exit.cause)
    if (isTransient(defect)) return transient(defect)
    failure = { tag: "Defect", message: messageOf(defect), attempts: delivery.attempt }
  } else if (delivery.interruptedByWorker === true) {
    return { _tag: "Requeue", reason: "the worker interrupted the handler" }
  } else {
    // The handler's own interruption (`Effect.interrupt`, joining an
    // interrupted fiber): requeued at once it would loop hot.
    failure = { tag: "Interrupted", message: "the handler interrupted itself", attempts: delivery.attempt }
  }
  const reason = `${failure.tag}: ${failure.message}`
  if (policy === "reject") return { _tag: "Reject", reason }
  if (policy === "dead-letter") return { _tag: "DeadLetter", failure }
  if (policy === "requeue") return delivery.redelivered ? { _tag: "DeadLetter", failure } : { _tag: "Requeue", reason }
  return delivery.attempt < policy.maxAttempts
    ? { _tag: "Retry", reason, attempt: delivery.attempt }
    : { _tag: "DeadLetter", failure }
}

/**
 * The queue a retry of `queue` waits in under `policy`: one per delay
 * (`tasks.retry.5000ms`), so that a new delay deploys beside the old one
 * while the old queue drains. Undefined for policies without retries.
 *
 * @category constructors
 * @since 0.1.0
 */
export const retryQueueOf = (queue: string, policy: FailurePolicy): string | undefined =>
  typeof policy === "object" ? `${queue}.retry.${Math.round(Duration.toMillis(policy.delay))}ms` : undefined

// How attempts are counted (a retry's `x-attempt`, the broker's delivery count) is its own module.
export {
  attemptHeader,
  attemptOf,
  countsFailedDeliveries,
  failedDeliveriesOf,
  unsettled,
  unsettledDeliveryLimit
} from "./internal/attempts.ts"

const transient = (error: unknown): Decision => ({
  _tag: "Requeue",
  reason: `${describe(error)} (transient: not counted as an attempt)`,
  whenPublisherReady: true
})

const tagOf = (error: unknown): string => {
  try {
    if (typeof error === "object" && error !== null && "_tag" in error && typeof error._tag === "string") return error._tag
    if (error instanceof Error && typeof error.name === "string") return error.name
  } catch {
    // A getter that throws: described by its type below.
  }
  return typeof error
}

/** The error's message, or its fields when it has none (a `Data.TaggedError` without a message). */
const messageOf = (error: unknown): string => {
  // Whatever a handler fails with, settling its message must not throw.
  try {
    if (error instanceof Error && typeof error.message === "string" && error.message.length > 0) return error.message
    if (typeof error === "string") return error
    if (typeof error !== "object" || error === null) return String(error)
    const { _tag: _, ...fields } = error as Record<string, unknown>
    try {
      return JSON.stringify(fields)
    } catch {
      return String(error)
    }
  } catch {
    return "(an error that cannot be described)"
  }
}

/**
 * A short, loggable description of an error: its tag and message.
 *
 * @category utils
 * @since 0.1.0
 */
export const describe = (error: unknown): string => {
  const message = messageOf(error)
  return message.length > 0 && message !== "{}" ? `${tagOf(error)}: ${message}` : tagOf(error)
}
