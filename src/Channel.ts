/**
 * One AMQP channel as a scoped resource.
 *
 * A channel dies on its own when the broker refuses an operation on it (404
 * NOT_FOUND, 406 PRECONDITION_FAILED, ...) while the connection stays up, and
 * with its connection. `closed` tells which: {@link ChannelClosed} carries the
 * broker's reply code when the broker closed the channel, and none when the
 * connection went away. Every broker operation goes through `call`, which
 * turns amqplib's rejections into a typed {@link ChannelError}.
 *
 * @since 0.1.0
 */
import type * as amqp from "amqplib"
import { IllegalOperationError } from "amqplib"
import { Data, Deferred, Effect, Exit, type Scope } from "effect"
import type { Connection } from "./Connection.ts"
import * as ReplyCode from "./internal/replyCode.ts"

/**
 * A broker operation on the channel failed.
 *
 * @category errors
 * @since 0.1.0
 */
export class ChannelError extends Data.TaggedError("ChannelError")<{
  readonly operation: string
  /** The AMQP reply code when the broker refused the operation (e.g. 404, 406). */
  readonly code: number | undefined
  readonly reason: string
}> {
  /** Whether the same operation, asked again, can succeed (by its reply code). */
  get isRetryable(): boolean {
    return ReplyCode.isRetryable(this.code)
  }
  override get message() {
    return `${this.operation} failed: ${this.reason}`
  }
}

/**
 * The channel is closed.
 *
 * @category errors
 * @since 0.1.0
 */
export class ChannelClosed extends Data.TaggedError("ChannelClosed")<{
  /** The broker's reply code when the broker closed the channel; undefined when the connection went away. */
  readonly code: number | undefined
  readonly reason: string
}> {
  /** A new channel helps: whatever closed this one was about this channel's requests, or the connection. */
  readonly isRetryable = true
  override get message() {
    return `channel closed: ${this.reason}`
  }
}

/**
 * amqplib's types, named once here: the rest of the library reaches amqplib
 * only through this module and {@link Connection}.
 *
 * @category models
 * @since 0.1.0
 */
export type RawChannel = amqp.Channel
/**
 * @category models
 * @since 0.1.0
 */
export type RawConfirmChannel = amqp.ConfirmChannel
/**
 * A message the broker pushed to a consumer (basic.deliver).
 *
 * @category models
 * @since 0.1.0
 */
export type Delivery = amqp.ConsumeMessage
/**
 * A message fetched with basic.get.
 *
 * @category models
 * @since 0.1.0
 */
export type Fetched = amqp.GetMessage
/**
 * A message the broker returned (basic.return), or any message amqplib hands over.
 *
 * @category models
 * @since 0.1.0
 */
export type RawMessage = amqp.Message
/**
 * @category models
 * @since 0.1.0
 */
export type Headers = amqp.MessagePropertyHeaders
/**
 * amqplib's options of one publish (its properties).
 *
 * @category models
 * @since 0.1.0
 */
export type PublishOptions = amqp.Options.Publish

/**
 * @category models
 * @since 0.1.0
 */
export interface ChannelOptions {
  /** Unacknowledged deliveries the broker may send at once (basic.qos). */
  readonly prefetch?: number | undefined
}

/**
 * @category models
 * @since 0.1.0
 */
export interface Channel<C extends RawChannel = RawChannel> {
  /** Fails with {@link ChannelClosed} once the channel is closed; never succeeds. */
  readonly closed: Effect.Effect<never, ChannelClosed>
  readonly isOpen: () => boolean
  /** Why the broker closed the channel (its reply code and text), once it did. */
  readonly serverError: () => { readonly code: number | undefined; readonly reason: string } | undefined
  /** Runs one amqplib operation on the channel. */
  readonly call: <A>(operation: string, f: (channel: C) => Promise<A>) => Effect.Effect<A, ChannelError>
  /** The amqplib channel, for synchronous calls (ack, publish) that must not wait for a fiber. */
  readonly raw: C
}

/**
 * For a loop that reopens a channel: a channel that ended with its
 * connection needs no new channel (the session ends and the next session
 * opens one), so wait for that instead of failing. A channel closed by the
 * broker carries a reply code; one closed with its connection does not, and
 * its `close` event comes before the connection's.
 *
 * @category utils
 * @since 0.1.0
 */
