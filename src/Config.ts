/**
 * The worker's configuration from the environment, read with effect `Config`.
 * A value that does not parse stops start-up with an error naming the
 * variable; the broker URL is read as a redacted secret, so the password never
 * reaches a log line.
 *
 * | variable                 | default                              |
 * | ------------------------ | ------------------------------------ |
 * | `AMQP_URL`               | `amqp://guest:guest@127.0.0.1:5672` (several: comma-separated) |
 * | `AMQP_TLS_CA_FILE`, `AMQP_TLS_CERT_FILE`, `AMQP_TLS_KEY_FILE` | none (PEM files for `amqps://`) |
 * | `AMQP_PREFETCH`          | 100 (1 to 65535)                     |
 * | `AMQP_HEARTBEAT_SECONDS` | 10 (0 turns heartbeats off)          |
 * | `AMQP_CONNECTION_NAME`   | `effect-rabbitmq-worker`             |
 * | `RECONNECT_BASE_MS`      | 200                                  |
 * | `RECONNECT_MAX_MS`       | 30000                                |
 * | `AMQP_CONNECT_TIMEOUT_MS`| 10000 (TCP, TLS and AMQP handshake of one address, one deadline) |
 * | `SHUTDOWN_GRACE_MS`      | 10000                                |
 * | `HANDLER_TIMEOUT_MS`     | 300000 (a handler running longer is interrupted: a `HandlerTimeout` failure) |
 * | `MAX_BODY_BYTES`         | 1048576 (larger bodies are dead-lettered undecoded) |
 * | `PUBLISH_TIMEOUT_MS`     | 10000 (how long a publish waits for a connection) |
 * | `PUBLISH_MAX_WAITING`    | 1000 (publishes that may wait at once) |
 *
 * `LOG_LEVEL` and `LOG_FORMAT` are read by {@link Logging}.
 *
 * @since 0.1.0
 */
import { readFileSync } from "node:fs"
import { Config, Duration, Effect, Option, Redacted, Schema, SchemaIssue } from "effect"
import * as Connection from "./Connection.ts"
import { defaults } from "./Options.ts"
import type { WorkerOptions } from "./Worker.ts"

/**
 * An `amqp://` or `amqps://` URL, or several separated by commas. The
 * failure message never repeats the value: it may hold a password.
 *
 * @category utils
 * @since 0.1.0
 */
export const AmqpUrl = Schema.String.check(Schema.makeFilter((urls: string) => Connection.urlProblem(urls)))

/**
 * The error for a value of variable `name` that cannot be used.
 *
 * @category utils
 * @since 0.1.0
 */
export const invalid = (name: string, message: string): Schema.SchemaError =>
  new Schema.SchemaError(new SchemaIssue.Pointer([name], new SchemaIssue.InvalidValue({ message })))

/** A file named by `name`, read at start-up; unreadable is an error naming the variable. */
const file = (name: string) =>
  Config.String(name).pipe(
    Config.option,
    Config.mapEffect((path) =>
      Option.match(path, {
        onNone: () => Effect.succeed(undefined),
        onSome: (path) =>
          Effect.try({
            try: () => readFileSync(path),
            catch: (error) => new Config.ConfigError(invalid(name, `cannot read ${path}: ${String(error)}`))
          })
      })
    )
  )

const int = (name: string, minimum: number, maximum: number, fallback: number) =>
  Config.schema(Schema.Int.check(Schema.isBetween({ minimum, maximum })), name).pipe(Config.withDefault(fallback))

/**
 * @category constants
 * @since 0.1.0
 */
export const DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672"

/**
 * Worker options from the environment.
 *
 * @category config
 * @since 0.1.0
 */
export const workerOptions: Config.Config<WorkerOptions> = Config.all({
  url: Config.schema(Schema.Redacted(AmqpUrl), "AMQP_URL").pipe(Config.withDefault(Redacted.make(DEFAULT_URL))),
  prefetch: int("AMQP_PREFETCH", 1, 65535, defaults.prefetch),
  heartbeatSeconds: int("AMQP_HEARTBEAT_SECONDS", 0, 3600, 10),
  connectionName: Config.String("AMQP_CONNECTION_NAME").pipe(Config.withDefault("effect-rabbitmq-worker")),
  connectTimeoutMs: int("AMQP_CONNECT_TIMEOUT_MS", 1, 3_600_000, 10_000),
  reconnectBaseMs: int("RECONNECT_BASE_MS", 1, 3_600_000, 200),
  reconnectMaxMs: int("RECONNECT_MAX_MS", 1, 3_600_000, 30_000),
  shutdownGraceMs: int("SHUTDOWN_GRACE_MS", 0, 3_600_000, 10_000),
  handlerTimeoutMs: int("HANDLER_TIMEOUT_MS", 1, 86_400_000, 300_000),
  maxBodyBytes: int("MAX_BODY_BYTES", 1, 512 * 1024 * 1024, 1024 * 1024),
  publishTimeoutMs: int("PUBLISH_TIMEOUT_MS", 0, 3_600_000, 10_000),
  publishMaxWaiting: int("PUBLISH_MAX_WAITING", 0, 1_000_000, 1000),
  tls: Config.all({ ca: file("AMQP_TLS_CA_FILE"), cert: file("AMQP_TLS_CERT_FILE"), key: file("AMQP_TLS_KEY_FILE") })
}).pipe(
  Config.flatMap((c) =>
    c.reconnectMaxMs < c.reconnectBaseMs
      ? Config.fail(invalid("RECONNECT_MAX_MS", `must not be below RECONNECT_BASE_MS (${c.reconnectBaseMs})`))
      : Config.succeed(c)
  ),
  Config.map((c): WorkerOptions => ({
    connection: {
      url: c.url,
      heartbeatSeconds: c.heartbeatSeconds,
      name: c.connectionName,
      connectTimeout: Duration.millis(c.connectTimeoutMs),
      tls: c.tls
    },
    handlerTimeout: Duration.millis(c.handlerTimeoutMs),
    prefetch: c.prefetch,
    maxBodyBytes: c.maxBodyBytes,
    publisher: { timeout: Duration.millis(c.publishTimeoutMs), maxWaiting: c.publishMaxWaiting },
    shutdownGrace: Duration.millis(c.shutdownGraceMs),
    reconnect: {
      base: Duration.millis(c.reconnectBaseMs),
      max: Duration.millis(c.reconnectMaxMs),
      healthyAfter: Duration.seconds(5)
    }
  }))
)
