/**
 * Publisher confirms on one confirm channel: each publish is sent and then
 * waits for the broker's ack or nack, its return (a mandatory message no
 * queue took), the channel's end, or its deadline, and ends as the publish's
 * own outcome: success, or its typed {@link PublishError}.
 *
 * Kept cheap because every result a worker publishes comes through here: a
 * publish costs one record in a queue ordered by sending, no timer, no map
 * entry and no continuation of its own (the waiting fiber is resumed with
 * the publish's final `Exit`). One watchdog per channel times out the
 * publishes whose deadline has passed. A return is matched to the oldest
 * unconfirmed mandatory publish with the same exchange, routing key and
 * message id: the broker routes (and returns) a channel's publishes in
 * order, and sends a return before the confirm of its message, so message
 * ids need not be unique.
 *
 * @internal
 */
import { Duration, Effect, Exit } from "effect"
import * as Channel from "../Channel.ts"
import type * as Metrics from "../Metrics.ts"
import {
  type PublishError,
  PublishNacked,
  PublishRefused,
  PublishTimeout,
  PublishUnconfirmed,
  PublishUnroutable
} from "../PublishError.ts"

/** A message ready for amqplib: its body as bytes, and every property, `mandatory` included. */
export interface Outgoing {
  readonly exchange: string
  readonly routingKey: string
  readonly content: Buffer
  readonly options: Channel.PublishOptions & { readonly messageId: string; readonly mandatory: boolean }
}

/**
 * What a publish does when this channel closed before anything of it went
 * out (so trying the next channel cannot duplicate it). One function for
 * all publishes, so that a publish costs no closure for this rare end.
 */
export type Retry = (message: Outgoing, deadline: number) => Effect.Effect<void, PublishError>

/**
 * One sent publish until it ends: a class, not a literal, for the reason
 * `internal/send.ts` gives for messages. It keeps what its ending needs of
 * the message (where it went, its id), not the message: its body and
 * properties are garbage once sent, instead of living (and being promoted
 * to the old generation) until the confirm.
 */
class Pending {
  readonly exchange: string
  readonly routingKey: string
  readonly messageId: string
  readonly mandatory: boolean
  /** The body's size in bytes: whether the broker's size limit refused this publish. */
  readonly size: number
  readonly deadline: number
  readonly resume: (exit: Exit.Exit<void, PublishError>) => void
  returned = false
  done = false
  constructor(message: Outgoing, deadline: number, resume: (exit: Exit.Exit<void, PublishError>) => void) {
    this.exchange = message.exchange
    this.routingKey = message.routingKey
    this.messageId = message.options.messageId
    this.mandatory = message.options.mandatory
    this.size = message.content.length
    this.deadline = deadline
    this.resume = resume
  }
}

export interface Confirms {
  /** Sends `message` and waits for its confirm, until `deadline` (epoch ms). */
  readonly send: (message: Outgoing, deadline: number, retry: Retry) => Effect.Effect<void, PublishError>
  /** Sent and not confirmed yet. */
  readonly unconfirmed: () => number
}

export interface ConfirmsOptions {
  /** The publish timeout (`PublishTimeout` says it); also sets how often the watchdog looks. */
  readonly timeout: Duration.Duration
  /** Called when the socket's buffer is full (the caller waits for `drain`). */
  readonly onFull: () => void
  /** Counts each publish's end; an interrupted publish is not counted. */
  readonly metrics: ReturnType<typeof Metrics.forPublisher>
}

/** Confirm tracking for `channel`, until the scope closes. */
export const make = (channel: Channel.Channel<Channel.RawConfirmChannel>, options: ConfirmsOptions) =>
  Effect.gen(function*() {
    const tracker = new Tracker(channel, options)
    channel.raw.on("return", tracker.onReturn)
    // One timer for all: a publish overruns its deadline by at most a tenth of the timeout (at most 1 s).
    const every = Math.max(10, Math.min(1000, Duration.toMillis(options.timeout) / 10))
    yield* Effect.acquireRelease(
      Effect.sync(() => setInterval(tracker.expire, every).unref()),
      (timer) => Effect.sync(() => clearInterval(timer))
    )
    return tracker satisfies Confirms
  })

class Tracker implements Confirms {
  private readonly channel: Channel.Channel<Channel.RawConfirmChannel>
  private readonly options: ConfirmsOptions
  /**
   * In sending order; those before `head` are settled, and their places
   * emptied: a settled publish would otherwise keep its fiber (through its
   * `resume`) alive until the array is cut, and with publishes always in
   * flight the array is cut only every thousand or so.
   */
  private readonly pending: Array<Pending | undefined> = []
  private head = 0
  private count = 0

