/**
 * A TCP proxy in front of the broker that a test can break on purpose:
 * - `pause()` silently drops every byte both ways without closing anything,
 *   like a network that went dark: only heartbeats can tell the client;
 * - `hold()` delays everything the broker sends until `release()`, like a slow
 *   network: nothing is lost, it only arrives later;
 * - `cut()` destroys every connection, like a socket reset;
 * - `injectChannelError()` slips a `basic.ack` for a delivery tag that does
 *   not exist into each client's consumer channel: the broker closes that
 *   channel with 406 PRECONDITION_FAILED, a real channel-level error, while
 *   the connection stays up;
 * - `stop()` / `start()` close and reopen the listening port, like a broker
 *   that is down (connection refused) and comes back.
 * With `tls`, it terminates TLS in front of the (plain) broker, like a broker
 * with an `amqps://` listener.
 */
import * as net from "node:net"
import * as tls from "node:tls"
import { Effect, type Scope } from "effect"
import * as broker from "./broker.ts"

export interface Proxy {
  readonly port: number
  readonly url: string
  readonly pause: () => void
  readonly resume: () => void
  readonly hold: () => void
  readonly release: () => void
  readonly cut: () => void
  /** Forces a 406 on every client's consumer channel; the number of channels it reached. */
  readonly injectChannelError: () => number
  readonly stop: () => Effect.Effect<void>
  readonly start: () => Effect.Effect<void>
  /** Client connections accepted so far. */
  readonly accepted: () => number
}

/**
 * Follows the client's side of an AMQP connection frame by frame, so that a
 * frame can be slipped in between two frames, and remembers the channels
 * that consume (basic.consume) until they close.
 */
class ClientFrames {
  private pending: Buffer = Buffer.alloc(0)
  private headerSeen = false
  private readonly injections: Array<Buffer> = []
  private readonly write: (data: Buffer) => void
  readonly consumerChannels = new Set<number>()

  constructor(write: (data: Buffer) => void) {
    this.write = write
  }

  feed(chunk: Buffer) {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk])
    if (!this.headerSeen) {
      // "AMQP" 0 0 9 1
      if (this.pending.length < 8) return
      this.write(this.pending.subarray(0, 8))
      this.pending = this.pending.subarray(8)
      this.headerSeen = true
    }
    while (this.pending.length >= 7) {
      const total = 7 + this.pending.readUInt32BE(3) + 1
      if (this.pending.length < total) break
      const frame = this.pending.subarray(0, total)
      this.pending = this.pending.subarray(total)
      this.inspect(frame)
      this.write(frame)
      for (const injection of this.injections.splice(0)) this.write(injection)
    }
  }

  inject(frame: Buffer) {
    if (this.headerSeen && this.pending.length === 0) this.write(frame)
    else this.injections.push(frame)
  }

  private inspect(frame: Buffer) {
    if (frame[0] !== 1 || frame.length < 11) return
    const channel = frame.readUInt16BE(1)
    const classId = frame.readUInt16BE(7)
    const methodId = frame.readUInt16BE(9)
    if (classId === 60 && methodId === 20) this.consumerChannels.add(channel)
    // channel.close or channel.close-ok
    if (classId === 20 && (methodId === 40 || methodId === 41)) this.consumerChannels.delete(channel)
  }
}

/** A basic.ack method frame for a delivery tag the broker never sent. */
const bogusAck = (channel: number) => {
  const payload = Buffer.alloc(13)
  payload.writeUInt16BE(60, 0)
  payload.writeUInt16BE(80, 2)
  payload.writeBigUInt64BE(9_000_000_000_000n, 4)
  payload.writeUInt8(0, 12)
  const frame = Buffer.alloc(7 + payload.length + 1)
  frame.writeUInt8(1, 0)
  frame.writeUInt16BE(channel, 1)
  frame.writeUInt32BE(payload.length, 3)
  payload.copy(frame, 7)
  frame.writeUInt8(0xce, 7 + payload.length)
  return frame
}

const listen = (server: net.Server, port: number) =>
  Effect.callback<number>((resume) => {
    server.listen(port, "127.0.0.1", () => {
      const address = server.address()
      resume(Effect.succeed(typeof address === "object" && address !== null ? address.port : port))
    })
  })

export const make = (
  target: { readonly host: string; readonly port: number } = broker.address,
  options: { readonly listening?: boolean; readonly tls?: tls.TlsOptions } = {}
): Effect.Effect<Proxy, never, Scope.Scope> =>
  Effect.gen(function*() {
    let paused = false
    let held: Array<() => void> | undefined
    let accepted = 0
    const sockets = new Set<net.Socket>()
    const clients = new Set<ClientFrames>()

    const onClient = (client: net.Socket) => {
      accepted++
      const upstream = net.connect(target.port, target.host)
      sockets.add(client)
      sockets.add(upstream)
      const frames = new ClientFrames((data) => upstream.write(data))
      clients.add(frames)
      client.on("close", () => clients.delete(frames))
      const pipe = (from: net.Socket, to: net.Socket, holdable: boolean) => {
        from.on("data", (chunk: Buffer) => {
          if (paused) return
          if (holdable && held !== undefined) held.push(() => to.write(chunk))
          else if (from === client) frames.feed(chunk)
          else to.write(chunk)
        })
        from.on("close", () => {
          sockets.delete(from)
          // While paused the other side must not learn of it: half-open.
          if (!paused) to.destroy()
        })
        from.on("error", () => {})
      }
      pipe(client, upstream, false)
      pipe(upstream, client, true)
    }
    const server: net.Server = options.tls === undefined
      ? net.createServer(onClient)
      : tls.createServer(options.tls, onClient)
    // A client that fails the TLS handshake must not take the test down.
    server.on("tlsClientError", () => {})

    // Reserve a free port, then keep using it across stop/start.
    const port = yield* listen(server, 0)
    if (options.listening === false) {
      yield* Effect.callback<void>((resume) => {
        server.close(() => resume(Effect.void))
      })
    }

    const cut = () => {
      for (const socket of sockets) socket.destroy()
      sockets.clear()
    }
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        cut()
        server.close()
      })
    )

    return {
      port,
      url: options.tls === undefined ? `amqp://guest:guest@127.0.0.1:${port}` : `amqps://guest:guest@localhost:${port}`,
      pause: () => {
        paused = true
      },
      resume: () => {
        paused = false
      },
      hold: () => {
        held ??= []
      },
      release: () => {
        const writes = held ?? []
        held = undefined
        for (const write of writes) write()
      },
      cut,
      injectChannelError: () => {
        let reached = 0
        for (const frames of clients) {
          for (const channel of frames.consumerChannels) {
            frames.inject(bogusAck(channel))
            reached++
          }
        }
        return reached
      },
      stop: () =>
        Effect.callback<void>((resume) => {
          server.close(() => resume(Effect.void))
          cut()
        }),
      start: () => Effect.asVoid(listen(server, port)),
      accepted: () => accepted
    }
  })
