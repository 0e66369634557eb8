/**
 * One AMQP connection as a scoped resource.
 *
 * `make` opens an amqplib connection (to the first of the broker addresses
 * that answers, e.g. the nodes of a cluster), attaches listeners for every event that
 * could otherwise crash the process (`error` with no listener throws), and
 * closes the connection when the scope closes. `lost` fails with
 * {@link ConnectionLost} once the connection is gone for any reason: the
 * broker closed it, the socket died, or heartbeats stopped arriving on a
 * half-open socket. Nothing here reconnects: that is the job of
 * {@link Reconnect} and {@link Session}.
 *
 * @since 0.1.0
 */
import type * as amqp from "amqplib"
import { Data, Deferred, Duration, Effect, Exit, Latch, Queue, Redacted, type Scope } from "effect"
import { connectAny } from "./internal/connect.ts"
import type { Checker } from "./Options.ts"

/**
 * @category models
 * @since 0.1.0
 */
export interface ConnectionOptions {
  /**
   * `amqp://user:password@host:port/vhost` (or `amqps://`), or several of them
   * separated by commas (the nodes of a cluster): each attempt tries them in
   * turn. Kept redacted: it holds the password.
   */
  readonly url: Redacted.Redacted<string>
  /** For `amqps://`: the CA to trust, and a client certificate and key (PEM). */
  readonly tls?: TlsOptions | undefined
  /** Heartbeat interval; a dead peer is noticed after about twice this. 0 disables heartbeats. Default 10. */
  readonly heartbeatSeconds?: number | undefined
  /** TCP connect, TLS and the AMQP handshake of one address must finish within this: one deadline. Default 10 seconds. */
  readonly connectTimeout?: Duration.Input | undefined
  /** Shown by the broker (`rabbitmqctl list_connections name`). */
  readonly name?: string | undefined
}

/**
 * @category models
 * @since 0.1.0
 */
export interface TlsOptions {
  readonly ca?: Buffer | undefined
  readonly cert?: Buffer | undefined
  readonly key?: Buffer | undefined
}

/**
 * The addresses of a (comma-separated) broker URL.
 *
 * @category utils
 * @since 0.1.0
 */
export const addresses = (url: Redacted.Redacted<string>): ReadonlyArray<Redacted.Redacted<string>> =>
  Redacted.value(url).split(",").map((part) => part.trim()).filter((part) => part.length > 0).map((part) =>
    Redacted.make(part)
  )

/**
 * What is wrong with a (comma-separated) broker URL, or undefined when each
 * address is an `amqp://` or `amqps://` URL. Never repeats the value: it may
 * hold a password.
 *
 * @category utils
 * @since 0.1.0
 */
export const urlProblem = (urls: string): string | undefined => {
  const parts = urls.split(",").map((part) => part.trim()).filter((part) => part.length > 0)
  if (parts.length === 0) return "is empty"
  for (const [i, url] of parts.entries()) {
    const which = parts.length > 1 ? `address ${i + 1}` : "it"
    try {
      const parsed = new URL(url)
      if (parsed.protocol !== "amqp:" && parsed.protocol !== "amqps:") {
        return `must start with amqp:// or amqps:// (${which} does not)`
      }
    } catch {
      return `is not a valid URL (${which})`
    }
  }
  return undefined
}

/**
 * Adds the problems of connection options to `checker`.
 *
 * @category checks
 * @since 0.1.0
 */
export const check = (options: ConnectionOptions, checker: Checker): void => {
  const url: unknown = Redacted.isRedacted(options.url) ? Redacted.value(options.url) : options.url
  const problem = typeof url === "string" ? urlProblem(url) : "is not a string"
  // The value is never shown: it may hold a password.
  checker.check(problem === undefined, "connection.url", "<redacted>", `amqp:// or amqps:// URLs (it ${problem})`)
  checker.int("connection.heartbeatSeconds", options.heartbeatSeconds, 0, 3600)
  checker.duration("connection.connectTimeout", options.connectTimeout, true)
}

/**
 * Opening the connection failed (refused, timed out, bad credentials).
 *
 * @category errors
 * @since 0.1.0
 */
export class ConnectError extends Data.TaggedError("ConnectError")<{
  readonly server: string
  readonly reason: string
}> {
  /** The broker may be up on the next attempt: the worker keeps trying, with backoff. */
  readonly isRetryable = true
  override get message() {
    return `cannot connect to ${this.server}: ${this.reason}`
  }
}

/**
 * An open connection is gone.
 *
 * @category errors
 * @since 0.1.0
 */
export class ConnectionLost extends Data.TaggedError("ConnectionLost")<{
  readonly server: string
  readonly reason: string
}> {
  /** A new session follows, after the backoff. */
  readonly isRetryable = true
  override get message() {
    return `connection to ${this.server} lost: ${this.reason}`
  }
}

/**
 * @category models
 * @since 0.1.0
 */
