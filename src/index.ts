/**
 * A RabbitMQ consumer worker on Effect: typed handlers, reconnection with
 * backoff, graceful shutdown, no lost messages.
 *
 * @since 0.1.0
 */
export * as Channel from "./Channel.ts"
export * as Connection from "./Connection.ts"
export * as Consumer from "./Consumer.ts"
export * as DeadLetters from "./DeadLetters.ts"
export * as Health from "./Health.ts"
export * as Logging from "./Logging.ts"
export type { Message } from "./Message.ts"
export * as Metrics from "./Metrics.ts"
export * as Options from "./Options.ts"
export * as Outcome from "./Outcome.ts"
export * as Publisher from "./Publisher.ts"
export * as Reconnect from "./Reconnect.ts"
export * as Session from "./Session.ts"
export * as Status from "./Status.ts"
export * as Telemetry from "./Telemetry.ts"
export * as Topology from "./Topology.ts"
export * as Tracing from "./Tracing.ts"
export * as Worker from "./Worker.ts"
export * as WorkerConfig from "./Config.ts"
