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
import type * as Metrics from "../Metrics.ts"
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

export interface OutletOptions {
  readonly timeout: Duration.Duration
  readonly maxWaiting: number
  /** Counts each publish's typed failure (and each confirm). */
  readonly metrics: ReturnType<typeof Metrics.forPublisher>
}

export const make = (options: OutletOptions): Effect.Effect<Outlet> => Effect.sync(() => new Holder(options))

const usable = (current: Live | undefined): current is Live =>
  current !== undefined && current.unblocked.isOpen() && current.drained.isOpen()

class Holder implements Outlet {
  private readonly options: OutletOptions
  private live: Live | undefined
  private waiting = 0
  /** Open while a session's channel is attached. */
  private readonly available = Latch.makeUnsafe(false)

  constructor(options: OutletOptions) {
    this.options = options
  }

  readonly usableNow = (): Live | undefined => {
    const current = this.live
    return usable(current) ? current : undefined
  }

  readonly stats = () => ({ waiting: this.waiting, unconfirmed: this.live?.confirms.unconfirmed() ?? 0 })

  readonly awaitUsable: Effect.Effect<void> = Effect.suspend(() =>
    usable(this.live)
      ? Effect.void
      : this.available.await.pipe(
        Effect.andThen(Effect.suspend(() => this.live === undefined ? Effect.void : this.live.unblocked.await)),
        Effect.andThen(Effect.suspend(() => this.live === undefined ? Effect.void : this.live.drained.await)),
        Effect.andThen(Effect.suspend(() => this.awaitUsable))
      )
  )

  readonly ready = (messageId: string, deadline: number): Effect.Effect<Live, PublishTimeout | PublishBufferFull> =>
    Effect.suspend(() => {
      const current = this.live
      if (usable(current)) return Effect.succeed(current)
      const { maxWaiting, timeout } = this.options
      if (this.waiting >= maxWaiting) return this.failed(new PublishBufferFull({ messageId, maxWaiting }))
      this.waiting++
      return this.awaitUsable.pipe(
        Effect.timeoutOrElse({
          duration: Math.max(0, deadline - Date.now()),
          orElse: () => this.failed(new PublishTimeout({ messageId, timeout, sent: false }))
        }),
        Effect.ensuring(Effect.sync(() => {
          this.waiting--
        })),
        Effect.andThen(Effect.suspend(() => this.ready(messageId, deadline)))
      )
    })

  private failed<E extends PublishTimeout | PublishBufferFull>(error: E): Effect.Effect<never, E> {
    this.options.metrics.failed(error._tag)
    return Effect.fail(error)
  }

  readonly attach = (connection: Connection, settings: AttachSettings): Effect.Effect<never> =>
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
      (isReady) => this.onChannel(connection, settings, isReady)
    )

  /** One channel's lifetime: open, publish on it until it closes. */
  private onChannel(connection: Connection, settings: AttachSettings, isReady: Effect.Effect<void>) {
    const self = this
    return Effect.gen(function*() {
      const channel = yield* Channel.makeConfirm(connection)
      const drained = Latch.makeUnsafe(true)
      channel.raw.on("drain", () => drained.openUnsafe())
      const confirms = yield* Confirms.make(channel, {
        timeout: self.options.timeout,
        onFull: () => drained.closeUnsafe(),
        metrics: self.options.metrics
      })
      yield* self.hold({ channel, confirms, unblocked: connection.unblocked, drained })
      yield* isReady
      yield* settings.onReady
      return yield* channel.closed
    }).pipe(
      Effect.scoped,
      Effect.catch(Channel.unlessConnectionLost(connection))
    )
  }

  /** Publishes go to `current` until the scope closes. */
  private hold(current: Live) {
    return Effect.acquireRelease(
      Effect.sync(() => {
        this.live = current
        this.available.openUnsafe()
      }),
      () =>
        Effect.sync(() => {
          this.live = undefined
          this.available.closeUnsafe()
          // Wake the waiters of this channel's latches: they wait for the next channel.
          current.drained.openUnsafe()
        })
    )
  }
}
