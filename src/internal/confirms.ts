/**
 * Publisher confirms on one confirm channel: each publish is sent and then
 * waits for the broker's ack or nack, its return (a mandatory message no
 * queue took), the channel's end, or its deadline.
 *
 * Kept cheap because every result a worker publishes comes through here: a
 * publish costs one record in a queue ordered by sending, no timer and no map
 * entry of its own. One watchdog per channel times out the publishes whose
 * deadline has passed. A return is matched to the oldest unconfirmed
 * mandatory publish with the same exchange, routing key and message id: the
 * broker routes (and returns) a channel's publishes in order, and sends a
 * return before the confirm of its message, so message ids need not be unique.
 *
 * @internal
 */
import { Effect, Exit } from "effect"
import * as Channel from "../Channel.ts"

/** A message ready for amqplib: its body as bytes, and every property, `mandatory` included. */
export interface Outgoing {
  readonly exchange: string
  readonly routingKey: string
  readonly content: Buffer
  readonly options: Channel.PublishOptions & { readonly messageId: string; readonly mandatory: boolean }
}

/** How one try to send a message ended. */
export type SendResult =
  | { readonly _tag: "Confirmed" }
  | { readonly _tag: "NotSent" }
  | { readonly _tag: "Refused"; readonly reason: string }
  | { readonly _tag: "Returned" }
  | { readonly _tag: "Nacked" }
  | { readonly _tag: "TimedOut" }
  | { readonly _tag: "Closed"; readonly reason: string }

const confirmedResult: SendResult = { _tag: "Confirmed" }
/** The common end as a ready `Exit`: resuming with it allocates nothing. */
const confirmedExit = Exit.succeed(confirmedResult)
const notSent: SendResult = { _tag: "NotSent" }
const returnedResult: SendResult = { _tag: "Returned" }
const nackedResult: SendResult = { _tag: "Nacked" }
const timedOut: SendResult = { _tag: "TimedOut" }

/** One sent publish until it ends: a class, not a literal, for the reason `internal/send.ts` gives for messages. */
class Pending {
  readonly message: Outgoing
  readonly deadline: number
  readonly resume: (exit: Exit.Exit<SendResult>) => void
  returned = false
  done = false
  constructor(message: Outgoing, deadline: number, resume: (exit: Exit.Exit<SendResult>) => void) {
    this.message = message
    this.deadline = deadline
    this.resume = resume
  }
}

export interface Confirms {
  /** Sends `message` and waits for how it ends, until `deadline` (epoch ms). */
  readonly send: (message: Outgoing, deadline: number) => Effect.Effect<SendResult>
  /** Sent and not confirmed yet. */
  readonly unconfirmed: () => number
}

/**
 * Confirm tracking for `channel`, until the scope closes. `onFull` is called
 * when the socket's buffer is full (the caller waits for `drain`);
 * `timeoutMillis` sets how often the watchdog looks.
 */
export const make = (
  channel: Channel.Channel<Channel.RawConfirmChannel>,
  options: { readonly timeoutMillis: number; readonly onFull: () => void }
) =>
  Effect.gen(function*() {
    const tracker = new Tracker(channel.raw, options.onFull)
    channel.raw.on("return", tracker.onReturn)
    // One timer for all: a publish overruns its deadline by at most a tenth of the timeout (at most 1 s).
    const every = Math.max(10, Math.min(1000, options.timeoutMillis / 10))
    yield* Effect.acquireRelease(
      Effect.sync(() => setInterval(tracker.expire, every).unref()),
      (timer) => Effect.sync(() => clearInterval(timer))
    )
    return tracker satisfies Confirms
  })

class Tracker implements Confirms {
  private readonly raw: Channel.RawConfirmChannel
  private readonly onFull: () => void
  /** In sending order; those before `head` are settled. */
  private readonly pending: Array<Pending> = []
  private head = 0
  private count = 0

  constructor(raw: Channel.RawConfirmChannel, onFull: () => void) {
    this.raw = raw
    this.onFull = onFull
  }

  readonly unconfirmed = (): number => this.count

