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
import type { Handle, State } from "./dispatch.ts"

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

/** What the handling of every delivery of one consumer shares. */
interface Env<S extends BodySchema, H extends BodySchema, E, R> extends HandleOptions<S, H, E, R> {
  /** The failure of a handler the watchdog interrupted. */
  readonly timedOut: Exit.Exit<never, Outcome.HandlerError<Outcome.HandlerTimeout>>
}

/** One delivery being handled: a class, not a literal, for the reason `internal/decode.ts` gives. */
class Job {
  readonly delivery: Channel.Delivery
  readonly attempt: number
  readonly state: State
  readonly startedAt: number
  /**
   * Its outcome was carried out (or there was nothing to send). Set before
   * its handler ends only when the handler was abandoned (`Dispatch.abandon`):
   * the handler's end then settles nothing.
   */
  settled = false
  constructor(delivery: Channel.Delivery, attempt: number, state: State, startedAt: number) {
    this.delivery = delivery
    this.attempt = attempt
    this.state = state
    this.startedAt = startedAt
  }
}

/**
 * Handles deliveries of one consumer on one channel. What a handler fiber
 * needs for every message (the continuations after the handler, above all)
 * is made once per slot (`internal/dispatch.ts`): a slot's fiber handles one
 * message at a time, so its current job is a variable, and neither a
 * message nor a fiber makes closures.
 */
export const handler = <S extends BodySchema, H extends BodySchema, E, R>(
  options: HandleOptions<S, H, E, R>
): Handle<R> => {
  const env: Env<S, H, E, R> = {
    ...options,
    timedOut: Exit.fail(new Outcome.HandlerError({ error: new Outcome.HandlerTimeout({ timeout: options.handlerTimeout }) }))
  }
  return (slot, state, next) => {
    let job!: Job
    const succeeded = () => {
      slot.startedAt = -1
      return job.settled ? undefined : finish(env, job, ack)
    }
    const failed = (cause: Cause.Cause<E>) => {
      slot.startedAt = -1
      if (job.settled) return undefined
      return finish(env, job, decide(
        env,
        job,
        slot.timedOut && Cause.hasInterruptsOnly(cause)
          ? env.timedOut
          : Exit.failCause(Cause.map(cause, (error) => new Outcome.HandlerError({ error })))
      ))
    }
    slot.unsettled = () => job !== undefined && !job.settled
    slot.settleAbandoned = () => {
      slot.startedAt = -1
      return finish(env, job, decide(env, job, env.timedOut))
    }
    // One parameter each: `matchCauseEffect` wraps a continuation of another arity in a closure of its own.
    const untraced = {
      onSuccess: (_: unknown) => andThen(succeeded(), next),
      onFailure: (cause: Cause.Cause<E>) => andThen(failed(cause), next)
    }
    // Traced: the outcome is settled (and logged) inside the message's span; `next` runs after it.
    // Made only when traced.
    const traced = env.traced
      ? {
        onSuccess: (_: unknown) => succeeded() ?? Effect.void,
        onFailure: (cause: Cause.Cause<E>) => failed(cause) ?? Effect.void,
        afterSpan: (_: unknown) => next
      }
      : undefined
    return (delivery, attempt, failedDeliveries) => {
      job = new Job(delivery, attempt, state, performance.now())
      env.metrics.received()
      // Crashed the worker on every attempt: parked without running again.
      const spent = Outcome.unsettled(env.policy, attempt, failedDeliveries)
      if (spent !== undefined) return andThen(finish(env, job, spent), next)

      const prepared = env.prepare(delivery, env.maxBodyBytes, attempt)
      if (prepared instanceof Outcome.DecodeError) return andThen(finish(env, job, decide(env, job, Exit.fail(prepared))), next)
      const handler = callHandler(env, prepared)
      slot.startedAt = job.startedAt
      if (traced === undefined) return Effect.matchCauseEffect(slot.restore(handler), untraced)
      return Effect.flatMap(
        Tracing.consume(env.queue, delivery.properties.headers, {
          "messaging.message.id": prepared.message.id,
          "messaging.rabbitmq.destination.routing_key": delivery.fields.routingKey,
          "messaging.rabbitmq.message.attempt": attempt
        })(Effect.matchCauseEffect(slot.restore(Tracing.handle(handler)), traced)),
        traced.afterSpan
      )
    }
  }
}

/**
 * A handler that throws instead of returning an effect, or returns
 * something else (a `Promise` from an `async` function, `undefined`), has
 * died: same outcome as a defect. Run as it is, a value that is not an
 * effect would kill the handler fiber past its outcome rules, leaving the
 * message unsettled.
 */
const callHandler = <S extends BodySchema, H extends BodySchema, E, R>(
  env: Env<S, H, E, R>,
  prepared: Prepared<S["Type"], H["Type"]>
): Effect.Effect<unknown, E, R> => {
  let result: Effect.Effect<unknown, E, R>
  try {
    result = env.handler(prepared.body, prepared.message)
  } catch (defect) {
    return Effect.die(defect)
  }
  // Typed as an effect, but JavaScript callers and casts can return anything.
  return Effect.isEffect(result)
    ? result
    : Effect.die(new Error(`the handler returned ${describe(result)}, not an Effect`))
}

const describe = (value: unknown): string =>
  value === null
    ? "null"
    : value instanceof Promise
    ? "a Promise (an async function?)"
    : typeof value === "object"
    ? "an object"
    : typeof value === "undefined"
    ? "undefined"
    : `a ${typeof value}`

const decide = <S extends BodySchema, H extends BodySchema, E, R>(
  env: Env<S, H, E, R>,
  job: Job,
  exit: Exit.Exit<unknown, Outcome.DecodeError | Outcome.HandlerError<E | Outcome.HandlerTimeout>>
): Outcome.Decision =>
  Outcome.decide(exit, env.policy, {
    attempt: job.attempt,
    redelivered: job.delivery.fields.redelivered,
    interruptedByWorker: job.state.stopping()
  })

/** Settles by `decision` (unless the delivery is void) and returns the log line to write, if any. */
const finish = <S extends BodySchema, H extends BodySchema, E, R>(
  env: Env<S, H, E, R>,
  job: Job,
  decision: Outcome.Decision
): Effect.Effect<void> | undefined => {
  if (job.state.voided()) {
    job.settled = true
    return report(env, { outcome: undefined, log: voidLog }, job.startedAt)
  }
  const settled = env.settle(job.delivery, decision)
  job.settled = true
  return Effect.isEffect(settled)
    ? Effect.flatMap(settled, (s) => report(env, s, job.startedAt) ?? Effect.void)
    : report(env, settled, job.startedAt)
}

/** Counts the outcome, and returns its log line unless it is an ack nobody reads. */
const report = <S extends BodySchema, H extends BodySchema, E, R>(
  env: Env<S, H, E, R>,
  { log, outcome }: Settled,
  startedAt: number
): Effect.Effect<void> | undefined => {
  const seconds = (performance.now() - startedAt) / 1000
  env.metrics.settled(outcome, seconds)
  return outcome === "Ack" && !env.logAcks
    ? undefined
    : Effect.annotateLogs(log, { outcome: outcome ?? "none", durationMs: Math.round(seconds * 1000) })
}

/** Runs `first`, if there is anything to run, then `next`. */
const andThen = <R>(first: Effect.Effect<void> | undefined, next: Effect.Effect<void, never, R>): Effect.Effect<void, never, R> =>
  first === undefined ? next : Effect.flatMap(first, () => next)