  constructor(channel: Channel.Channel<Channel.RawConfirmChannel>, options: ConfirmsOptions) {
    this.channel = channel
    this.options = options
  }

  readonly unconfirmed = (): number => this.count

  readonly send = (message: Outgoing, deadline: number, retry: Retry): Effect.Effect<void, PublishError> =>
    Effect.callback<void, PublishError>((resume) => this.publish(message, deadline, retry, resume))

  /**
   * Sends `message`; returns what an interruption runs. Makes no closure
   * itself: the ones that wait for the confirm are made by `onConfirm` and
   * `onInterrupt`, so that they hold the publish's record, and not, through
   * this call's scope, the message it no longer needs.
   */
  private publish(
    message: Outgoing,
    deadline: number,
    retry: Retry,
    resume: (exit: Effect.Effect<void, PublishError>) => void
  ): Effect.Effect<void> | undefined {
    const problem = headersProblem(message.options.headers)
    if (problem !== undefined) {
      resume(this.failed(new PublishRefused({ messageId: message.options.messageId, reason: problem })))
      return undefined
    }
    const entry = new Pending(message, deadline, resume)
    let writable: boolean
    try {
      writable = this.channel.raw.publish(message.exchange, message.routingKey, message.content, message.options, this.onConfirm(entry))
    } catch (error) {
      // Nothing went out: amqplib encodes the whole frame before writing
      // it, and registers the confirm only after that.
      resume(
        Channel.isClosedError(error)
          // The channel closed first: the next channel cannot duplicate it.
          ? retry(message, deadline)
          : this.failed(
            new PublishRefused({
              messageId: message.options.messageId,
              reason: error instanceof Error ? error.message : String(error)
            })
          )
      )
      return undefined
    }
    this.count++
    this.pending.push(entry)
    if (!writable) this.options.onFull()
    return this.onInterrupt(entry)
  }

  private onConfirm(entry: Pending): (error: unknown) => void {
    return (error) => this.confirmed(entry, error)
  }

  /** Interrupted: its result no longer matters (its confirm, when it comes, is dropped). */
  private onInterrupt(entry: Pending): Effect.Effect<void> {
    return Effect.sync(() => {
      if (!entry.done) this.settle(entry, undefined)
    })
  }

  /** A returned message marks the oldest unconfirmed mandatory publish it matches. */
  readonly onReturn = (returned: Channel.RawMessage): void => {
    const { exchange, routingKey } = returned.fields
    const messageId: unknown = returned.properties.messageId
    for (let i = this.head; i < this.pending.length; i++) {
      const entry = this.pending[i]!
      if (
        !entry.done && !entry.returned && entry.mandatory && entry.messageId === messageId &&
        entry.exchange === exchange && entry.routingKey === routingKey
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
      if (!entry.done && entry.deadline <= now) {
        this.settle(
          entry,
          this.failed(new PublishTimeout({ messageId: entry.messageId, timeout: this.options.timeout, sent: true }))
        )
      }
    }
  }

  /** The end of a confirm: amqplib calls back with nothing (ack), or an error for a nack or a closed channel. */
  private confirmed(entry: Pending, error: unknown): void {
    if (entry.done) return
    this.settle(entry, this.outcome(entry, error))
  }

  private outcome(entry: Pending, error: unknown): Exit.Exit<void, PublishError> {
    const { exchange, messageId, routingKey } = entry
    if (error === null || error === undefined) {
      if (entry.returned) return this.failed(new PublishUnroutable({ messageId, exchange, routingKey }))
      this.options.metrics.confirmed()
      return Exit.void
    }
    if (Channel.isNackError(error)) return this.failed(new PublishNacked({ messageId }))
    // Say why when the broker closed the channel (e.g. 404, no such exchange).
    const reason = error instanceof Error ? error.message : String(error)
    const why = this.channel.serverError()
    if (why === undefined) return this.failed(new PublishUnconfirmed({ messageId, reason }))
    const refused = refusedBy(why.reason)
    // Another publish's doing: this one, sent again, can go through.
    if (refused !== undefined && !refused(entry)) {
      return this.failed(new PublishUnconfirmed({ messageId, reason: `${reason}: ${why.reason} (another publish refused, not this one)` }))
    }
    return this.failed(new PublishUnconfirmed({ messageId, reason: `${reason}: ${why.reason}`, code: why.code }))
  }

  private failed(error: PublishError): Exit.Exit<never, PublishError> {
    this.options.metrics.failed(error._tag)
    return Exit.fail(error)
  }

  /** Ends `entry`, resuming its publish with `exit` (none when it was interrupted). */
  private settle(entry: Pending, exit: Exit.Exit<void, PublishError> | undefined): void {
    entry.done = true
    this.count--
    // Confirms come (mostly) in sending order: the settled head moves on.
    const pending = this.pending
    while (this.head < pending.length && pending[this.head]!.done) pending[this.head++] = undefined
    if (this.head === pending.length) {
      pending.length = 0
      this.head = 0
    } else if (this.head > 1024 && this.head * 2 > pending.length) {
      pending.splice(0, this.head)
      this.head = 0
    }
    if (exit !== undefined) entry.resume(exit)
  }
}

/**
 * When the broker closes the channel because of one publish, every publish
 * on it in flight ends with that close, and its reply code says the
 * request cannot succeed: for the others it is not so, they were caught in
 * it. From the broker's words, which publishes it refused: one to an
 * exchange it does not have or refuses (404, 403: "no exchange 'x' in vhost
 * '/'", "access to exchange 'x' in vhost '/' refused ..."), or one whose
 * body is over its size limit (406: "message size 200 is larger than
 * configured max size 100"). Undefined when the words do not say: then
 * every publish keeps the code, so that a publish the broker refuses is not
 * sent again and again (a handler's message would be requeued forever).
 */
export const refusedBy = (
  reason: string
): ((publish: { readonly exchange: string; readonly size: number }) => boolean) | undefined => {
  const exchange = /exchange '((?:[^']|'')*)' in vhost/.exec(reason)?.[1]
  if (exchange !== undefined) {
    // RabbitMQ doubles a quote inside a quoted name.
    const name = exchange.replaceAll("''", "'")
    return (publish) => publish.exchange === name
  }
  const limit = /message size \d+ is larger than (?:configured )?max size (\d+)/.exec(reason)?.[1]
  if (limit !== undefined) {
    const max = Number(limit)
    return (publish) => publish.size > max
  }
  return undefined
}

