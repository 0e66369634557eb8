/**
 * Log output for the worker process: `LOG_FORMAT=json` prints one JSON object
 * per line (Effect's `Logger.consoleJson`: `message`, `level`, `timestamp`,
 * and `annotations` such as `queue` and `messageId`); `pretty` (the default)
 * prints human-readable lines. `LOG_LEVEL` (default `Info`) sets the minimum
 * level.
 *
 * @since 0.1.0
 */
import { Config, Effect, Layer, Logger, LogLevel, References } from "effect"
import { invalid } from "./Config.ts"

/**
 * @category models
 * @since 0.1.0
 */
export type LogFormat = "json" | "pretty"

/**
 * @category layers
 * @since 0.1.0
 */
export const layer = (options: { readonly format: LogFormat; readonly level: LogLevel.LogLevel }): Layer.Layer<never> =>
  Layer.mergeAll(
    Logger.layer([options.format === "json" ? Logger.consoleJson : Logger.consolePretty()]),
    Layer.succeed(References.MinimumLogLevel, options.level)
  )

const formats: ReadonlyMap<string, LogFormat> = new Map([["json", "json"], ["pretty", "pretty"]])

const levels: ReadonlyMap<string, LogLevel.LogLevel> = new Map([
  ...LogLevel.values.map((level) => [level.toLowerCase(), level] as const),
  ["warning", "Warn"],
  ["err", "Error"],
  ["critical", "Fatal"],
  ["off", "None"],
  ["silent", "None"]
])

/** A variable whose value is one of `choices`' keys, in any case; the error lists them. */
const oneOf = <A>(name: string, choices: ReadonlyMap<string, A>): Config.Config<A> =>
  Config.String(name).pipe(Config.mapEffect((raw) => {
    const value = choices.get(raw.trim().toLowerCase())
    return value === undefined
      ? Effect.fail(new Config.ConfigError(invalid(name, `expected one of ${[...choices.keys()].join(", ")} (any case), got "${raw}"`)))
      : Effect.succeed(value)
  }))

/**
 * `LOG_FORMAT` and `LOG_LEVEL` from the environment.
 *
 * @category config
 * @since 0.1.0
 */
export const options = Config.all({
  format: oneOf("LOG_FORMAT", formats).pipe(Config.withDefault<LogFormat>("pretty")),
  level: oneOf("LOG_LEVEL", levels).pipe(Config.withDefault<LogLevel.LogLevel>("Info"))
})

/**
 * @category utils
 * @since 0.1.0
 */
export const load: Effect.Effect<{ readonly format: LogFormat; readonly level: LogLevel.LogLevel }, Config.ConfigError> =
  Effect.gen(function*() {
    return yield* options
  })

/**
 * @category layers
 * @since 0.1.0
 */
export const layerConfig: Layer.Layer<never, Config.ConfigError> = Layer.unwrap(Effect.map(load, layer))
