/**
 * A TCP proxy in front of the broker that a test can break on purpose:
 * - `pause()` silently drops every byte both ways without closing anything,
 *   like a network that went dark: only heartbeats can tell the client;
 * - `hold()` delays everything the broker sends until `release()`, like a slow
 *   network: nothing is lost, it only arrives later;
 * - `cut()` destroys every connection, like a socket reset;
 * - `stop()` / `start()` close and reopen the listening port, like a broker
 *   that is down (connection refused) and comes back.
 * With `tls`, it terminates TLS in front of the (plain) broker, like a broker
 * with an `amqps://` listener.
 */
import * as net from "node:net"
import * as tls from "node:tls"
import { Effect, type Scope } from "effect"

export interface Proxy {
  readonly port: number
  readonly url: string
  readonly pause: () => void
  readonly resume: () => void
  readonly hold: () => void
  readonly release: () => void
  readonly cut: () => void
  readonly stop: () => Effect.Effect<void>
  readonly start: () => Effect.Effect<void>
  /** Client connections accepted so far. */
  readonly accepted: () => number
}

const listen = (server: net.Server, port: number) =>
  Effect.callback<number>((resume) => {
    server.listen(port, "127.0.0.1", () => {
      const address = server.address()
      resume(Effect.succeed(typeof address === "object" && address !== null ? address.port : port))
    })
  })

export const make = (
  target: { readonly host: string; readonly port: number } = { host: "127.0.0.1", port: 5672 },
  options: { readonly listening?: boolean; readonly tls?: tls.TlsOptions } = {}
): Effect.Effect<Proxy, never, Scope.Scope> =>
  Effect.gen(function*() {
    let paused = false
    let held: Array<() => void> | undefined
    let accepted = 0
    const sockets = new Set<net.Socket>()

    const onClient = (client: net.Socket) => {
      accepted++
      const upstream = net.connect(target.port, target.host)
      sockets.add(client)
      sockets.add(upstream)
      const pipe = (from: net.Socket, to: net.Socket, holdable: boolean) => {
        from.on("data", (chunk) => {
          if (paused) return
          if (holdable && held !== undefined) held.push(() => to.write(chunk))
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
      stop: () =>
        Effect.callback<void>((resume) => {
          server.close(() => resume(Effect.void))
          cut()
        }),
      start: () => Effect.asVoid(listen(server, port)),
      accepted: () => accepted
    }
  })
