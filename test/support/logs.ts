/**
 * Captures the log lines of an in-process worker, so tests can assert what an
 * operator would read (reasons, message ids, reconnect attempts).
 */
import { Layer, Logger, References } from "effect"

export interface LogLine {
  readonly level: string
  readonly message: string
  readonly annotations: Readonly<Record<string, unknown>>
}

export const capture = () => {
  const lines: Array<LogLine> = []
  const logger = Logger.make((options) => {
    const message = Array.isArray(options.message) ? options.message.map(String).join(" ") : String(options.message)
    lines.push({
      level: options.logLevel,
      message,
      annotations: { ...options.fiber.getRef(References.CurrentLogAnnotations) }
    })
  })
  const layer = Layer.mergeAll(
    // Also printed: vitest shows them for failed tests only.
    Logger.layer([logger, Logger.consolePretty({ colors: false })]),
    Layer.succeed(References.MinimumLogLevel, "Debug")
  )
  return {
    lines,
    layer,
    /** The capturing logger alone, to combine with others. */
    logger,
    matching: (pattern: RegExp) => lines.filter((line) => pattern.test(line.message))
  }
}
