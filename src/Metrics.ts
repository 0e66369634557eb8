/**
 * The worker's metrics, as Effect metrics: `/metrics` (see {@link Health})
 * renders them in the Prometheus text format, and an OTLP metrics exporter
 * can send them too. Every name starts with `rabbitmq_worker_`.
 *
 * | metric | type | labels | meaning |
 * | --- | --- | --- | --- |
 * | `messages_received_total` | counter | queue | deliveries taken from the queue |
 * | `messages_acked_total` | counter | queue | handled successfully and acked |
 * | `messages_nacked_total` | counter | queue | put back in the queue (requeue, shutdown) |
 * | `messages_rejected_total` | counter | queue | rejected without requeue (policy `reject`) |
 * | `messages_retried_total` | counter | queue | failed, sent to the retry queue |
 * | `messages_dead_lettered_total` | counter | queue | parked in the dead-letter queue |
 * | `handler_duration_seconds` | histogram | queue | from the start of handling to the decision |
 * | `messages_in_flight` | gauge | queue | deliveries being handled right now |
 * | `connection_state` | gauge | state | 1 for the current state (connecting, connected, reconnecting, stopping, stopped), 0 for the others |
 * | `connection_blocked` | gauge | | 1 while the broker blocks the connection (memory or disk alarm) |
 * | `reconnects_total` | counter | | reconnect attempts scheduled after a failed or lost connection |
 * | `publishes_confirmed_total` | counter | | publishes the broker confirmed |
 * | `publishes_failed_total` | counter | error | publishes that ended with a typed error, by its tag |
 *
 * @since 0.1.0
 */
import { Context, Effect, Metric } from "effect"
import type * as Outcome from "./Outcome.ts"
import type { ConnectionState, Status } from "./Status.ts"

const PREFIX = "rabbitmq_worker_"

const counter = (name: string, description: string) =>
  Metric.counter(`${PREFIX}${name}`, { description, incremental: true })

const received = counter("messages_received_total", "Deliveries taken from the queue")
const outcomes: Record<Outcome.Decision["_tag"], Metric.Counter<number>> = {
  Ack: counter("messages_acked_total", "Messages handled successfully and acked"),
  Requeue: counter("messages_nacked_total", "Messages put back in the queue (nack with requeue)"),
  Reject: counter("messages_rejected_total", "Messages rejected without requeue"),
  Retry: counter("messages_retried_total", "Failed messages sent to the retry queue"),
  DeadLetter: counter("messages_dead_lettered_total", "Messages parked in the dead-letter queue")
}
const duration = Metric.histogram(`${PREFIX}handler_duration_seconds`, {
  description: "Time from the start of handling a delivery to its outcome decision",
  boundaries: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]
})
const inFlight = Metric.gauge(`${PREFIX}messages_in_flight`, { description: "Deliveries being handled" })
const connectionState = Metric.gauge(`${PREFIX}connection_state`, {
  description: "1 for the connection's current state, 0 for the others"
})
const blocked = Metric.gauge(`${PREFIX}connection_blocked`, {
  description: "1 while the broker blocks the connection (memory or disk alarm)"
})
const reconnects = counter("reconnects_total", "Reconnect attempts after a failed or lost connection")
const confirmed = counter("publishes_confirmed_total", "Publishes the broker confirmed")
const failed = counter("publishes_failed_total", "Publishes that ended with a typed error")

/**
 * The metrics of one consumer, with its queue as a label. They change on the
 * per-message path, where an Effect metric update (a registry lookup each)
 * would cost more than the rest of the bookkeeping: so changes are tallied
 * in plain numbers and handed to the metrics once per turn of the event loop.
 *
 * @category utils
 * @since 0.1.0
 */
export const forQueue = (queue: string, context: Context.Context<never>) => {
  // The queue label is added to the context once, rather than by
  // `Metric.withAttributes` on every update (a context of its own each).
  const labelled = Context.add(context, Metric.CurrentMetricAttributes, {
    ...Context.get(context, Metric.CurrentMetricAttributes),
    queue
  })

  const tally = { received: 0, inFlight: 0, Ack: 0, Requeue: 0, Reject: 0, Retry: 0, DeadLetter: 0 }
  let durations: Array<number> = []
  let scheduled = false
  const flush = () => {
    scheduled = false
    received.updateUnsafe(tally.received, labelled)
    inFlight.modifyUnsafe(tally.inFlight, labelled)
    for (const tag of ["Ack", "Requeue", "Reject", "Retry", "DeadLetter"] as const) {
      outcomes[tag].updateUnsafe(tally[tag], labelled)
      tally[tag] = 0
    }
    tally.received = 0
    tally.inFlight = 0
    const observed = durations
    durations = []
    for (const seconds of observed) duration.updateUnsafe(seconds, labelled)
  }
  const schedule = () => {
    if (scheduled) return
    scheduled = true
    setImmediate(flush)
  }
  // Every series shows at 0 before the first message (dashboards, `rate()`).
  flush()

  return {
    /** A delivery was taken: counted, and in flight until `settled`. */
    received: () => {
      tally.received++
      tally.inFlight++
      schedule()
    },
    /** Its outcome was decided (acks are counted when they are sent, see `acked`). */
    settled: (outcome: Outcome.Decision["_tag"] | undefined, seconds: number) => {
      if (outcome !== undefined && outcome !== "Ack") tally[outcome]++
      tally.inFlight--
      durations.push(seconds)
      schedule()
    },
    /** Acks that reached the socket. */
    acked: (count: number) => {
      tally.Ack += count
      schedule()
    }
  }
}

const states: ReadonlyArray<ConnectionState> = ["connecting", "connected", "reconnecting", "stopping", "stopped"]

/**
 * Sets the connection gauges from the worker's status.
 *
 * @category utils
 * @since 0.1.0
 */
export const status = (current: Status) =>
  Effect.all([
    ...states.map((state) =>
      Metric.update(Metric.withAttributes(connectionState, { state }), current.connection === state ? 1 : 0)
    ),
    Metric.update(blocked, current.blocked === undefined ? 0 : 1)
  ], { discard: true })

/**
 * Shows the worker-wide series at 0 from the start.
 *
 * @category metrics
 * @since 0.1.0
 */
export const init = Effect.all([Metric.update(reconnects, 0), Metric.update(confirmed, 0)], { discard: true })

/**
 * @category metrics
 * @since 0.1.0
 */
export const reconnect = Metric.update(reconnects, 1)

/**
 * The publisher's counters, tallied per event-loop turn (a worker publishes
 * as often as it consumes).
 *
 * @category utils
 * @since 0.1.0
 */
export const forPublisher = (context: Context.Context<never>) => {
  let confirmedCount = 0
  let failures: Record<string, number> = {}
  let scheduled = false
  const flush = () => {
    scheduled = false
    confirmed.updateUnsafe(confirmedCount, context)
    confirmedCount = 0
    const tags = failures
    failures = {}
    for (const [error, n] of Object.entries(tags)) Metric.withAttributes(failed, { error }).updateUnsafe(n, context)
  }
  const schedule = () => {
    if (scheduled) return
    scheduled = true
    setImmediate(flush)
  }
  return {
    confirmed: () => {
      confirmedCount++
      schedule()
    },
    failed: (tag: string) => {
      failures[tag] = (failures[tag] ?? 0) + 1
      schedule()
    }
  }
}