  readonly send = (message: Outgoing, deadline: number): Effect.Effect<SendResult> =>
    Effect.callback<SendResult>((resume) => {
      const problem = headersProblem(message.options.headers)
      if (problem !== undefined) return resume(Effect.succeed({ _tag: "Refused", reason: problem }))
      const entry = new Pending(message, deadline, resume)
      let writable: boolean
      try {
        writable = this.raw.publish(
          message.exchange,
          message.routingKey,
          message.content,
          message.options,
          (error: unknown) => this.settle(entry, confirmed(error, entry.returned))
        )
      } catch (error) {
        // Nothing went out: amqplib encodes the whole frame before writing
        // it, and registers the confirm only after that.
        return resume(Effect.succeed(notSentResult(error)))
      }
      this.count++
      this.pending.push(entry)
      if (!writable) this.onFull()
      // Interrupted: its result no longer matters (its confirm, when it comes, is dropped).
      return Effect.sync(() => {
        if (!entry.done) this.settle(entry, timedOut)
      })
    })

  /** A returned message marks the oldest unconfirmed mandatory publish it matches. */
  readonly onReturn = (returned: Channel.RawMessage): void => {
    const { exchange, routingKey } = returned.fields
    const messageId: unknown = returned.properties.messageId
    for (let i = this.head; i < this.pending.length; i++) {
      const entry = this.pending[i]!
      const m = entry.message
      if (
        !entry.done && !entry.returned && m.options.mandatory && m.options.messageId === messageId &&
        m.exchange === exchange && m.routingKey === routingKey
      ) {
        entry.returned = true
        return
      }
    }
  }

  /** The watchdog: publishes past their deadline end as timed out. */
  readonly expire = (): void => {
    const now = Date.now()
    for (let i = this.head; i < this.pending.length; i++) {
      const entry = this.pending[i]!
      if (!entry.done && entry.deadline <= now) this.settle(entry, timedOut)
    }
  }

  private settle(entry: Pending, result: SendResult): void {
    if (entry.done) return
    entry.done = true
    this.count--
    // Confirms come (mostly) in sending order: the settled head moves on.
    const pending = this.pending
    while (this.head < pending.length && pending[this.head]!.done) this.head++
    if (this.head === pending.length) {
      pending.length = 0
      this.head = 0
    } else if (this.head > 1024 && this.head * 2 > pending.length) {
      pending.splice(0, this.head)
      this.head = 0
    }
    entry.resume(result === confirmedResult ? confirmedExit : Exit.succeed(result))
  }
}

/** A publish amqplib refused synchronously: nothing went out. */
const notSentResult = (error: unknown): SendResult =>
  Channel.isClosedError(error)
    // The channel closed first: the next channel cannot duplicate it.
    ? notSent
    : { _tag: "Refused", reason: error instanceof Error ? error.message : String(error) }

/** The end of a confirm: amqplib calls back with nothing (ack), or an error for a nack or a closed channel. */
const confirmed = (error: unknown, returned: boolean): SendResult => {
  if (error === null || error === undefined) return returned ? returnedResult : confirmedResult
  return Channel.isNackError(error)
    ? nackedResult
    : { _tag: "Closed", reason: error instanceof Error ? error.message : String(error) }
}

/**
 * What amqplib would send but the broker cannot take: a non-finite number
 * anywhere in the headers. RabbitMQ answers `Infinity` by closing the whole
 * connection (541 INTERNAL_ERROR), which would redeliver every message in
 * flight and, for a handler that publishes it each time, loop. Also refuses
 * nesting too deep to encode.
 */
const headersProblem = (headers: unknown): string | undefined => {
  if (typeof headers !== "object" || headers === null) return undefined
  for (const key in headers) {
    const problem = valueProblem((headers as Record<string, unknown>)[key], key, 1)
    if (problem !== undefined) return problem
  }
  return undefined
}

const valueProblem = (value: unknown, path: string, depth: number): string | undefined => {
  if (typeof value === "number") return Number.isFinite(value) ? undefined : `header ${path} is ${value}`
  if (typeof value !== "object" || value === null || Buffer.isBuffer(value) || value instanceof Date) return undefined
  if (depth > 32) return `header ${path} is nested more than 32 levels deep`
  for (const [key, inner] of Object.entries(value)) {
    const problem = valueProblem(inner, `${path}.${key}`, depth + 1)
    if (problem !== undefined) return problem
  }
  return undefined
}
