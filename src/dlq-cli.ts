#!/usr/bin/env node
/**
 * `effect-rabbitmq-dlq` (`npm run dlq -- ...`): the parked messages of a
 * consumer's dead-letter queue, for the people who run the worker. See
 * {@link DeadLetters} for what each command does; the broker comes from the
 * same environment as the worker's (`AMQP_URL`, `AMQP_TLS_*`).
 *
 *   effect-rabbitmq-dlq list <queue> [--limit N] [--json]
 *   effect-rabbitmq-dlq show <queue> <message-id> [--json]
 *   effect-rabbitmq-dlq replay <queue> (--all | --id <message-id> ...) [--limit N]
 *   effect-rabbitmq-dlq purge <queue> --yes
 *
 * `<queue>` is the consumer's queue (`tasks`) or its dead-letter queue
 * (`tasks.dlq`); `--help` prints the usage. Exit codes: 0 done, 1 the
 * broker refused or could not be reached, 2 the command line is wrong.
 *
 * @since 0.1.0
 */
import { NodeRuntime } from "@effect/platform-node"
import { Cause, Config, Data, Effect, Exit } from "effect"
import * as WorkerConfig from "./Config.ts"
import * as DeadLetters from "./DeadLetters.ts"

const usage = `usage:
  effect-rabbitmq-dlq list <queue> [--limit N] [--json]
  effect-rabbitmq-dlq show <queue> <message-id> [--json]
  effect-rabbitmq-dlq replay <queue> (--all | --id <message-id> ...) [--limit N]
  effect-rabbitmq-dlq purge <queue> --yes
<queue>: the consumer's queue (tasks) or its dead-letter queue (tasks.dlq); the broker: AMQP_URL`

class UsageError extends Data.TaggedError("UsageError")<{ readonly reason: string }> {}

interface Command {
  readonly name: string
  readonly queue: string
  readonly positional: ReadonlyArray<string>
  readonly ids: ReadonlyArray<string>
  readonly limit: number | undefined
  readonly all: boolean
  readonly json: boolean
  readonly yes: boolean
}

const parse = (argv: ReadonlyArray<string>): Command | UsageError => {
  const positional: Array<string> = []
  const ids: Array<string> = []
  let limit: number | undefined
  let all = false
  let json = false
  let yes = false
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    if (arg === "--all") all = true
    else if (arg === "--json") json = true
    else if (arg === "--yes") yes = true
    else if (arg === "--id" || arg === "--limit") {
      const value = argv[++i]
      if (value === undefined) return new UsageError({ reason: `${arg} needs a value` })
      if (arg === "--id") ids.push(value)
      else {
        limit = Number(value)
        if (!Number.isInteger(limit) || limit < 1) return new UsageError({ reason: `--limit must be a positive integer, got ${value}` })
      }
    } else if (arg.startsWith("--")) return new UsageError({ reason: `unknown option ${arg}` })
    else positional.push(arg)
  }
  const [name, queue, ...rest] = positional
  if (name === undefined || queue === undefined) return new UsageError({ reason: "a command and a queue are needed" })
  const command = { name, queue, positional: rest, ids, limit, all, json, yes }
  switch (name) {
    case "list":
      return rest.length === 0 ? command : new UsageError({ reason: `unexpected ${rest.join(" ")}` })
    case "show":
      return rest.length === 1 ? command : new UsageError({ reason: "show needs one message id" })
    case "replay":
      if (rest.length > 0) return new UsageError({ reason: `unexpected ${rest.join(" ")}` })
      if (all === (ids.length > 0)) return new UsageError({ reason: "replay needs either --all or --id <message-id> (not both)" })
      return command
    case "purge":
      return yes ? command : new UsageError({ reason: "purge deletes every parked message: add --yes" })
    default:
      return new UsageError({ reason: `unknown command ${name}` })
  }
}

const out = (line: string) => Effect.sync(() => process.stdout.write(`${line}\n`))

const cut = (text: string | undefined, max: number) =>
  text === undefined ? "" : text.length > max ? `${text.slice(0, max - 3)}...` : text