export interface Connection {
  /** The broker address without credentials, safe to log. */
  readonly server: string
  /** Which of the addresses (in the order given) it is connected to. */
  readonly address: number
  /** Fails with {@link ConnectionLost} when the connection is gone; never succeeds. */
  readonly lost: Effect.Effect<never, ConnectionLost>
  readonly isOpen: () => boolean
  /**
   * Open unless the broker has blocked the connection (a memory or disk
   * alarm): publishing waits on it instead of piling messages up.
   */
  readonly unblocked: Latch.Latch
  /** Each change of the broker's blocking, with its reason when blocked (for the worker's status). */
  readonly blockedChanges: Queue.Dequeue<{ readonly blocked: boolean; readonly reason?: string }>
  /** The broker's version, as it announced it ("4.3.6"); empty when it did not. */
  readonly brokerVersion: string
  /** The amqplib connection, for {@link Channel} only. */
  readonly model: amqp.ChannelModel
}

/**
 * The address of a broker URL with user and password removed, for logs.
 *
 * @category utils
 * @since 0.1.0
 */
export const describeUrl = (url: Redacted.Redacted<string>): string =>
  addresses(url).map((address) => {
    try {
      const parsed = new URL(Redacted.value(address))
      const vhost = parsed.pathname.length > 1 ? parsed.pathname : ""
      return `${parsed.protocol}//${parsed.host}${vhost}`
    } catch {
      return "<invalid AMQP URL>"
    }
  }).join(", ")

/**
 * Opens a connection that is closed when the scope closes. With several
 * addresses, the attempt starts at address number `first` (modulo their
 * count), so that successive sessions go round the nodes. Connecting can be
 * interrupted at any point (shutdown does not wait for a broker that does
 * not answer).
 *
 * @category constructors
 * @since 0.1.0
 */
export const make = (
  options: ConnectionOptions,
  first = 0
): Effect.Effect<Connection, ConnectError, Scope.Scope> =>
  Effect.gen(function*() {
    const watch = new Watch(
      yield* Deferred.make<never, ConnectionLost>(),
      yield* Queue.unbounded<BlockedChange>(),
      describeUrl(options.url)
    )
    // Not `acquireRelease`: its acquisition cannot be interrupted. The
    // connect runs interruptibly; once it succeeded, the listeners and the
    // finalizer go on without a gap.
    const connected = yield* Effect.uninterruptibleMask((restore) =>
      restore(Effect.tryPromise({
        try: (signal) => connectAny(addresses(options.url), first, options, signal),
        catch: (error) => new ConnectError({ server: watch.server, reason: error instanceof Error ? error.message : String(error) })
      })).pipe(
        Effect.tap((connected) => Effect.sync(() => watch.listen(connected))),
        Effect.tap((connected) => Effect.addFinalizer(() => close(connected.model, watch)))
      )
    )
    const model = connected.model
    return {
      server: connected.server,
      address: connected.index,
      lost: Deferred.await(watch.lost),
      isOpen: () => watch.open,
      unblocked: watch.unblocked,
      blockedChanges: watch.blockedChanges,
      brokerVersion: typeof model.connection.serverProperties?.version === "string" ? model.connection.serverProperties.version : "",
      model
    } satisfies Connection
  })

type BlockedChange = { readonly blocked: boolean; readonly reason?: string }

/** What the connection's events tell: open or lost (and why), blocked or not. */
class Watch {
  readonly lost: Deferred.Deferred<never, ConnectionLost>
  readonly blockedChanges: Queue.Queue<BlockedChange>
  readonly unblocked = Latch.makeUnsafe(true)
  server: string
  open = false
  private lastError: string | undefined

  constructor(lost: Deferred.Deferred<never, ConnectionLost>, blockedChanges: Queue.Queue<BlockedChange>, server: string) {
    this.lost = lost
    this.blockedChanges = blockedChanges
    this.server = server
  }

  /** Listeners go on before any event can fire: an `error` event without a listener would crash the process. */
  listen(connected: { readonly model: amqp.ChannelModel; readonly server: string }): void {
    const model = connected.model
    this.server = connected.server
    this.open = true
    model.on("error", (error: Error) => {
      this.lastError = error.message
    })
    model.on("blocked", (reason: string) => {
      this.unblocked.closeUnsafe()
      Queue.offerUnsafe(this.blockedChanges, { blocked: true, reason })
    })
    model.on("unblocked", () => {
      this.unblocked.openUnsafe()
      Queue.offerUnsafe(this.blockedChanges, { blocked: false })
    })
    model.on("close", (error?: Error) => {
      this.open = false
      // Waiters move on and find the connection gone.
      this.unblocked.openUnsafe()
      const reason = error?.message ?? this.lastError ?? "closed"
      Deferred.doneUnsafe(this.lost, Exit.fail(new ConnectionLost({ server: this.server, reason })))
    })
    model.on("handler-error", () => {})
  }
}

/**
 * close() waits for the broker's close-ok; on a half-open socket that never
 * comes, and heartbeats end the socket later. A connection going down as
 * this begins is done once it is down.
 */
const close = (model: amqp.ChannelModel, watch: Watch): Effect.Effect<void> =>
  watch.open
    ? Effect.raceFirst(
      Effect.ignore(Effect.tryPromise(() => model.close())),
      Effect.ignore(Deferred.await(watch.lost))
    ).pipe(Effect.timeout("5 seconds"), Effect.ignore)
    : Effect.void