export const unlessConnectionLost = (connection: Connection) => <E>(error: E): Effect.Effect<never, E> =>
  (error instanceof ChannelClosed && error.code === undefined) || !connection.isOpen()
    ? Effect.never
    : Effect.fail(error)

/**
 * Whether amqplib refused an operation because the channel (or its
 * connection) is closed, rather than because of what was asked of it.
 *
 * @category guards
 * @since 0.1.0
 */
export const isClosedError = (error: unknown): boolean => error instanceof IllegalOperationError

/**
 * Whether a confirm callback's error is the broker's basic.nack (amqplib
 * reports a nack and a closed channel alike, as an Error; only the text differs).
 *
 * @category guards
 * @since 0.1.0
 */
export const isNackError = (error: unknown): boolean => error instanceof Error && error.message === "message nacked"

const replyCode = (error: unknown): number | undefined => {
  if (typeof error === "object" && error !== null && "code" in error && typeof error.code === "number") {
    return error.code
  }
  return undefined
}

const errorText = (error: unknown): string => error instanceof Error ? error.message : String(error)

/**
 * Opens a channel on `connection`, closed when the scope closes.
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = (
  connection: Connection,
  options: ChannelOptions = {}
): Effect.Effect<Channel, ChannelError, Scope.Scope> => open(() => connection.model.createChannel(), options)

/**
 * Opens a channel in confirm mode (the broker acks or nacks every publish),
 * closed when the scope closes.
 *
 * @category constructors
 * @since 0.1.0
 */
export const makeConfirm = (
  connection: Connection,
  options: ChannelOptions = {}
): Effect.Effect<Channel<RawConfirmChannel>, ChannelError, Scope.Scope> =>
  open(() => connection.model.createConfirmChannel(), options)

const open = <C extends RawChannel>(
  create: () => Promise<C>,
  options: ChannelOptions
): Effect.Effect<Channel<C>, ChannelError, Scope.Scope> =>
  Effect.gen(function*() {
    const closed = yield* Deferred.make<never, ChannelClosed>()
    let alive = false
    let serverError: { code: number | undefined; reason: string } | undefined

    const attach = (channel: C): C => {
      alive = true
      // The broker closes a channel with an error frame: amqplib emits
      // `error` (with the reply code), then `close`.
      channel.on("error", (error: Error) => {
        serverError = { code: replyCode(error), reason: error.message }
      })
      channel.on("close", () => {
        alive = false
        Deferred.doneUnsafe(
          closed,
          Exit.fail(
            new ChannelClosed(serverError ?? { code: undefined, reason: "connection closed" })
          )
        )
      })
      channel.on("handler-error", () => {})
      return channel
    }

    const raw = yield* Effect.acquireRelease(
      Effect.tryPromise({
        try: () => create().then(attach),
        catch: (error) => new ChannelError({ operation: "open channel", code: replyCode(error), reason: errorText(error) })
      }),
      (channel) => alive ? close(channel, closed) : Effect.void
    )

    const call = <A>(operation: string, f: (channel: C) => Promise<A>) =>
      Effect.tryPromise({
        try: () => f(raw),
        catch: (error) => new ChannelError({ operation, code: replyCode(error), reason: errorText(error) })
      })

    if (options.prefetch !== undefined) {
      const prefetch = options.prefetch
      yield* call("basic.qos", (channel) => channel.prefetch(prefetch))
    }

    return {
      closed: Deferred.await(closed),
      isOpen: () => alive,
      serverError: () => serverError,
      call,
      raw
    } satisfies Channel<C>
  })

/**
 * Done when the close is confirmed, or when the channel closes anyway: with
 * a connection going down, amqplib may close this channel only after the
 * finalizer began, and would then never answer the close.
 */
const close = (channel: RawChannel, closed: Deferred.Deferred<never, ChannelClosed>): Effect.Effect<void> =>
  Effect.raceFirst(
    Effect.ignore(Effect.tryPromise(() => channel.close())),
    Effect.ignore(Deferred.await(closed))
  ).pipe(Effect.timeout("5 seconds"), Effect.ignore)