const run = (command: Command) =>
  Effect.gen(function*() {
    const { connection } = yield* WorkerConfig.workerOptions
    const dlq = DeadLetters.deadLetterQueueOf(command.queue)
    switch (command.name) {
      case "list": {
        const parked = yield* DeadLetters.list(connection, command.queue, command.limit ?? 100)
        if (command.json) {
          for (const message of parked) yield* out(JSON.stringify(message))
          return
        }
        yield* out(`${parked.length} parked message(s) in ${dlq}${command.limit !== undefined && parked.length === command.limit ? " (limit reached)" : ""}`)
        for (const m of parked) {
          yield* out(
            `${cut(m.messageId ?? "(no id)", 40).padEnd(40)}  ${cut(m.reason ?? "?", 24).padEnd(24)}  attempts ${
              m.attempts ?? "?"
            }  from ${m.originalExchange || "(default)"}/${m.originalRoutingKey ?? "?"}  ${cut(m.message, 80)}`
          )
        }
        return
      }
      case "show": {
        const message = yield* DeadLetters.show(connection, command.queue, command.positional[0]!)
        if (message === undefined) {
          return yield* Effect.fail(new DeadLetters.DeadLettersError({ operation: "show", reason: `no message ${command.positional[0]} in ${dlq}` }))
        }
        if (command.json) return yield* out(JSON.stringify(message))
        yield* out(`message ${message.messageId ?? "(no id)"} in ${dlq}`)
        yield* out(`reason:     ${message.reason ?? "?"}: ${message.message ?? ""}`)
        yield* out(`attempts:   ${message.attempts ?? "?"}`)
        yield* out(`route:      ${message.originalExchange || "(default)"}/${message.originalRoutingKey ?? "?"}`)
        yield* out(`properties: ${JSON.stringify(message.properties)}`)
        yield* out(`headers:    ${JSON.stringify(message.headers)}`)
        yield* out(`body:       ${message.body}`)
        return
      }
      case "replay": {
        let last = 0
        const progress = yield* DeadLetters.replay(connection, command.queue, {
          all: command.all,
          ...(command.ids.length > 0 ? { ids: command.ids } : {}),
          limit: command.limit,
          onProgress: (p) => {
            // Long replays say how far they got, about every second.
            if (Date.now() - last >= 1000) {
              last = Date.now()
              process.stderr.write(`replayed ${p.replayed}, left parked ${p.unroutable} (no route), looked at ${p.seen}\n`)
            }
          }
        })
        yield* out(
          `replayed ${progress.replayed} message(s) from ${dlq}` +
            (progress.unroutable > 0 ? `; ${progress.unroutable} left parked: no queue takes their original route` : "")
        )
        if (command.ids.length > progress.replayed + progress.unroutable) {
          yield* out(`not found: ${command.ids.length - progress.replayed - progress.unroutable} of the given ids`)
        }
        return
      }
      case "purge":
        return yield* out(`purged ${yield* DeadLetters.purge(connection, command.queue)} message(s) from ${dlq}`)
    }
  })

const main = Effect.suspend((): Effect.Effect<void, UsageError | Config.ConfigError | DeadLetters.DeadLettersError> => {
  const argv = process.argv.slice(2)
  // Asked for: the usage on stdout, and success.
  if (argv.some((arg) => arg === "--help" || arg === "-h") || argv[0] === "help") {
    return Effect.sync(() => process.stdout.write(`${usage}\n`))
  }
  const command = parse(argv)
  if (command instanceof UsageError) return Effect.fail(command)
  return Effect.asVoid(run(command))
})

NodeRuntime.runMain(main, {
  disableErrorReporting: true,
  teardown: (exit, onExit) => {
    if (Exit.isSuccess(exit)) return onExit(0)
    const error = Cause.squash(exit.cause)
    if (error instanceof UsageError) {
      process.stderr.write(`${error.reason}\n${usage}\n`)
      return onExit(2)
    }
    if (Cause.hasInterruptsOnly(exit.cause)) return onExit(130)
    const reason = error instanceof Config.ConfigError
      ? `invalid configuration: ${error.cause.message}`
      : error instanceof Error ? error.message : String(error)
    process.stderr.write(`${reason}\n`)
    onExit(1)
  }
})
