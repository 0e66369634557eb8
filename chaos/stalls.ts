/**
 * Handling stalls, from the chaos run's records: when each task was first
 * handled, when each publish was confirmed. A gap between two handlings is a
 * stall from the moment a task was waiting in it (the oldest task not yet
 * handled at its start, once that task was confirmed: FIFO, near enough)
 * until the gap's end. An idle worker with nothing to do is not stalled.
 */

export interface Stall {
  readonly from: number
  readonly to: number
}

/** Stalls of at least `minMs`, in time order. `handledAt` and `confirmedAt` need not be sorted. */
export const stalls = (
  handledAt: ReadonlyArray<number>,
  firstHandledAt: ReadonlyArray<number>,
  confirmedAt: ReadonlyArray<number>,
  minMs = 100
): ReadonlyArray<Stall> => {
  const handled = [...handledAt].sort((a, b) => a - b)
  const firsts = [...firstHandledAt].sort((a, b) => a - b)
  const confirmed = [...confirmedAt].sort((a, b) => a - b)
  const out: Array<Stall> = []
  for (let i = 1; i < handled.length; i++) {
    const waiting = confirmed[countUpTo(firsts, handled[i - 1]!)]
    if (waiting === undefined) continue
    const from = Math.max(handled[i - 1]!, waiting)
    const to = handled[i]!
    if (to - from >= minMs) out.push({ from, to })
  }
  return out
}

/** The longest stall that overlaps `[start, end]`, in ms (0 if none). */
export const longestIn = (found: ReadonlyArray<Stall>, start: number, end: number): number =>
  found.reduce((max, s) => (s.to > start && s.from < end ? Math.max(max, s.to - s.from) : max), 0)

/** How many of the sorted `values` are at most `t`. */
const countUpTo = (sorted: ReadonlyArray<number>, t: number): number => {
  let lo = 0
  let hi = sorted.length
  while (lo < hi) {
    const mid = (lo + hi) >> 1
    if (sorted[mid]! <= t) lo = mid + 1
    else hi = mid
  }
  return lo
}

/**
 * The parts of each stall outside every `excluded` interval (when the
 * broker kept another client's confirms waiting: its own stall, not the
 * workers'), as stalls of their own.
 */
export const outside = (found: ReadonlyArray<Stall>, excluded: ReadonlyArray<Stall>): ReadonlyArray<Stall> => {
  const cuts = [...excluded].sort((a, b) => a.from - b.from)
  const out: Array<Stall> = []
  for (const stall of found) {
    let from = stall.from
    for (const cut of cuts) {
      if (cut.to <= from || cut.from >= stall.to) continue
      if (cut.from > from) out.push({ from, to: cut.from })
      from = Math.max(from, cut.to)
    }
    if (from < stall.to) out.push({ from, to: stall.to })
  }
  return out
}

/** Something that happened during a run: a fault, or a line a worker logged. */
export interface Event {
  readonly at: number
  /** Who it happened to or who said it ("fault", "worker 1"). */
  readonly who: string
  readonly text: string
}

/**
 * What happened around a stall, to explain it: the events from `beforeMs`
 * before its start until its end, in time order, each with its time from
 * the stall's start ("-3.2 s"); at most `max` lines, the ones nearest the
 * stall's start kept (the run's faults are a few a second, the workers'
 * lines around a fault a handful each).
 */
export const story = (stall: Stall, events: ReadonlyArray<Event>, beforeMs = 15_000, max = 80): ReadonlyArray<string> => {
  const inside = events
    .filter((event) => event.at >= stall.from - beforeMs && event.at <= stall.to)
    .sort((a, b) => a.at - b.at)
  const kept = inside.length <= max
    ? inside
    : [...inside]
      .sort((a, b) => Math.abs(a.at - stall.from) - Math.abs(b.at - stall.from))
      .slice(0, max)
      .sort((a, b) => a.at - b.at)
  const offset = (at: number) => {
    // In tenths of a second, so that a moment just before the start reads +0.0, not -0.0.
    const tenths = Math.round((at - stall.from) / 100)
    return `${tenths < 0 ? "-" : "+"}${(Math.abs(tenths) / 10).toFixed(1)} s`
  }
  return kept.map((event) => `${offset(event.at).padStart(8)}  ${event.who.padEnd(9)} ${event.text}`)
}

/** The longest of `found`, if any. */
export const longest = (found: ReadonlyArray<Stall>): Stall | undefined =>
  found.reduce<Stall | undefined>((max, s) => (max === undefined || s.to - s.from > max.to - max.from ? s : max), undefined)
