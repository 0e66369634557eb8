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
import { Cause, Context, Duration, Effect, type Fiber, References } from "effect"
import type * as Channel from "../Channel.ts"
import * as Outcome from "../Outcome.ts"
import { stringOrUndefined } from "./decode.ts"

/**
 * A handler fiber's place: what the watchdog sees of it, and what its
 * handling needs for every message. Where handlers wait (for a publish,
 * say), a fiber handles about one message, so a slot is kept for the next
 * fiber when its fiber ends: its continuations are made once, not per fiber.
 */
export class Slot<R = unknown> {
  /** The fiber in this slot now. */
  fiber!: Fiber.Fiber<unknown, unknown>
  /** Runs the handler interruptibly (from the fiber's `uninterruptibleMask`). */
  restore!: <A, E, R1>(effect: Effect.Effect<A, E, R1>) => Effect.Effect<A, E, R1>
  /** When its current handler started (`performance.now()`), or -1 between handlers. */
  startedAt = -1
  /** The watchdog interrupted it: its handler ran out of time. */
  timedOut = false
  /**
   * Its handler ignored the watchdog's interruption for {@link abandonAfter}:
   * its message was settled without it, and its fiber, if it ever ends,
   * ends there (the slot is not used again).
   */
  abandoned = false
  /** Settles the current message as timed out, for an abandoned handler; returns what is left to run (set by the handling). */
  settleAbandoned!: () => Effect.Effect<void> | undefined
  /** Whether the current message has not been settled yet (set by the handling). */
  unsettled!: () => boolean
  /** The fiber's context when it started, and the log annotations in it. */
  base!: Context.Context<never>
  annotations!: Readonly<Record<string, unknown>>
  /**
   * `base` as one flat map, which each message's annotations are added to.
   * `base` itself is usually at Effect's overlay limit (8 adds), and adding
   * to such a context copies its whole map: once a message otherwise.
   */
  flat!: Context.Context<never>
  /** The message id of the delivery its fiber is handling (from the fiber's log annotations). */
  messageId(): string | undefined {
    const id = Context.get(this.fiber.context, References.CurrentLogAnnotations)["messageId"]
    return typeof id === "string" ? id : undefined
  }
  /** Takes the next delivery and handles it, until none waits. */
  readonly next: Effect.Effect<void, never, R>
  /** `next`, for a fiber to run: its death outside the outcome rules goes to `onDeath`. */
  readonly guarded: Effect.Effect<void, never, R>
  constructor(
    next: (slot: Slot<R>) => Effect.Effect<void, never, R>,
    onDeath: (slot: Slot<R>, cause: Cause.Cause<never>) => Effect.Effect<void>
  ) {
    this.next = next(this)
    this.guarded = Effect.catchCause(this.next, (cause) => onDeath(this, cause))
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
 * The handling of one slot's deliveries, made once per slot (so neither a
 * message nor a fiber costs closures of its own): each call handles one
 * delivery to its settled end, then runs `next`. Only the handler itself
 * may run in `slot.restore` (interruptibly).
 */
export type Handle<R> = (
  slot: Slot<R>,
  state: State,
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
  /**
   * A handler fiber died with its message unsettled: the subscription
   * ends, and its channel with it, so that the broker takes the message back.
   */
  readonly broken: (cause: Cause.Cause<never>) => void
  /** Takes an abandoned handler's fiber out of the fiber set: nothing waits for it any more. */
  readonly forget: (fiber: Fiber.Fiber<unknown, unknown>) => void
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
  readonly slots = new Set<Slot<R>>()
  /** Slots whose fibers ended, for the next fibers. */
  private readonly free: Array<Slot<R>> = []
  private running = 0
  private pumpScheduled = false
  private isStopping = false
  private isVoided = false
  private readonly options: DispatchOptions<R>
  private readonly work: Effect.Effect<void, never, R>
  private readonly slotWork: (slot: Slot<R>) => Effect.Effect<void, never, R>

  constructor(options: DispatchOptions<R>) {
    this.options = options
    this.slotWork = slotWork(this, options)
    this.work = handlerFiber(this)
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
  take(slot: Slot<R>): Channel.Delivery | undefined {
    return this.isStopping || slot.timedOut || slot.abandoned || this.options.paused() ? undefined : this.waiting.shift()
  }

  /** A fiber starts in a slot: a free one, or a new one. */
  occupy(fiber: Fiber.Fiber<unknown, unknown>, restore: Slot<R>["restore"]): Slot<R> {
    const slot = this.free.pop() ?? new Slot<R>(this.slotWork, this.died)
    slot.fiber = fiber
    slot.restore = restore
    if (slot.base !== fiber.context) {
      slot.base = fiber.context
      slot.flat = Context.makeUnsafe(new Map(fiber.context.mapUnsafe))
      slot.annotations = Context.get(fiber.context, References.CurrentLogAnnotations)
    }
    this.slots.add(slot)
    return slot
  }

  /** A handler fiber found nothing to take and ends; its slot is kept for the next one. */
  finished(slot: Slot<R>): void {
    // Counted out when it was abandoned.
    if (slot.abandoned) return
    this.slots.delete(slot)
    this.running--
    // A fiber the watchdog interrupted ends early: another takes over.
    if (slot.timedOut) {
      slot.timedOut = false
      this.schedulePump()
    }
    this.free.push(slot)
  }

  /**
   * A handler fiber died outside the outcome rules: a bug of this library,
   * or a logger or tracer of the application's that throws. Its place goes
   * to another fiber; a message it left unsettled cannot be settled by
   * rules that just failed, so the subscription ends (`broken`) and the
   * broker takes the message back with the channel (a new one comes after
   * the consumer's backoff, so a fault that recurs cannot loop hot).
   */
  private readonly died = (slot: Slot<R>, cause: Cause.Cause<never>): Effect.Effect<void> => {
    // An interruption is the subscription's own ending, not a death.
    if (Cause.hasInterruptsOnly(cause)) return Effect.failCause(cause)
    const unsettled = slot.unsettled()
    const messageId = slot.messageId() ?? "(none)"
    slot.startedAt = -1
    this.finished(slot)
    this.schedulePump()
    if (unsettled) this.options.broken(cause)
    return Effect.logError(
      `the handling of message ${messageId} failed outside its outcome rules (a bug, or a logger or tracer that throws)` +
        (unsettled ? ": it is not settled; the channel is reopened, the broker redelivers it" : ", after it was settled"),
      cause
    ).pipe(Effect.catchCause(() => Effect.void))
  }

  /**
   * Gives up on a handler that ignored the watchdog's interruption: its
   * message is settled as timed out (by the consumer's policy) and its
   * place goes to another fiber. Its own fiber is left running; whatever it
   * does afterwards settles nothing.
   */
  abandon(slot: Slot<R>): void {
    slot.abandoned = true
    this.slots.delete(slot)
    this.options.forget(slot.fiber)
    this.running--
    const messageId = slot.messageId() ?? "(none)"
    this.schedulePump()
    let rest: Effect.Effect<void> | undefined
    try {
      rest = slot.settleAbandoned()
    } catch (defect) {
      // Not settled: as for a handler fiber's death (`died`), the channel goes.
      this.options.broken(Cause.die(defect))
      this.options.start(Effect.logError(`the message ${messageId} of an abandoned handler could not be settled`, defect))
      return
    }
    const log = Effect.logError(
      `the handler of message ${messageId} is still running ${Duration.format(abandonAfter)} after its timeout ` +
        `interrupted it (it ignores interruption): abandoned, its message settled as timed out`
    )
    this.options.start(rest === undefined ? log : Effect.andThen(log, rest))
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
 * A handler fiber: it takes a slot and works through the deliveries that
 * wait. It is made uninterruptible once (handlers run in `restore`).
 */
const handlerFiber = <R>(dispatch: Dispatch<R>): Effect.Effect<void, never, R> =>
  Effect.uninterruptibleMask((restore) => Effect.withFiber((fiber) => dispatch.occupy(fiber, restore).guarded))

/**
 * What a slot runs for each message: take a delivery and handle it. Each
 * message's log annotations are set on the fiber's context directly rather
 * than with a scoped `Effect.annotateLogs` around every message (a
 * per-message cost otherwise). A fiber the watchdog interrupted ends after
 * settling its message (its interruption would hit the next handler too).
 */
const slotWork = <R>(dispatch: Dispatch<R>, options: DispatchOptions<R>) => (slot: Slot<R>): Effect.Effect<void, never, R> => {
  const next: Effect.Effect<void, never, R> = Effect.suspend(() => {
    const delivery = dispatch.take(slot)
    if (delivery === undefined) {
      slot.fiber.setContext(slot.base)
      dispatch.finished(slot)
      return Effect.void
    }
    const messageId = stringOrUndefined(delivery.properties.messageId)
    const headers = delivery.properties.headers
    const failed = options.countsFailures ? Outcome.failedDeliveriesOf(headers) : 0
    const attempt = Outcome.attemptOf(headers, options.queue, failed)
    const annotations = slot.annotations
    slot.fiber.setContext(Context.add(
      slot.flat,
      References.CurrentLogAnnotations,
      messageId === undefined ? { ...annotations, attempt } : { ...annotations, messageId, attempt }
    ))
    return handle(delivery, attempt, failed)
  })
  const handle = options.handle(slot, dispatch, next)
  return next
}

/**
 * How long an interrupted handler may take to stop. One that takes longer
 * ignores interruption (an uninterruptible region that does not end, e.g.
 * an `acquireRelease` whose acquire waits forever): waiting on would hold
 * its message and its place, and, when the channel goes, the reconnect or
 * the shutdown, for good.
 */
export const abandonAfter = Duration.seconds(5)

/**
 * Interrupts each handler that has run longer than `timeoutMs`; its message
 * is settled as a `HandlerTimeout` failure. A handler that is still running
 * {@link abandonAfter} later is abandoned ({@link Dispatch.abandon}).
 */
export const watchdog = <R>(dispatch: Dispatch<R>, timeoutMs: number) => {
  // Checked often enough that a handler overruns by at most a tenth of the timeout (and at most 1 s).
  const every = Math.max(10, Math.min(1000, timeoutMs / 10))
  const abandonMs = timeoutMs + Duration.toMillis(abandonAfter)
  const check = () => {
    const now = performance.now()
    for (const slot of dispatch.slots) {
      if (slot.startedAt < 0) continue
      const ran = now - slot.startedAt
      if (!slot.timedOut) {
        if (ran >= timeoutMs) {
          slot.timedOut = true
          slot.fiber.interruptUnsafe()
        }
      } else if (ran >= abandonMs) {
        dispatch.abandon(slot)
      }
    }
  }
  return Effect.acquireRelease(
    Effect.sync(() => setInterval(check, every).unref()),
    (timer) => Effect.sync(() => clearInterval(timer))
  )
}