/**
 * What amqplib would send but the broker cannot take, or would send other
 * than given. RabbitMQ answers a non-finite number anywhere in the headers
 * (`Infinity`) by closing the whole connection (541 INTERNAL_ERROR), which
 * would redeliver every message in flight and, for a handler that publishes
 * it each time, loop. amqplib sends any other object as a table of its own
 * enumerable fields, so a `Date`, a `Map` or a typed array would arrive as an
 * empty table (or one of indices): their data lost without a word. Also
 * refuses nesting too deep to encode.
 */
const headersProblem = (headers: unknown): string | undefined => {
  if (headers === undefined || headers === null) return undefined
  if (typeof headers !== "object") return `headers are a ${typeof headers}, not an object`
  const lossy = lossyKind(headers)
  if (lossy !== undefined) return `headers are a ${lossy}, not a plain object: AMQP would carry none of it`
  for (const key in headers) {
    const problem = valueProblem((headers as Record<string, unknown>)[key], key, 1)
    if (problem !== undefined) return problem
  }
  return undefined
}

const valueProblem = (value: unknown, path: string, depth: number): string | undefined => {
  if (typeof value === "number") return Number.isFinite(value) ? undefined : `header ${path} is ${value}`
  if (typeof value !== "object" || value === null || Buffer.isBuffer(value)) return undefined
  const lossy = lossyKind(value)
  if (lossy !== undefined) {
    return `header ${path} is a ${lossy}, which AMQP would carry as a table of its own fields (none of its data): ` +
      `send a string, a number or a plain object`
  }
  if (depth > 32) return `header ${path} is nested more than 32 levels deep`
  // amqplib's typed value, e.g. { "!": "timestamp", value: seconds }: only its number matters here.
  if (Object.hasOwn(value, "!")) return valueProblem((value as { readonly value?: unknown }).value, path, depth + 1)
  for (const [key, inner] of Object.entries(value)) {
    const problem = valueProblem(inner, `${path}.${key}`, depth + 1)
    if (problem !== undefined) return problem
  }
  return undefined
}

/** The built-in objects whose data is not in their own enumerable fields (all amqplib encodes of an object). */
const lossyKind = (value: object): string | undefined => {
  if (value instanceof Date) return "Date"
  if (value instanceof Map) return "Map"
  if (value instanceof Set) return "Set"
  if (value instanceof RegExp) return "RegExp"
  if (value instanceof Error) return "Error"
  if (value instanceof Promise) return "Promise"
  if (value instanceof ArrayBuffer || value instanceof SharedArrayBuffer) return "ArrayBuffer"
  if (ArrayBuffer.isView(value) && !Buffer.isBuffer(value)) return value.constructor.name
  return undefined
}
