/**
 * `npm run chaos`: the full zero-loss chaos run (see Chaos.ts). Prints a
 * summary (also written to bench/results/chaos.txt and chaos.json) and exits
 * non-zero if a task was lost, a worker crashed, or the queue did not settle.
 *
 * Environment: CHAOS_TASKS (default 100000), CHAOS_WORKERS (2),
 * CHAOS_RATE (tasks published per second, 1000), CHAOS_PREFETCH (50),
 * CHAOS_WORK_MS (1), CHAOS_TIMEOUT_S (900).
 */
import { writeFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
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
const text = Chaos.summary(report, prefetch)
console.log(text)
// The record the README's figures come from.
const { faults, ...figures } = report
const out = fileURLToPath(new URL("../bench/results/", import.meta.url))
writeFileSync(`${out}chaos.json`, JSON.stringify({ date: new Date().toISOString(), prefetch, ...figures, faultLog: faults }, null, 2) + "\n")
writeFileSync(`${out}chaos.txt`, text + "\n")
process.exit(report.ok ? 0 : 1)
