/**
 * Configuration from the environment: defaults, parsing, and errors that name
 * the variable without echoing a secret.
 */
import { assert, describe, it } from "@effect/vitest"
import { ConfigProvider, Duration, Effect, Layer, Redacted, Schema } from "effect"
import * as WorkerConfig from "../src/Config.ts"
import * as Consumer from "../src/Consumer.ts"
import * as Worker from "../src/Worker.ts"
import * as broker from "./support/broker.ts"
import { fileURLToPath } from "node:url"
import * as Connection from "../src/Connection.ts"
import * as Health from "../src/Health.ts"
import * as Logging from "../src/Logging.ts"

const load = (env: Record<string, string>) =>
  Effect.gen(function*() {
    return yield* WorkerConfig.workerOptions
  }).pipe(Effect.provide(ConfigProvider.layer(ConfigProvider.fromUnknown(env))))

describe("WorkerConfig", () => {
  it.effect("has defaults for everything", () =>
    Effect.gen(function*() {
      const options = yield* load({})
      assert.strictEqual(Redacted.value(options.connection.url), "amqp://guest:guest@127.0.0.1:5672")
      assert.strictEqual(options.connection.heartbeatSeconds, 10)
      assert.strictEqual(options.prefetch, 100)
      assert.deepStrictEqual(options.shutdownGrace, Duration.seconds(10))
      assert.deepStrictEqual(options.reconnect?.base, Duration.millis(200))
      assert.deepStrictEqual(options.reconnect?.max, Duration.millis(30_000))
    }))

  it.effect("reads every variable", () =>
    Effect.gen(function*() {
      const options = yield* load({
        AMQP_URL: "amqps://u:p@broker.example:5671/prod",
        AMQP_PREFETCH: "50",
        AMQP_HEARTBEAT_SECONDS: "0",
        AMQP_CONNECTION_NAME: "billing",
        RECONNECT_BASE_MS: "100",
        RECONNECT_MAX_MS: "5000",
        SHUTDOWN_GRACE_MS: "2500"
      })
      assert.strictEqual(Redacted.value(options.connection.url), "amqps://u:p@broker.example:5671/prod")
      assert.strictEqual(options.connection.heartbeatSeconds, 0)
      assert.strictEqual(options.connection.name, "billing")
      assert.strictEqual(options.prefetch, 50)
      assert.deepStrictEqual(options.shutdownGrace, Duration.millis(2500))
      assert.deepStrictEqual(options.reconnect?.base, Duration.millis(100))
      assert.deepStrictEqual(options.reconnect?.max, Duration.millis(5000))
    }))

  it.effect("keeps the URL secret: it prints as <redacted>, and logs show the address only", () =>
    Effect.gen(function*() {
      const options = yield* load({ AMQP_URL: "amqp://user:hunter2@rabbit:5672/jobs" })
      assert.strictEqual(String(options.connection.url), "<redacted>")
      assert.notInclude(JSON.stringify(options), "hunter2")
      assert.strictEqual(Connection.describeUrl(options.connection.url), "amqp://rabbit:5672/jobs")
    }))

  for (
    const [variable, value] of [
      ["AMQP_PREFETCH", "abc"],
      ["AMQP_PREFETCH", "70000"],
      ["AMQP_HEARTBEAT_SECONDS", "-5"],
      ["RECONNECT_BASE_MS", "0"],
      ["RECONNECT_MAX_MS", "1.5"],
      ["SHUTDOWN_GRACE_MS", "soon"],
      ["AMQP_URL", "http://user:hunter2@rabbit"],
      ["AMQP_URL", "not a url hunter2"],
      ["AMQP_URL", "amqp://user:hunter2@a:5672,http://user:hunter2@b"],
      ["MAX_BODY_BYTES", "0"],
      ["PUBLISH_TIMEOUT_MS", "never"],
      ["PUBLISH_MAX_WAITING", "-1"],
      ["AMQP_TLS_CA_FILE", "/nonexistent/ca.pem"]
    ] as const
  ) {
    it.effect(`${variable}=${value} fails with an error naming ${variable}`, () =>
      Effect.gen(function*() {
        const error = yield* Effect.flip(load({ [variable]: value }))
        assert.strictEqual(error._tag, "ConfigError")
        assert.include(error.message, variable)
        assert.notInclude(error.message, "hunter2")
      }))
  }

  it.effect("several broker addresses, TLS files, body and publish limits", () =>
    Effect.gen(function*() {
      const ca = fileURLToPath(new URL("fixtures/tls/ca.pem", import.meta.url))
      const options = yield* load({
        AMQP_URL: "amqps://u:p@node-a:5671, amqps://u:p@node-b:5671",
        AMQP_TLS_CA_FILE: ca,
        MAX_BODY_BYTES: "2048",
        PUBLISH_TIMEOUT_MS: "1500",
        PUBLISH_MAX_WAITING: "10"
      })
      assert.strictEqual(Connection.describeUrl(options.connection.url), "amqps://node-a:5671, amqps://node-b:5671")
      assert.strictEqual(Connection.addresses(options.connection.url).length, 2)
      assert.include(options.connection.tls?.ca?.toString() ?? "", "BEGIN CERTIFICATE")
      assert.isUndefined(options.connection.tls?.cert)
      assert.strictEqual(options.maxBodyBytes, 2048)
      assert.deepStrictEqual(options.publisher, { timeout: Duration.millis(1500), maxWaiting: 10 })
    }))

  it.effect("HTTP_HOST and HTTP_PORT", () =>
    Effect.gen(function*() {
      const read = (env: Record<string, string>) =>
        Effect.gen(function*() {
          return yield* Health.options
        }).pipe(Effect.provide(ConfigProvider.layer(ConfigProvider.fromUnknown(env))))
      assert.deepStrictEqual(yield* read({}), { host: "127.0.0.1", port: 9464 })
      assert.deepStrictEqual(yield* read({ HTTP_HOST: "0.0.0.0", HTTP_PORT: "8080" }), { host: "0.0.0.0", port: 8080 })
      const error = yield* Effect.flip(read({ HTTP_PORT: "eighty" }))
      assert.include(error.message, "HTTP_PORT")
    }))

  it.effect("RECONNECT_MAX_MS below RECONNECT_BASE_MS is an error", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(load({ RECONNECT_BASE_MS: "1000", RECONNECT_MAX_MS: "500" }))
      assert.include(error.message, "RECONNECT_MAX_MS")
    }))

  it.effect("LOG_FORMAT and LOG_LEVEL", () =>
    Effect.gen(function*() {
      const provide = (env: Record<string, string>) =>
        Effect.provide(ConfigProvider.layer(ConfigProvider.fromUnknown(env)))
      assert.deepStrictEqual(yield* Logging.load.pipe(provide({})), { format: "pretty", level: "Info" })
      assert.deepStrictEqual(
        yield* Logging.load.pipe(provide({ LOG_FORMAT: "json", LOG_LEVEL: "Debug" })),
        { format: "json", level: "Debug" }
      )
      const error = yield* Effect.flip(Logging.load.pipe(provide({ LOG_LEVEL: "loud" })))
      assert.include(error.message, "LOG_LEVEL")
      assert.include(error.message, "loud")
    }))

  it.effect("LOG_LEVEL and LOG_FORMAT in any case, with the usual aliases", () =>
    Effect.gen(function*() {
      const level = (value: string) =>
        Effect.map(
          Logging.load.pipe(Effect.provide(ConfigProvider.layer(ConfigProvider.fromUnknown({ LOG_LEVEL: value })))),
          (options) => options.level
        )
      const expected = {
        info: "Info",
        INFO: "Info",
        debug: "Debug",
        trace: "Trace",
        all: "All",
        warn: "Warn",
        warning: "Warn",
        WARNING: "Warn",
        error: "Error",
        err: "Error",
        fatal: "Fatal",
        critical: "Fatal",
        off: "None",
        none: "None",
        silent: "None",
        " Info ": "Info"
      } as const
      for (const [value, level_] of Object.entries(expected)) {
        assert.strictEqual(yield* level(value), level_, `LOG_LEVEL=${value}`)
      }
      const format = yield* Logging.load.pipe(
        Effect.provide(ConfigProvider.layer(ConfigProvider.fromUnknown({ LOG_FORMAT: "JSON" })))
      )
      assert.strictEqual(format.format, "json")
      const error = yield* Effect.flip(level("verbose!"))
      assert.include(error.message, "LOG_LEVEL")
    }))
})

