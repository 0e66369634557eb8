/**
 * `npm run chaos`: the full zero-loss chaos run (see Chaos.ts). Prints a
 * summary and exits non-zero if a task was lost, a worker crashed, or the
 * queue did not settle.
 *
 * Environment: CHAOS_TASKS (default 100000), CHAOS_WORKERS (2),
 * CHAOS_RATE (tasks published per second, 1000), CHAOS_PREFETCH (50),
 * CHAOS_WORK_MS (1), CHAOS_TIMEOUT_S (900).
 */
import { Effect } from "effect"
import * as Chaos from "./Chaos.ts"

const number = (name: string, fallback: number) => {
  const value = Number(process.env[name] ?? fallback)
  if (!Number.isFinite(value) || value <= 0) {
    console.error(`${name} must be a positive number`)
    process.exit(2)
  }
  return value
}

const prefetch = number("CHAOS_PREFETCH", 50)
const report = await Effect.runPromise(Effect.scoped(Chaos.run({
  tasks: number("CHAOS_TASKS", 100_000),
  workers: number("CHAOS_WORKERS", 2),
  publishRate: number("CHAOS_RATE", 1000),
  prefetch,
  workMs: number("CHAOS_WORK_MS", 1),
  faults: ["close", "pause", "restart", "channel", "sigterm", "sigkill"],
  timeoutMs: number("CHAOS_TIMEOUT_S", 900) * 1000,
  log: (line) => console.log(`[chaos] ${line}`)
})))
console.log(Chaos.summary(report, prefetch))
process.exit(report.ok ? 0 : 1)
