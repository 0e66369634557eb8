/**
 * The publisher's outlet: the confirm channel it publishes on, while a
 * session has one open, and the waiting for a usable one. A channel is
 * usable when it is open, the broker has not blocked the connection (a
 * memory or disk alarm) and the socket's write buffer has drained; publishes
 * wait for that rather than pile up in memory, bounded by their deadline and
 * by `maxWaiting`. `attach` keeps a channel open on a session's connection,
 * opening a new one after the broker closed it.
 *
 * @internal
 */
import { Cause, Duration, Effect, Latch } from "effect"
import * as Channel from "../Channel.ts"
import type { Connection } from "../Connection.ts"
import * as Outcome from "../Outcome.ts"
import { PublishBufferFull, PublishTimeout } from "../PublishError.ts"
import * as Reconnect from "../Reconnect.ts"
import * as Confirms from "./confirms.ts"

/** A session's confirm channel, while it is open. */
export interface Live {
  readonly channel: Channel.Channel<Channel.RawConfirmChannel>
  readonly confirms: Confirms.Confirms
  readonly unblocked: Latch.Latch
  readonly drained: Latch.Latch
}

export interface AttachSettings {
  readonly backoff: Reconnect.BackoffOptions
  /** The publisher has a channel. */
  readonly onReady: Effect.Effect<void>
  /** The publisher lost its channel and is opening a new one. */
  readonly onDown: Effect.Effect<void>
}

export interface Outlet {
  /** The channel now, if it can take a message at once (the usual case: no fiber step). */
  readonly usableNow: () => Live | undefined
  /** Waits, for as long as it takes, until a channel can take a message. */
  readonly awaitUsable: Effect.Effect<void>
  /** A usable channel, waiting for one until `deadline` (one deadline for the whole publish). */
  readonly ready: (messageId: string, deadline: number) => Effect.Effect<Live, PublishTimeout | PublishBufferFull>
  /** Keeps a channel open on `connection` until interrupted. */
  readonly attach: (connection: Connection, settings: AttachSettings) => Effect.Effect<never>
  /** Publishes waiting for a channel; messages sent and not yet confirmed. */
  readonly stats: () => { readonly waiting: number; readonly unconfirmed: number }
}

export const make = (options: {
  readonly timeout: Duration.Duration
  readonly maxWaiting: number
}): Effect.Effect<Outlet> =>
  Effect.gen(function*() {
    const timeoutMillis = Duration.toMillis(options.timeout)
    let live: Live | undefined
    let waiting = 0
    const available = yield* Latch.make(false)

    const usable = (current: Live | undefined): current is Live =>
      current !== undefined && current.unblocked.isOpen() && current.drained.isOpen()

    const awaitUsable: Effect.Effect<void> = Effect.suspend(() =>
      usable(live)
        ? Effect.void
        : available.await.pipe(
          Effect.andThen(Effect.suspend(() => live === undefined ? Effect.void : live.unblocked.await)),
          Effect.andThen(Effect.suspend(() => live === undefined ? Effect.void : live.drained.await)),
          Effect.andThen(Effect.suspend(() => awaitUsable))
        )
    )

    const ready = (messageId: string, deadline: number): Effect.Effect<Live, PublishTimeout | PublishBufferFull> =>
      Effect.suspend(() => {
        const current = live
        if (usable(current)) return Effect.succeed(current)
        if (waiting >= options.maxWaiting) return Effect.fail(new PublishBufferFull({ messageId, maxWaiting: options.maxWaiting }))
        waiting++
        return awaitUsable.pipe(
          Effect.timeoutOrElse({
            duration: Math.max(0, deadline - Date.now()),
            orElse: () => Effect.fail(new PublishTimeout({ messageId, timeout: options.timeout, sent: false }))
          }),
          Effect.ensuring(Effect.sync(() => {
            waiting--
          })),
          Effect.andThen(Effect.suspend(() => ready(messageId, deadline)))
        )
      })

    /** One channel's lifetime: open, publish on it until it closes. */
    const onChannel = (connection: Connection, settings: AttachSettings, isReady: Effect.Effect<void>) =>
      Effect.gen(function*() {
        const channel = yield* Channel.makeConfirm(connection)
        const drained = Latch.makeUnsafe(true)
        channel.raw.on("drain", () => drained.openUnsafe())
        const confirms = yield* Confirms.make(channel, { timeoutMillis, onFull: () => drained.closeUnsafe() })
        const current: Live = { channel, confirms, unblocked: connection.unblocked, drained }
        yield* Effect.acquireRelease(
          Effect.sync(() => {
            live = current
            available.openUnsafe()
          }),
          () =>
            Effect.sync(() => {
              live = undefined
              available.closeUnsafe()
              // Wake the waiters of this channel's latches: they wait for the next channel.
              drained.openUnsafe()
            })
        )
        yield* isReady
        yield* settings.onReady
        return yield* channel.closed
      }).pipe(
        Effect.scoped,
        Effect.catch(Channel.unlessConnectionLost(connection))
      )

    const attach = (connection: Connection, settings: AttachSettings): Effect.Effect<never> =>
      Reconnect.loop(
        {
          backoff: settings.backoff,
          onRetry: ({ attempt, cause, delay }) =>
            Effect.andThen(
              settings.onDown,
              Effect.logWarning(
                `publisher channel closed (${Outcome.describe(Cause.squash(cause))}); ` +
                  `opening a new one in ${Math.round(Duration.toMillis(delay))} ms (attempt ${attempt})`
              )
            )
        },
        (isReady) => onChannel(connection, settings, isReady)
      )

    return {
      usableNow: () => {
        const current = live
        return usable(current) ? current : undefined
      },
      awaitUsable,
      ready,
      attach,
      stats: () => ({ waiting, unconfirmed: live?.confirms.unconfirmed() ?? 0 })
    } satisfies Outlet
  })