describe("Worker.layerConfig", () => {
  const env = (vars: Record<string, string>) => ConfigProvider.layer(ConfigProvider.fromUnknown(vars))

  it.live("builds the worker from the environment, overrides on top", () =>
    Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("layerconfig")
      const handled: Array<string> = []
      const consumer = Consumer.make({
        queue,
        schema: Schema.Struct({ id: Schema.String }),
        handler: (task) => Effect.sync(() => handled.push(task.id))
      })
      yield* Effect.gen(function*() {
        const worker = yield* Worker.Worker
        yield* worker.awaitReady
        yield* admin.publishTasks(queue, ["e1"])
        yield* broker.eventually("handled", Effect.sync(() => handled), (h) => h.length === 1)
      }).pipe(
        Effect.provide(Worker.layerConfig([consumer], { shutdownGrace: "1 second" })),
        Effect.provide(env({ AMQP_URL: broker.URL, AMQP_PREFETCH: "5", AMQP_CONNECTION_NAME: broker.uniqueName("layer") }))
      )
    }))

  it.live("an environment variable that does not parse fails the layer, naming it", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(
        Effect.scoped(Layer.build(Worker.layerConfig<never>([]))).pipe(Effect.provide(env({ AMQP_PREFETCH: "0" })))
      )
      assert.include(error.message, "AMQP_PREFETCH")
    }))
})
