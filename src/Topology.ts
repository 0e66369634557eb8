/**
 * The broker objects a worker needs, described once as data and declared in
 * every session: exchanges, queues (classic or quorum) and bindings. Because
 * declarations are idempotent they run again after every reconnect, so the
 * topology exists again after a broker restart or a deleted queue.
 *
 * A declaration that conflicts with what the broker already has (406
 * PRECONDITION_FAILED: the same queue with other arguments) fails with
 * {@link TopologyConflict}, which names the object and the argument. Retrying
 * cannot mend it, so the worker stops with that error instead of looping.
 *
 * @example
 * ```ts
 * import { Topology } from "effect-rabbitmq-worker"
 *
 * const topology = Topology.make({
 *   exchanges: [{ name: "orders", type: "topic" }],
 *   queues: [{ name: "orders.ship", type: "quorum" }],
 *   bindings: [{ exchange: "orders", queue: "orders.ship", routingKey: "order.paid" }]
 * })
 * ```
 *
 * @since 0.1.0
 */
import { Cause, Data, Effect } from "effect"
import * as Channel from "./Channel.ts"
import type { Connection } from "./Connection.ts"
import { canonical, mergeSpec } from "./internal/merge.ts"
import * as ReplyCode from "./internal/replyCode.ts"
import type { Problem } from "./Options.ts"

/**
 * @category models
 * @since 0.1.0
 */
export interface ExchangeSpec {
  readonly name: string
  readonly type: "direct" | "topic" | "fanout" | "headers"
  /** Default true. */
  readonly durable?: boolean | undefined
  readonly arguments?: Readonly<Record<string, unknown>> | undefined
}

/**
 * @category models
 * @since 0.1.0
 */
export interface QueueSpec {
  readonly name: string
  /** `quorum` queues are replicated and always durable. Default `classic`. */
  readonly type?: "classic" | "quorum" | undefined
  /** Default true. */
  readonly durable?: boolean | undefined
  /** Where rejected or expired messages go: an exchange ("" is the default exchange) and a routing key. */
  readonly deadLetter?: { readonly exchange: string; readonly routingKey?: string | undefined } | undefined
  /** Messages expire after this many milliseconds (`x-message-ttl`). */
  readonly messageTtlMs?: number | undefined
  /** Other `x-` arguments. */
  readonly arguments?: Readonly<Record<string, unknown>> | undefined
  /**
   * `"keep"`: when the queue exists with other arguments, keep it as it is
   * instead of stopping with a {@link TopologyConflict} (a retry queue of an
   * earlier delay, still draining).
   */
  readonly whenDifferent?: "keep" | undefined
}

/**
 * @category models
 * @since 0.1.0
 */
export interface BindingSpec {
  readonly exchange: string
  readonly queue: string
  readonly routingKey?: string | undefined
  readonly arguments?: Readonly<Record<string, unknown>> | undefined
}

/**
 * @category models
 * @since 0.1.0
 */
export interface Topology {
  readonly exchanges: ReadonlyArray<ExchangeSpec>
  readonly queues: ReadonlyArray<QueueSpec>
  readonly bindings: ReadonlyArray<BindingSpec>
}

/**
 * @category constants
 * @since 0.1.0
 */
export const empty: Topology = { exchanges: [], queues: [], bindings: [] }

/**
 * @category constructors
 * @since 0.1.0
 */
export const make = (topology: Partial<Topology>): Topology => ({ ...empty, ...topology })

/**
 * A declaration conflicts with what the broker has.
 *
 * @category errors
 * @since 0.1.0
 */
export class TopologyConflict extends Data.TaggedError("TopologyConflict")<{
  readonly kind: "queue" | "exchange" | "binding"
  readonly name: string
  /** The argument the broker disagrees about, when it says. */
  readonly argument: string | undefined
  readonly reason: string
}> {
  /** The broker keeps what it has: declaring again conflicts again, so the worker stops. */
  readonly isRetryable = false
  override get message() {
    const argument = this.argument === undefined ? "" : ` (argument ${this.argument})`
    return `${this.kind} ${this.name} conflicts with the broker's${argument}: ${this.reason}`
  }
}

/**
 * The `x-` arguments a queue is declared with.
 *
 * @category utils
 * @since 0.1.0
 */
export const queueArguments = (queue: QueueSpec): Record<string, unknown> => {
  const args: Record<string, unknown> = { ...queue.arguments }
  if (queue.type === "quorum") args["x-queue-type"] = "quorum"
  if (queue.deadLetter !== undefined) {
    args["x-dead-letter-exchange"] = queue.deadLetter.exchange
    if (queue.deadLetter.routingKey !== undefined) args["x-dead-letter-routing-key"] = queue.deadLetter.routingKey
  }
  if (queue.messageTtlMs !== undefined) args["x-message-ttl"] = queue.messageTtlMs
  return args
}

/**
 * Two descriptions of one object that disagree on a field.
 *
 * @category errors
 * @since 0.1.0
 */
export interface Mismatch {
  readonly kind: "queue" | "exchange"
  readonly name: string
  /** `type`, `durable`, `deadLetter`, `messageTtlMs`, or `arguments.<key>`. */
  readonly field: string
  readonly values: readonly [unknown, unknown]
}

/**
 * Several descriptions in one. An object described more than once is merged
 * field by field: a field one description leaves out never overrides one
 * that another sets (a consumer's `{ name: q }` keeps the topology's
 * `{ name: q, type: "quorum" }`); two that set a field to different values
 * are a {@link Mismatch}, and the first value is kept. Identical bindings are
 * declared once.
 *
 * @category constructors
 * @since 0.1.0
 */
