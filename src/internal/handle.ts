/**
 * The handling of one delivery, from its decoding to its settled outcome:
 * decode, run the handler (in a span when traced), decide by the outcome
 * rules ({@link Outcome.decide}), settle, count, log.
 *
 * @internal
 */
import type * as Channel from "../Channel.ts"
import { Cause, Duration, Effect, Exit } from "effect"
import type { Message } from "../Message.ts"
import type * as Metrics from "../Metrics.ts"
import * as Outcome from "../Outcome.ts"
import * as Tracing from "../Tracing.ts"
import type { BodySchema, Prepared } from "./decode.ts"
import type { Settle, Settled } from "./settle.ts"
import type { Handle } from "./dispatch.ts"

export interface HandleOptions<S extends BodySchema, H extends BodySchema, E, R> {
  readonly queue: string
  readonly policy: Outcome.FailurePolicy
  readonly prepare: (
    delivery: Channel.Delivery,
    maxBodyBytes: number,
    attempt: number
  ) => Prepared<S["Type"], H["Type"]> | Outcome.DecodeError
  readonly handler: (body: S["Type"], message: Message<H["Type"]>) => Effect.Effect<unknown, E, R>
  readonly maxBodyBytes: number
  readonly handlerTimeout: Duration.Duration
  readonly settle: Settle
  readonly metrics: ReturnType<typeof Metrics.forQueue>
  /** Spans only when a tracer exports them. */
  readonly traced: boolean
  /** Ack log lines only when someone reads Debug. */
  readonly logAcks: boolean
}

const ack: Outcome.Decision = { _tag: "Ack" }

const voidLog = Effect.logDebug("the broker took the message back (subscription cancelled): nothing sent for it")

/** Handles deliveries of one consumer on one channel. */
export const handler = <S extends BodySchema, H extends BodySchema, E, R>(
  options: HandleOptions<S, H, E, R>
): Handle<R> => {
  const { metrics, policy, settle } = options
  const timedOut = Exit.fail(new Outcome.HandlerError({ error: new Outcome.HandlerTimeout({ timeout: options.handlerTimeout }) }))

  /** A handler that throws instead of returning an effect has died: same outcome as a defect. */
  const callHandler = (body: S["Type"], message: Message<H["Type"]>): Effect.Effect<unknown, E, R> => {
    try {
      return options.handler(body, message)
    } catch (defect) {
      return Effect.die(defect)
    }
  }

  const report = ({ log, outcome }: Settled, startedAt: number): Effect.Effect<void> | undefined => {
    const seconds = (performance.now() - startedAt) / 1000
    metrics.settled(outcome, seconds)
    return outcome === "Ack" && !options.logAcks
      ? undefined
      : Effect.annotateLogs(log, { outcome: outcome ?? "none", durationMs: Math.round(seconds * 1000) })
  }

  return (delivery, attempt, failedDeliveries, slot, state, restore, next) => {
    const startedAt = performance.now()
    metrics.received()

    /** Settles by `decision` (unless the delivery is void) and returns the log line to write, if any. */
    const finish = (decision: Outcome.Decision): Effect.Effect<void> | undefined => {
      if (state.voided()) return report({ outcome: undefined, log: voidLog }, startedAt)
      const settled = settle(delivery, decision)
      return Effect.isEffect(settled)
        ? Effect.flatMap(settled, (s) => report(s, startedAt) ?? Effect.void)
        : report(settled, startedAt)
    }
    const decide = (exit: Exit.Exit<unknown, Outcome.DecodeError | Outcome.HandlerError<E | Outcome.HandlerTimeout>>) =>
      Outcome.decide(exit, policy, {
        attempt,
        redelivered: delivery.fields.redelivered,
        interruptedByWorker: state.stopping()
      })

    // Crashed the worker on every attempt: parked without running again.
    const spent = Outcome.unsettled(policy, attempt, failedDeliveries)
    if (spent !== undefined) return andThen(finish(spent), next)

    const prepared = options.prepare(delivery, options.maxBodyBytes, attempt)
    if (prepared instanceof Outcome.DecodeError) return andThen(finish(decide(Exit.fail(prepared))), next)

    const succeeded = () => {
      slot.startedAt = -1
      return finish(ack)
    }
    const failed = (cause: Cause.Cause<E>) => {
      slot.startedAt = -1
      return finish(decide(
        slot.timedOut && Cause.hasInterruptsOnly(cause)
          ? timedOut
          : Exit.failCause(Cause.map(cause, (error) => new Outcome.HandlerError({ error })))
      ))
    }
    const handler = callHandler(prepared.body, prepared.message)
    slot.startedAt = startedAt
    if (!options.traced) {
      return Effect.matchCauseEffect(restore(handler), {
        onSuccess: () => andThen(succeeded(), next),
        onFailure: (cause) => andThen(failed(cause), next)
      })
    }
    // Traced: the outcome is settled (and logged) inside the message's span; `next` runs after it.
    const handled = Effect.matchCauseEffect(restore(Tracing.handle(handler)), {
      onSuccess: () => succeeded() ?? Effect.void,
      onFailure: (cause) => failed(cause) ?? Effect.void
    })
    return Effect.flatMap(
      Tracing.consume(options.queue, delivery.properties.headers, {
        "messaging.message.id": prepared.message.id,
        "messaging.rabbitmq.destination.routing_key": delivery.fields.routingKey,
        "messaging.rabbitmq.message.attempt": attempt
      })(handled),
      () => next
    )
  }
}

/** Runs `first`, if there is anything to run, then `next`. */
const andThen = <R>(first: Effect.Effect<void> | undefined, next: Effect.Effect<void, never, R>): Effect.Effect<void, never, R> =>
  first === undefined ? next : Effect.flatMap(first, () => next)
