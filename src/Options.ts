/**
 * The library's defaults, in one table, and the checks every option passes
 * before a worker starts.
 *
 * A bad option never gets as far as the broker: `prefetch: 0` would mean
 * "unlimited" to RabbitMQ, a zero retry delay would loop a failing message
 * hot, a negative grace period would skip the drain. {@link Worker.make}
 * checks the worker's options and every consumer's, and fails with one
 * {@link InvalidOptions} that names each bad option, its value and what it
 * must be. The environment variables ({@link WorkerConfig}) are checked on
 * their own, when they are read.
 *
 * | option                          | default                     | must be                      |
 * | ------------------------------- | --------------------------- | ---------------------------- |
 * | `prefetch`                      | 100                         | an integer, 1 to 65535       |
 * | `concurrency` (consumer)        | the prefetch                | an integer, at least 1       |
 * | `maxBodyBytes`                  | 1 MiB                       | an integer above 0           |
 * | `handlerTimeout`                | 5 minutes                   | a finite duration above 0    |
 * | `shutdownGrace`                 | 10 seconds                  | a finite duration, 0 or more |
 * | `reconnect.base` / `.max`       | 200 ms / 30 s               | above 0, base not above max  |
 * | `reconnect.healthyAfter`        | 5 seconds                   | a finite duration, 0 or more |
 * | `connection.connectTimeout`     | 10 seconds                  | a finite duration above 0    |
 * | `connection.heartbeatSeconds`   | 10                          | an integer, 0 to 3600        |
 * | `publisher.timeout`             | 10 seconds                  | a finite duration, 0 or more |
 * | `publisher.maxWaiting`          | 1000                        | an integer, 0 or more        |
 * | `Outcome.retry` `maxAttempts`   | 5                           | an integer, at least 1       |
 * | `Outcome.retry` `delay`         | 5 seconds                   | a finite duration above 0    |
 *
 * @since 0.1.0
 */
import { Data, Duration, Option } from "effect"

/**
 * The defaults of every option that has one.
 *
 * @category defaults
 * @since 0.1.0
 */
export const defaults = {
  // The low end of the 100 to 300 that RabbitMQ's guide to acknowledgements recommends. Handlers
  // that wait (for a result's confirm, say) need a window that size to keep the broker busy:
  // the example worker on the bench's real path did 0.61x raw amqplib at 20, 0.86x at 100.
  prefetch: 100,
  maxBodyBytes: 1024 * 1024,
  handlerTimeout: Duration.minutes(5),
  shutdownGrace: Duration.seconds(10),
  reconnect: { base: Duration.millis(200), max: Duration.seconds(30), healthyAfter: Duration.seconds(5) },
  connectTimeout: Duration.seconds(10),
  heartbeatSeconds: 10,
  publishTimeout: Duration.seconds(10),
  publishMaxWaiting: 1000,
  retry: { maxAttempts: 5, delay: Duration.seconds(5) }
} as const

/**
 * One option that cannot be used.
 *
 * @category errors
 * @since 0.1.0
 */
export interface Problem {
  /** Where the option is, e.g. `prefetch` or `consumer "tasks": concurrency`. */
  readonly option: string
  readonly value: unknown
  /** What the value must be. */
  readonly expected: string
}

/**
 * Options that cannot be used: nothing was started.
 *
 * @category errors
 * @since 0.1.0
 */
export class InvalidOptions extends Data.TaggedError("InvalidOptions")<{
  readonly problems: ReadonlyArray<Problem>
}> {
  override get message() {
    return `invalid options: ${
      this.problems.map((p) => `${p.option} is ${show(p.value)}, must be ${p.expected}`).join("; ")
    }`
  }
}

const show = (value: unknown): string => {
  if (typeof value === "string") return JSON.stringify(value)
  if (Duration.isDuration(value)) return Duration.format(value)
  if (typeof value === "bigint") return `${value}n`
  try {
    return JSON.stringify(value) ?? String(value)
  } catch {
    return String(value)
  }
}

/**
 * Collects the problems of one set of options; `prefix` names where they are.
 *
 * @category checks
 * @since 0.1.0
 */
export class Checker {
  readonly problems: Array<Problem> = []
  readonly prefix: string
  constructor(prefix = "") {
    this.prefix = prefix
  }

  private add(option: string, value: unknown, expected: string) {
    this.problems.push({ option: `${this.prefix}${option}`, value, expected })
  }

  /** An integer within [minimum, maximum], when given. */
  int(option: string, value: unknown, minimum: number, maximum = Number.MAX_SAFE_INTEGER): this {
    if (value === undefined) return this
    if (typeof value !== "number" || !Number.isInteger(value) || value < minimum || value > maximum) {
      this.add(
        option,
        value,
        maximum === Number.MAX_SAFE_INTEGER
          ? `an integer, at least ${minimum}`
          : `an integer from ${minimum} to ${maximum}`
      )
    }
    return this
  }

  /** A finite duration, above 0 (`positive`) or at least 0, when given; returns it in milliseconds. */
  duration(option: string, value: Duration.Input | undefined, positive: boolean): number | undefined {
    if (value === undefined) return undefined
    const parsed = Duration.fromInput(value)
    const millis = Option.isSome(parsed) && Duration.isFinite(parsed.value) ? Duration.toMillis(parsed.value) : NaN
    if (!(positive ? millis > 0 : millis >= 0)) {
      this.add(option, value, positive ? "a finite duration above 0" : "a finite duration, 0 or more")
      return undefined
    }
    return millis
  }

  /** A free-form check. */
  check(ok: boolean, option: string, value: unknown, expected: string): this {
    if (!ok) this.add(option, value, expected)
    return this
  }
}

/**
 * Fails when any of the checkers found a problem.
 *
 * @category checks
 * @since 0.1.0
 */
export const collect = (checkers: ReadonlyArray<{ readonly problems: ReadonlyArray<Problem> }>): InvalidOptions | undefined => {
  const problems = checkers.flatMap((checker) => checker.problems)
  return problems.length === 0 ? undefined : new InvalidOptions({ problems })
}
