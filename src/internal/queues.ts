/**
 * The queues a consumer of `q` declares, by its policy: `q` itself, the
 * retry queues (`q.retry`, kept from earlier versions, and `q.retry.<ms>ms`
 * of this delay), and `q.dlq`. They take `q`'s type, and wherever the broker
 * itself dead-letters between them it does so at least once on quorum
 * queues: a node down loses nothing.
 *
 * @internal
 */
import { Duration } from "effect"
import type { QueueOptions } from "../Consumer.ts"
import * as Outcome from "../Outcome.ts"
import * as Topology from "../Topology.ts"

export const queuesOf = (
  queue: string,
  policy: Outcome.FailurePolicy,
  queueOptions: QueueOptions | undefined
): Topology.Topology => {
  const type = queueOptions?.type
  const deadLetterQueue = Outcome.usesDeadLetterQueue(policy) ? `${queue}.dlq` : undefined
  const retryQueue = Outcome.retryQueueOf(queue, policy)
  return Topology.make({
    queues: [
      {
        name: queue,
        type,
        durable: queueOptions?.durable,
        arguments: { ...brokerDeadLettering(type, queueOptions?.arguments, deadLetterQueue), ...queueOptions?.arguments },
        deadLetter: brokerDeadLetterTarget(queue, type, policy, deadLetterQueue)
      },
      ...(typeof policy === "object" && retryQueue !== undefined
        ? [
          // Kept as it is when it exists with another delay: it drains into `queue` on its own.
          {
            name: `${queue}.retry`,
            type,
            arguments: brokerDeadLettering(type, undefined, queue),
            messageTtlMs: Math.round(Duration.toMillis(policy.delay)),
            deadLetter: { exchange: "", routingKey: queue },
            whenDifferent: "keep" as const
          },
          // Where retries go: one queue per delay, so a new delay deploys beside the old one.
          {
            name: retryQueue,
            type,
            // A retry goes back to `queue` by the broker's dead-lettering: at least once, or a node down loses it.
            arguments: brokerDeadLettering(type, undefined, queue),
            messageTtlMs: Math.round(Duration.toMillis(policy.delay)),
            deadLetter: { exchange: "", routingKey: queue }
          }
        ]
        : []),
      ...(deadLetterQueue === undefined ? [] : [{ name: deadLetterQueue, type, whenDifferent: "keep" as const }])
    ]
  })
}

/**
 * Where the broker itself dead-letters a message of the main queue: a
 * quorum queue's delivery limit (20 by default on RabbitMQ 4), a length
 * limit. A quorum queue sends such messages to the dead-letter queue, so
 * that none is dropped and each says why (`x-first-death-reason`); a classic
 * queue under a retry policy, to the retry queue of the first delay (as
 * before quorum queues were supported). Under `"reject"` the user's own
 * dead-letter exchange, if any, applies.
 */
const brokerDeadLetterTarget = (
  queue: string,
  type: QueueOptions["type"],
  policy: Outcome.FailurePolicy,
  deadLetterQueue: string | undefined
): Topology.QueueSpec["deadLetter"] => {
  if (type === "quorum" && deadLetterQueue !== undefined) return { exchange: "", routingKey: deadLetterQueue }
  return typeof policy === "object" ? { exchange: "", routingKey: `${queue}.retry` } : undefined
}

/**
 * A quorum queue's dead-lettering is at most once unless it says
 * otherwise: a message dead-lettered while the target's leader is away (a
 * node stopping) is dropped. At least once needs `x-overflow:
 * reject-publish`, which only matters once a length limit is set (a
 * publisher then gets a nack instead of the oldest message being dropped).
 * Left alone when the user chose an overflow behaviour.
 */
const brokerDeadLettering = (
  type: QueueOptions["type"],
  args: Readonly<Record<string, unknown>> | undefined,
  target: string | undefined
): Record<string, unknown> =>
  type === "quorum" && target !== undefined && args?.["x-overflow"] === undefined
    ? { "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish" }
    : {}