export const combine = (
  topologies: ReadonlyArray<Topology>
): { readonly topology: Topology; readonly mismatches: ReadonlyArray<Mismatch> } => {
  const mismatches: Array<Mismatch> = []
  const queues = new Map<string, QueueSpec>()
  for (const queue of topologies.flatMap((t) => t.queues)) {
    const previous = queues.get(queue.name)
    queues.set(queue.name, previous === undefined ? queue : mergeSpec("queue", previous, queue, mismatches))
  }
  const exchanges = new Map<string, ExchangeSpec>()
  for (const exchange of topologies.flatMap((t) => t.exchanges)) {
    const previous = exchanges.get(exchange.name)
    exchanges.set(exchange.name, previous === undefined ? exchange : mergeSpec("exchange", previous, exchange, mismatches))
  }
  const bindings = new Map<string, BindingSpec>()
  for (const binding of topologies.flatMap((t) => t.bindings)) {
    bindings.set(canonical([binding.exchange, binding.queue, binding.routingKey ?? "", binding.arguments ?? {}]), binding)
  }
  return {
    topology: { exchanges: [...exchanges.values()], queues: [...queues.values()], bindings: [...bindings.values()] },
    mismatches
  }
}

/**
 * A mismatch as an option problem, for {@link Options.InvalidOptions}.
 *
 * @category errors
 * @since 0.1.0
 */
export const mismatchProblem = (mismatch: Mismatch): Problem => ({
  option: `topology: ${mismatch.kind} ${JSON.stringify(mismatch.name)} ${mismatch.field}`,
  value: mismatch.values,
  expected: "one value (two declarations of it disagree)"
})

/**
 * Two descriptions in one, as {@link combine} merges them (where they
 * disagree, the first wins).
 *
 * @category utils
 * @since 0.1.0
 */
export const merge = (self: Topology, that: Topology): Topology => combine([self, that]).topology

const conflict = (kind: TopologyConflict["kind"], name: string) =>
(
  error: Channel.ChannelError
): Effect.Effect<never, TopologyConflict | Channel.ChannelError> =>
  ReplyCode.isConflict(error.code)
    ? Effect.fail(
      new TopologyConflict({
        kind,
        name,
        argument: /inequivalent arg '([^']+)'/.exec(error.reason)?.[1],
        reason: error.reason
      })
    )
    : Effect.fail(error)

const declareExchange = (channel: Channel.Channel, exchange: ExchangeSpec) =>
  channel.call(
    `exchange.declare ${exchange.name}`,
    (ch) => ch.assertExchange(exchange.name, exchange.type, { durable: exchange.durable ?? true, arguments: exchange.arguments })
  ).pipe(Effect.catch(conflict("exchange", exchange.name)))

const declareQueueOnly = (channel: Channel.Channel, queue: QueueSpec) =>
  channel.call(
    `queue.declare ${queue.name}`,
    (ch) =>
      ch.assertQueue(queue.name, {
        durable: queue.type === "quorum" ? true : queue.durable ?? true,
        arguments: queueArguments(queue)
      })
  ).pipe(Effect.catch(conflict("queue", queue.name)))

const bind = (channel: Channel.Channel, binding: BindingSpec) =>
  channel.call(
    `queue.bind ${binding.queue} to ${binding.exchange}`,
    (ch) => ch.bindQueue(binding.queue, binding.exchange, binding.routingKey ?? "", binding.arguments)
  ).pipe(Effect.catch(conflict("binding", `${binding.exchange} -> ${binding.queue}`)))

/**
 * Declares everything: exchanges, then queues, then bindings.
 *
 * @category constructors
 * @since 0.1.0
 */
export const declare = (
  connection: Connection,
  topology: Topology
): Effect.Effect<void, TopologyConflict | Channel.ChannelError> =>
  Effect.scoped(Effect.gen(function*() {
    let channel = yield* Channel.make(connection)
    for (const exchange of topology.exchanges) yield* declareExchange(channel, exchange)
    for (const queue of topology.queues) {
      const declared = yield* Effect.exit(declareQueueOnly(channel, queue))
      if (declared._tag === "Success") continue
      const error = Cause.findErrorOption(declared.cause)
      if (queue.whenDifferent !== "keep" || error._tag === "None" || !(error.value instanceof TopologyConflict)) {
        return yield* Effect.failCause(declared.cause)
      }
      // The broker closed the channel over the conflict: the rest goes on a new one.
      yield* Effect.logDebug(`queue ${queue.name} exists with other arguments; kept as it is (${error.value.reason})`)
      channel = yield* Channel.make(connection)
    }
    for (const binding of topology.bindings) yield* bind(channel, binding)
  }))

/**
 * Declares one queue again with its bindings (after the broker deleted it),
 * or with default settings when the topology does not describe it.
 *
 * @category utils
 * @since 0.1.0
 */
export const declareQueue = (
  channel: Channel.Channel,
  topology: Topology,
  name: string
): Effect.Effect<void, TopologyConflict | Channel.ChannelError> =>
  Effect.gen(function*() {
    yield* declareQueueOnly(channel, topology.queues.find((queue) => queue.name === name) ?? { name })
    for (const binding of topology.bindings) {
      if (binding.queue !== name) continue
      const exchange = topology.exchanges.find((e) => e.name === binding.exchange)
      if (exchange !== undefined) yield* declareExchange(channel, exchange)
      yield* bind(channel, binding)
    }
  })
