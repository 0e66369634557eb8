/**
 * The handler fibers of one subscription: deliveries wait in arrival order
 * for a fiber, at most `concurrency` fibers run at once, and none starts
 * while the broker blocks the connection (a memory or disk alarm: handlers
 * could not publish their results).
 *
 * At tens of thousands of messages a second the runtime's cost per message
 * shows, so a fiber is not started per delivery: a handler fiber works
 * through waiting deliveries one after another until none wait.
 *
 * @internal
 */
import { Context, Effect, type Fiber, References } from "effect"
import type * as Channel from "../Channel.ts"
import * as Outcome from "../Outcome.ts"
import { stringOrUndefined } from "./decode.ts"

/** A handler fiber, as the watchdog sees it. */
export class Slot {
  readonly fiber: Fiber.Fiber<unknown, unknown>
  /** When its current handler started (`performance.now()`), or -1 between handlers. */
  startedAt = -1
  /** The watchdog interrupted it: its handler ran out of time. */
  timedOut = false
  constructor(fiber: Fiber.Fiber<unknown, unknown>) {
    this.fiber = fiber
  }
}

/** What a subscription tells the handling of each delivery. */
export interface State {
  /** The worker is stopping this subscription's handlers (shutdown, lost channel): an interruption is not the message's fault. */
  readonly stopping: () => boolean
  /** The broker took the deliveries back: nothing may be sent for them. */
  readonly voided: () => boolean
}

/**
 * The handling of one handler fiber's deliveries, made once per fiber (so a
 * message costs no closures of its own): each call handles one delivery to
 * its settled end, then runs `next`. Only the handler itself may run in
 * `restore` (interruptibly).
 */
export type Handle<R> = (
  slot: Slot,
  state: State,
  restore: <A, E, R1>(effect: Effect.Effect<A, E, R1>) => Effect.Effect<A, E, R1>,
  next: Effect.Effect<void, never, R>
) => (
  delivery: Channel.Delivery,
  attempt: number,
  /** The broker's count of this message's deliveries that ended unsettled (0 where it counts every return). */
  failedDeliveries: number
) => Effect.Effect<void, never, R>

export interface DispatchOptions<R> {
  readonly queue: string
  readonly concurrency: number
  /** Whether the broker's delivery count is one of failures (4.3+). */
  readonly countsFailures: boolean
  /** No handler starts while this holds (the broker blocks the connection). */
  readonly paused: () => boolean
  readonly handle: Handle<R>
  /** Starts a handler fiber (in the subscription's fiber set). */
  readonly start: (work: Effect.Effect<void, never, R>) => unknown
}

/**
 * The deliveries of one subscription and its handler fibers: `push` as they
 * arrive, `stop` at shutdown or when the channel goes, `void` when the
 * broker cancelled the subscription. It is also the {@link State} each
 * handling reads.
 */
export class Dispatch<R> implements State {
  /** Deliveries no handler has started, in arrival order. */
  readonly waiting: Array<Channel.Delivery> = []
  /** The running handler fibers. */
  readonly slots = new Set<Slot>()
  private running = 0
  private pumpScheduled = false
  private isStopping = false
  private isVoided = false
  private readonly options: DispatchOptions<R>
  private readonly work: Effect.Effect<void, never, R>

  constructor(options: DispatchOptions<R>) {
    this.options = options
    this.work = handlerFiber(this, options)
  }

  readonly stopping = () => this.isStopping
  readonly voided = () => this.isVoided

  /** Starts no more handlers; those running finish (or are interrupted by the scope). */
  stop(): void {
    this.isStopping = true
  }

  /** The broker took every delivery back: drop those waiting, start nothing, send nothing. */
  void(): void {
    this.isVoided = true
    this.isStopping = true
    this.waiting.length = 0
  }

  /** The next delivery for a handler fiber that is free, unless it should stop. */
  take(slot: Slot): Channel.Delivery | undefined {
    return this.isStopping || slot.timedOut || this.options.paused() ? undefined : this.waiting.shift()
  }

  /** A handler fiber found nothing to take and ends. */
  finished(slot: Slot): void {
    this.slots.delete(slot)
    this.running--
    // A fiber the watchdog interrupted ends early: another takes over.
    if (slot.timedOut) this.schedulePump()
  }

  push(delivery: Channel.Delivery): void {
    this.waiting.push(delivery)
    this.schedulePump()
  }

  /** Starts fibers after the rest of this socket read, so that its deliveries go as a burst. */
  readonly schedulePump = (): void => {
    if (this.pumpScheduled) return
    this.pumpScheduled = true
    queueMicrotask(this.pump)
  }

  /**
   * Starts handler fibers for the deliveries that wait, up to
   * `concurrency`. A fiber runs at once, synchronously, until its handler
   * suspends: one whose handlers never suspend works through every waiting
   * delivery before `start` returns, so a burst of deliveries costs one
   * fiber; each handler that suspends leaves the rest to the next fiber.
   */
  private readonly pump = (): void => {
    this.pumpScheduled = false
    const { concurrency, paused, start } = this.options
    while (!this.isStopping && !paused() && this.waiting.length > 0 && this.running < concurrency) {
      this.running++
      start(this.work)
    }
  }
}

/**
 * A handler fiber. It is made uninterruptible once (handlers run in
 * `restore`), and each message's log annotations are set on the fiber's
 * context directly rather than with a scoped `Effect.annotateLogs` around
 * every message: both are per-message costs otherwise. A fiber the watchdog
 * interrupted ends after settling its message (its interruption would hit
 * the next handler too).
 */
const handlerFiber = <R>(dispatch: Dispatch<R>, options: DispatchOptions<R>): Effect.Effect<void, never, R> =>
  Effect.uninterruptibleMask((restore) =>
    Effect.withFiber((fiber) => {
      const slot = new Slot(fiber)
      dispatch.slots.add(slot)
      const base = fiber.context
      const annotations = Context.get(base, References.CurrentLogAnnotations)
      const next: Effect.Effect<void, never, R> = Effect.suspend(() => {
        const delivery = dispatch.take(slot)
        if (delivery === undefined) {
          fiber.setContext(base)
          dispatch.finished(slot)
          return Effect.void
        }
        const messageId = stringOrUndefined(delivery.properties.messageId)
        const headers = delivery.properties.headers
        const failed = options.countsFailures ? Outcome.failedDeliveriesOf(headers) : 0
        const attempt = Outcome.attemptOf(headers, options.queue, failed)
        fiber.setContext(Context.add(
          base,
          References.CurrentLogAnnotations,
          messageId === undefined ? { ...annotations, attempt } : { ...annotations, messageId, attempt }
        ))
        return handle(delivery, attempt, failed)
      })
      const handle = options.handle(slot, dispatch, restore, next)
      return next
    })
  )

/** Interrupts each handler that has run longer than `timeoutMs`; its message is settled as a `HandlerTimeout` failure. */
export const watchdog = (slots: ReadonlySet<Slot>, timeoutMs: number) => {
  // Checked often enough that a handler overruns by at most a tenth of the timeout (and at most 1 s).
  const every = Math.max(10, Math.min(1000, timeoutMs / 10))
  const check = () => {
    const now = performance.now()
    for (const slot of slots) {
      if (slot.startedAt >= 0 && !slot.timedOut && now - slot.startedAt >= timeoutMs) {
        slot.timedOut = true
        slot.fiber.interruptUnsafe()
      }
    }
  }
  return Effect.acquireRelease(
    Effect.sync(() => setInterval(check, every).unref()),
    (timer) => Effect.sync(() => clearInterval(timer))
  )
}

