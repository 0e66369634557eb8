/**
 * Log output for the worker process: `LOG_FORMAT=json` prints one JSON object
 * per line (Effect's `Logger.consoleJson`: `message`, `level`, `timestamp`,
 * and `annotations` such as `queue` and `messageId`); `pretty` (the default)
 * prints human-readable lines. `LOG_LEVEL` (default `Info`) sets the minimum
 * level.
 *
 * @since 0.1.0
 */
import { Config, Effect, Layer, Logger, type LogLevel, References } from "effect"

/**
 * @since 0.1.0
 */
export type LogFormat = "json" | "pretty"

/**
 * @since 0.1.0
 */
export const layer = (options: { readonly format: LogFormat; readonly level: LogLevel.LogLevel }): Layer.Layer<never> =>
  Layer.mergeAll(
    Logger.layer([options.format === "json" ? Logger.consoleJson : Logger.consolePretty()]),
    Layer.succeed(References.MinimumLogLevel, options.level)
  )

/**
 * `LOG_FORMAT` and `LOG_LEVEL` from the environment.
 *
 * @since 0.1.0
 */
export const options = Config.all({
  format: Config.Literals(["json", "pretty"], "LOG_FORMAT").pipe(Config.withDefault<LogFormat>("pretty")),
  level: Config.LogLevel("LOG_LEVEL").pipe(Config.withDefault<LogLevel.LogLevel>("Info"))
})

/**
 * @since 0.1.0
 */
export const load: Effect.Effect<{ readonly format: LogFormat; readonly level: LogLevel.LogLevel }, Config.ConfigError> =
  Effect.gen(function*() {
    return yield* options
  })

/**
 * @since 0.1.0
 */
export const layerConfig: Layer.Layer<never, Config.ConfigError> = Layer.unwrap(Effect.map(load, layer))
