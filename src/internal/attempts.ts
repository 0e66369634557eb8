/**
 * How a delivery's attempt is counted, and when a message that never got
 * settled has used up its attempts: a retry's own `x-attempt`, the broker's
 * `x-death` record of older retries, and, where the broker counts only
 * failed deliveries (RabbitMQ 4.3+), its `x-delivery-count`. Re-exported by
 * {@link Outcome}, where users meet it.
 *
 * @internal
 */
import type { Decision, Failure, FailurePolicy } from "../Outcome.ts"

/**
 * The header a retried message carries: the attempt its next delivery is.
 *
 * @category constants
 * @since 0.1.0
 */
export const attemptHeader = "x-attempt"

/**
 * The delivery attempt of a message: 1 for the first. A retry is a
 * confirmed copy that carries its next attempt number (`x-attempt`); a
 * message retried by an earlier version of the worker (a rejection through
 * the retry queue, which the broker records in `x-death`) counts its
 * rejections from `queue`. Either survives restarts of the worker and of the
 * broker. Where the broker counts failed deliveries (`failedDeliveries`, see
 * {@link countsFailedDeliveries}), each of them was an attempt too: a message
 * that crashed the worker is on its next attempt.
 *
 * @category utils
 * @since 0.1.0
 */
export const attemptOf = (
  headers: Readonly<Record<string, unknown>> | undefined,
  queue: string,
  failedDeliveries = 0
): number => {
  const own = headers?.[attemptHeader]
  const counted = typeof own === "number" && Number.isInteger(own) && own >= 1 ? own : 1
  const deaths = headers?.["x-death"]
  if (!Array.isArray(deaths)) return counted + failedDeliveries
  let rejected = 0
  for (const death of deaths) {
    if (typeof death !== "object" || death === null) continue
    const entry = death as { readonly queue?: unknown; readonly reason?: unknown; readonly count?: unknown }
    if (entry.queue === queue && entry.reason === "rejected" && typeof entry.count === "number") rejected += entry.count
  }
  return Math.max(counted, rejected + 1) + failedDeliveries
}

/**
 * Whether a broker's `x-delivery-count` counts only the deliveries that
 * failed. From RabbitMQ 4.3 on, a quorum queue adds one when a consumer's
 * channel or connection goes with the message unsettled (the worker crashed,
 * was killed, lost its network) or on `basic.reject`, and not on
 * `basic.nack`, which is how the worker gives a message back on shutdown or
 * after a transient failure. Older brokers count every return, so there the
 * count cannot tell a crash from a shutdown and attempts do not use it.
 *
 * @category guards
 * @since 0.1.0
 */
export const countsFailedDeliveries = (brokerVersion: string): boolean => {
  const [major, minor] = brokerVersion.split(".").map((part) => Number.parseInt(part, 10))
  if (major === undefined || Number.isNaN(major)) return false
  return major > 4 || (major === 4 && minor !== undefined && minor >= 3)
}

/**
 * Deliveries of this message that ended without the worker settling it, as
 * the broker counts them (`x-delivery-count`; 0 when absent).
 *
 * @category utils
 * @since 0.1.0
 */
export const failedDeliveriesOf = (headers: Readonly<Record<string, unknown>> | undefined): number => {
  const count = headers?.["x-delivery-count"]
  return typeof count === "number" && Number.isInteger(count) && count > 0 ? count : 0
}

/**
 * How many deliveries a message whose handling never settled (the worker
 * crashed or lost its connection each time) gets under a policy without
 * retries before it is parked; under a retry policy it is `maxAttempts`.
 *
 * @category constants
 * @since 0.1.0
 */
export const unsettledDeliveryLimit = 5

/**
 * The decision for a delivery that already used up its attempts without ever
 * being settled: the broker counted its failed deliveries (see
 * {@link countsFailedDeliveries}) past the policy's attempts, so its handler
 * does not run again, which would crash the worker again. Parked in the
 * dead-letter queue (under `"reject"`: rejected, to the queue's own
 * dead-letter exchange). Undefined for every other delivery.
 *
 * @category utils
 * @since 0.1.0
 */
export const unsettled = (policy: FailurePolicy, attempt: number, failedDeliveries: number): Decision | undefined => {
  if (failedDeliveries === 0) return undefined
  const limit = typeof policy === "object" ? policy.maxAttempts : unsettledDeliveryLimit
  if (attempt <= limit) return undefined
  const failure: Failure = {
    tag: "DeliveryLimit",
    message: `delivered ${failedDeliveries} time(s) without being settled: the worker stopped, crashed or lost ` +
      `its connection while handling it`,
    attempts: attempt - 1
  }
  return policy === "reject"
    ? { _tag: "Reject", reason: `${failure.tag}: ${failure.message}` }
    : { _tag: "DeadLetter", failure }
}
