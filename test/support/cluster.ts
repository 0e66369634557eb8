/**
 * Test support for the three-node RabbitMQ 4.3 cluster that
 * scripts/rabbitmq4.sh runs (rabbitA/B/C@localhost on 5681-5683): its nodes,
 * their `rabbitmqctl`, the leaders of queues, and the node faults the cluster
 * tests and `npm run chaos -- --cluster` inject (stop_app, kill -9 of the
 * Erlang VM). Every fault is undone by `up`, which starts whatever is down.
 */
import { execFile } from "node:child_process"
import { fileURLToPath } from "node:url"
import { Effect } from "effect"

const root = fileURLToPath(new globalThis.URL("../..", import.meta.url))
const script = "scripts/rabbitmq4.sh"

export type NodeKey = "a" | "b" | "c"

export interface Node {
  readonly key: NodeKey
  readonly name: string
  readonly port: number
  readonly url: string
}

export const nodes: ReadonlyArray<Node> = (["a", "b", "c"] as const).map((key, i) => ({
  key,
  name: `rabbit${key.toUpperCase()}@localhost`,
  port: 5681 + i,
  url: `amqp://guest:guest@127.0.0.1:${5681 + i}`
}))

/** Every node's address, as a worker's `AMQP_URL`. */
export const URL = nodes.map((node) => node.url).join(",")

const run = (args: ReadonlyArray<string>, timeout = 120_000) =>
  Effect.callback<string, Error>((resume) => {
    execFile("bash", [script, ...args], { cwd: root, timeout }, (error, stdout, stderr) => {
      resume(error ? Effect.fail(new Error(`${script} ${args.join(" ")}: ${stderr || error.message}`)) : Effect.succeed(stdout))
    })
  })

/** `rabbitmqctl` on one node. */
export const ctl = (node: NodeKey, ...args: ReadonlyArray<string>) => run(["ctl", node, ...args]).pipe(Effect.orDie)

/** Starts every node that is down (and its app, after a stop_app); waits until all serve. */
export const up = run(["up"], 300_000).pipe(Effect.orDie, Effect.asVoid)

/** The nodes whose app runs, asked of the first node that answers. */
export const running = Effect.gen(function*() {
  for (const node of nodes) {
    const out = yield* run(["ctl", node.key, "cluster_status", "--formatter", "json"], 30_000).pipe(Effect.option)
    if (out._tag === "Some") return (JSON.parse(out.value) as { running_nodes: ReadonlyArray<string> }).running_nodes
  }
  return []
})

/** Each queue's leader (a classic queue's only node), asked of a running node. */
export const leaders = (names: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const alive = yield* running
    const asked = nodes.find((node) => alive.includes(node.name)) ?? nodes[0]!
    const rows = JSON.parse((yield* ctl(asked.key, "list_queues", "name", "leader", "--formatter", "json")).trim() || "[]") as
      ReadonlyArray<{ name: string; leader: string }>
    const out: Record<string, string> = {}
    for (const row of rows) if (names.includes(row.name)) out[row.name] = row.leader
    return out
  })

export const nodeNamed = (name: string): Node | undefined => nodes.find((node) => node.name === name)

/** Stops the node's app (its connections close; its VM stays up). Whole or not at all. */
export const stopApp = (node: NodeKey) => Effect.uninterruptible(Effect.asVoid(ctl(node, "stop_app")))

export const startApp = (node: NodeKey) => Effect.uninterruptible(Effect.asVoid(ctl(node, "start_app")))

/** Kills the node's Erlang VM outright (kill -9), as a crashed machine would, without starting it again. */
export const kill = (node: NodeKey) =>
  Effect.uninterruptible(Effect.gen(function*() {
    const pid = Number((yield* ctl(node, "eval", "list_to_integer(os:getpid()).")).trim())
    if (!Number.isInteger(pid) || pid <= 1) return yield* Effect.die(new Error(`no OS pid for node ${node}`))
    process.kill(pid, "SIGKILL")
    // Gone once its AMQP port stops answering.
    while ((yield* run(["ctl", node, "ping"], 10_000).pipe(Effect.option))._tag === "Some") yield* Effect.sleep("100 millis")
  }))
