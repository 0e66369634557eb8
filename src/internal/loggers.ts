/**
 * The application's loggers as the worker runs them: unable to throw.
 *
 * Effect calls every logger in the fiber's `CurrentLoggers` on each log
 * line, and a logger that throws (a closed log stream, a sink's bug) makes
 * the line's effect die. Inside the worker that is a line in a reconnect,
 * a broker-block report, a drain or a handler: a broken log sink would stop
 * reconnecting, leave the status blocked for good, or send every message
 * to the dead-letter queue as a defect. So the worker wraps each logger
 * once: a throw drops that line, and is reported once a logger on stderr
 * (the one place left to say it).
 *
 * @internal
 */
import { Effect, Logger } from "effect"

const wrapped = new WeakSet<Logger.Logger<unknown, unknown>>()

const safe = (logger: Logger.Logger<unknown, unknown>): Logger.Logger<unknown, unknown> => {
  if (wrapped.has(logger)) return logger
  let reported = false
  const guarded = Logger.make((options) => {
    try {
      return logger.log(options)
    } catch (error) {
      if (!reported) {
        reported = true
        report(error)
      }
      return undefined
    }
  })
  wrapped.add(guarded)
  return guarded
}

const report = (error: unknown): void => {
  try {
    const text = error instanceof Error ? `${error.name}: ${error.message}` : String(error)
    process.stderr.write(`a logger threw (${text}); the worker goes on, without that logger's failed lines\n`)
  } catch {
    // Nowhere left to say it.
  }
}

/** Runs `effect` (and every fiber it starts) with the current loggers made unable to throw. */
export const withSafeLoggers = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.withFiber((fiber) => {
    const loggers = fiber.getRef(Logger.CurrentLoggers)
    return Effect.provideService(effect, Logger.CurrentLoggers, new Set([...loggers].map(safe)))
  })
