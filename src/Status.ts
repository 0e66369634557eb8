/**
 * The worker's observable state: is it connected, is every consumer
 * subscribed, and if not, what is it waiting for. Readiness checks, tests and
 * operators read it; only the worker writes it.
 *
 * The {@link WorkerStatus} service holds it apart from the worker, so that
 * the health endpoints can be started before the worker and stopped after it
 * (they answer 503 while it drains).
 *
 * @since 0.1.0
 */
import { Context, Layer, SubscriptionRef } from "effect"

/**
 * - `connecting`: the first connection attempt is under way;
 * - `connected`: a connection is open (consumers may still be subscribing);
 * - `reconnecting`: the last attempt failed or the connection was lost, the
 *   next attempt is `nextRetryMs` away;
 * - `stopping`: shutdown began;
 * - `stopped`: the worker has ended.
 *
 * @category models
 * @since 0.1.0
 */
export type ConnectionState = "connecting" | "connected" | "reconnecting" | "stopping" | "stopped"

/**
 * @category models
 * @since 0.1.0
 */
export interface Status {
  readonly connection: ConnectionState
  /** Failed attempts since the last connection (0 while connected). */
  readonly attempt: number
  /** Connections lost or attempts failed since the worker started. */
  readonly reconnects: number
  /** The delay before the next attempt, while reconnecting. */
  readonly nextRetryMs?: number | undefined
  /** Why the last connection or attempt ended. */
  readonly lastError?: string | undefined
  /** Set while the broker blocks the connection (a memory or disk alarm): publishing waits. */
  readonly blocked?: string | undefined
  /** The publisher has an open channel (handlers can publish). */
  readonly publisher: boolean
  /** Per consumer (by queue): subscribed right now or not. */
  readonly consumers: Readonly<Record<string, boolean>>
}

/**
 * @category utils
 * @since 0.1.0
 */
export const initial = (consumers: ReadonlyArray<string>): Status => ({
  connection: "connecting",
  attempt: 0,
  reconnects: 0,
  publisher: false,
  consumers: Object.fromEntries(consumers.map((name) => [name, false]))
})

/**
 * Ready to handle messages: connected and not blocked by the broker, the
 * publisher's channel open, and every consumer subscribed: everything a
 * handler needs.
 *
 * @category guards
 * @since 0.1.0
 */
export const isReady = (status: Status): boolean =>
  status.connection === "connected" &&
  status.publisher &&
  status.blocked === undefined &&
  Object.values(status.consumers).every((subscribed) => subscribed)

/**
 * Unique names for consumers, by queue (`tasks`, `tasks#2` for a second
 * consumer of the same queue).
 *
 * @category utils
 * @since 0.1.0
 */
export const consumerNames = (queues: ReadonlyArray<string>): ReadonlyArray<string> => {
  const seen = new Map<string, number>()
  return queues.map((queue) => {
    const n = (seen.get(queue) ?? 0) + 1
    seen.set(queue, n)
    return n === 1 ? queue : `${queue}#${n}`
  })
}

/**
 * The worker's status, shared by the worker (which writes it) and the health
 * endpoints (which read it). A worker started without it keeps its own.
 *
 * @category services
 * @since 0.1.0
 */
export class WorkerStatus extends Context.Service<WorkerStatus, SubscriptionRef.SubscriptionRef<Status>>()(
  "effect-rabbitmq-worker/WorkerStatus"
) {}

/**
 * @category layers
 * @since 0.1.0
 */
export const layer: Layer.Layer<WorkerStatus> = Layer.effect(WorkerStatus, SubscriptionRef.make(initial([])))
