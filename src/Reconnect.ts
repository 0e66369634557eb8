/**
 * The reconnect loop: how long to wait before the next attempt, and the loop
 * that runs one session after another.
 *
 * A session is anything that is acquired, becomes healthy ("ready") and then
 * ends, usually by failing (the connection was lost, a channel closed). The
 * same loop restarts whole connections ({@link Session}) and single consumer
 * channels ({@link Consumer}).
 *
 * Backoff rules:
 * - delays grow as `Schedule.exponential(base)`, are capped so that they never
 *   exceed `max`, and are jittered (±20 %) so that many workers that lost the
 *   same broker do not come back in lockstep;
 * - the backoff starts again from `base` only after a session was ready for at
 *   least `healthyAfter`: a connection that is accepted and then dropped right
 *   away (a flapping broker, a bad credential on a proxy) keeps backing off
 *   instead of looping hot.
 *
 * @since 0.1.0
 */
import { Cause, Clock, Duration, Effect, Exit, Option, Schedule } from "effect"
import type { Checker } from "./Options.ts"

/**
 * @category models
 * @since 0.1.0
 */
export interface BackoffOptions {
  /** The first delay. */
  readonly base: Duration.Input
  /** No delay is ever longer than this. */
  readonly max: Duration.Input
  /**
   * A session that stayed ready at least this long was healthy: the next
   * failure starts the backoff from `base` again. Default: 5 seconds.
   */
  readonly healthyAfter?: Duration.Input | undefined
}

/**
 * Adds the problems of backoff options to `checker`: delays above 0, `base`
 * not above `max`.
 *
 * @category checks
 * @since 0.1.0
 */
export const check = (options: BackoffOptions | undefined, checker: Checker, prefix: string): void => {
  if (options === undefined) return
  const base = checker.duration(`${prefix}.base`, options.base, true)
  const max = checker.duration(`${prefix}.max`, options.max, true)
  checker.check(base === undefined || max === undefined || base <= max, `${prefix}.base`, options.base, `at most ${prefix}.max`)
  checker.duration(`${prefix}.healthyAfter`, options.healthyAfter, false)
}

/** The jitter factor applied by `Schedule.jittered` (delays are scaled into [0.8, 1.2]). */
const JITTER = 1.2

/**
 * The backoff schedule: exponential from `base`, capped, then jittered. The
 * cap is applied before the jitter and divided by the jitter factor, so that a
 * jittered delay still never exceeds `max` and delays at the cap stay spread.
 *
 * @category utils
 * @since 0.1.0
 */
export const schedule = (options: BackoffOptions): Schedule.Schedule<Duration.Duration> => {
  const maxMillis = Duration.toMillis(Duration.fromInputUnsafe(options.max))
  return Schedule.min([
    Schedule.exponential(options.base),
    Schedule.spaced(Duration.millis(maxMillis / JITTER))
  ]).pipe(Schedule.jittered)
}

/**
 * What a loop reports before it waits for the next attempt.
 *
 * @category models
 * @since 0.1.0
 */
export interface Retry {
  /** Consecutive failed sessions since the last healthy one (1 for the first). */
  readonly attempt: number
  /** How long the loop waits before the next attempt. */
  readonly delay: Duration.Duration
  /** Why the last session ended. */
  readonly cause: Cause.Cause<unknown>
}

/**
 * @category models
 * @since 0.1.0
 */
export interface LoopOptions<E, F extends E> {
  readonly backoff: BackoffOptions
  /** Errors that retrying cannot mend: the loop ends with them. */
  readonly isFatal?: ((error: E) => error is F) | undefined
  /** Called before every wait: logging and status updates go here. */
  readonly onRetry?: ((retry: Retry) => Effect.Effect<void>) | undefined
}

/**
 * Runs `session` again and again, waiting between runs by the backoff rules.
 * `session` receives an effect to call once it is ready (connected and
 * subscribed). The loop only ends with a fatal error, or by interruption.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import * as Reconnect from "./Reconnect.ts"
 *
 * const forever = Reconnect.loop(
 *   { backoff: { base: "200 millis", max: "30 seconds" } },
 *   (ready) => ready.pipe(Effect.andThen(Effect.fail("connection lost")))
 * )
 * ```
 *
 * @category constructors
 * @since 0.1.0
 */
export const loop = <E, R, F extends E = never>(
  options: LoopOptions<E, F>,
  session: (ready: Effect.Effect<void>) => Effect.Effect<never, E, R>
): Effect.Effect<never, F, R> =>
  Effect.gen(function*() {
    const backoff = schedule(options.backoff)
    const healthyAfter = Duration.toMillis(Duration.fromInputUnsafe(options.backoff.healthyAfter ?? "5 seconds"))
    let step = yield* Schedule.toStep(backoff)
    let attempt = 0
    while (true) {
      let readyAt: number | undefined
      const ready = Effect.flatMap(Clock.currentTimeMillis, (now) =>
        Effect.sync(() => {
          readyAt ??= now
        }))
      const exit: Exit.Exit<never, E> = yield* Effect.exit(session(ready))
      if (Exit.isSuccess(exit)) return exit.value
      const error = Cause.findErrorOption(exit.cause)
      if (Option.isSome(error) && options.isFatal !== undefined && options.isFatal(error.value)) {
        return yield* Effect.fail(error.value)
      }
      const now = yield* Clock.currentTimeMillis
      if (readyAt !== undefined && now - readyAt >= healthyAfter) {
        step = yield* Schedule.toStep(backoff)
        attempt = 0
      }
      attempt++
      // The schedule never completes (exponential and spaced recur forever).
      // A step is [output, delay]: the delay is the jittered one.
      const [, delay] = yield* Effect.orDie(step(now, undefined))
      // The report is best effort: a defect in it (the worker's loggers cannot throw, but `onRetry` is any effect) must not end the reconnecting.
      if (options.onRetry) yield* Effect.catchDefect(options.onRetry({ attempt, delay, cause: exit.cause }), () => Effect.void)
      yield* Effect.sleep(delay)
    }
  })
