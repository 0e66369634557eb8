/**
 * `npm run chaos`: the full zero-loss chaos run (see Chaos.ts) against the
 * machine's broker; `npm run chaos -- --cluster`: the same on the three-node
 * RabbitMQ 4.3 cluster (scripts/rabbitmq4.sh starts it), with quorum queues,
 * node stops and a node kill, and the stall check. Prints a summary (also
 * written to bench/results/chaos.txt and chaos.json, or chaos-cluster.*) and
 * exits non-zero if a task was lost, a worker crashed, the queue did not
 * settle, or (cluster) handling stalled over 5 s.
 *
 * Environment: CHAOS_TASKS (default 100000; cluster 20000), CHAOS_WORKERS (2),
 * CHAOS_RATE (tasks published per second, 1000; cluster 300), CHAOS_PREFETCH (50),
 * CHAOS_WORK_MS (1; cluster 5), CHAOS_FAIL_EVERY (every n-th task fails its
 * first attempt; 0, cluster 10), CHAOS_TIMEOUT_S (900).
 */
import { execFileSync } from "node:child_process"
import { writeFileSync } from "node:fs"
import { fileURLToPath } from "node:url"

const cluster = process.argv.includes("--cluster")
const root = fileURLToPath(new URL("..", import.meta.url))

const number = (name: string, fallback: number, min = 1) => {
  const value = Number(process.env[name] ?? fallback)
  if (!Number.isFinite(value) || value < min) {
    console.error(`${name} must be a number of at least ${min}`)
    process.exit(2)
  }
  return value
}

if (cluster) {
  // Read by the test support (imported below) when it loads.
  execFileSync("bash", ["scripts/rabbitmq4.sh", "up"], { cwd: root, stdio: "inherit" })
  const { URL } = await import("../test/support/cluster.ts")
  process.env.AMQP_URL = URL
  process.env.RABBITMQCTL = "bash scripts/rabbitmq4.sh ctl a"
}
const { Effect } = await import("effect")
const Chaos = await import("./Chaos.ts")

const prefetch = number("CHAOS_PREFETCH", 50)
const report = await Effect.runPromise(Effect.scoped(Chaos.run({
  tasks: number("CHAOS_TASKS", cluster ? 20_000 : 100_000),
  workers: number("CHAOS_WORKERS", 2),
  publishRate: number("CHAOS_RATE", cluster ? 300 : 1000),
  prefetch,
  workMs: number("CHAOS_WORK_MS", cluster ? 5 : 1, 0),
  faults: cluster
    ? ["close", "node-stop", "node-kill", "sigterm", "sigkill"]
    : ["close", "pause", "restart", "channel", "sigterm", "sigkill"],
  cluster,
  failEvery: number("CHAOS_FAIL_EVERY", cluster ? 10 : 0, 0),
  retryDelayMs: cluster ? 1000 : 5000,
  timeoutMs: number("CHAOS_TIMEOUT_S", 900) * 1000,
  log: (line) => console.log(`[chaos] ${line}`)
})))
const text = Chaos.summary(report, prefetch)
console.log(text)
// The record the README's figures come from.
const { faults, ...figures } = report
const out = fileURLToPath(new URL("../bench/results/", import.meta.url))
const name = cluster ? "chaos-cluster" : "chaos"
writeFileSync(`${out}${name}.json`, JSON.stringify({ date: new Date().toISOString(), prefetch, ...figures, faultLog: faults }, null, 2) + "\n")
writeFileSync(`${out}${name}.txt`, text + "\n")
process.exit(report.ok ? 0 : 1)
