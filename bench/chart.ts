/**
 * Renders the benchmark results as an SVG for the README: for each scenario
 * (consume only; the real path: consume, publish a confirmed result, ack;
 * confirmed publishing at 100 and 1,000 in flight) the median msgs/s per
 * client, its ratio to raw amqplib and its CPU per message; then the
 * recovery, shutdown and memory figures, with the date, machine and versions.
 */

type Summary = Readonly<
  Record<string, {
    medianMsgsPerSec: number
    medianCpuMicrosPerMessage: number
    medianBrokerCpuMicrosPerMessage?: number
    ratioToRaw?: number
  }>
>
/** The run's estimate of a client that cost no CPU (bench/run.ts `freeClient`). */
type FreeClient = { readonly msgsPerSec: number; readonly ratioToRaw: number } | undefined

const freeNote = (free: FreeClient) =>
  free === undefined ? "" : `; a client costing no CPU: about ${free.msgsPerSec.toLocaleString("en")}/s (${free.ratioToRaw.toFixed(2)}x)`

type QuorumPath = {
  readonly rabbitmq: string
  readonly tasks: number
  readonly prefetch: number
  readonly rounds: number
  readonly summary: Summary
  readonly freeClient?: FreeClient
} | { readonly skipped: string }

export interface Results {
  readonly date: string
  readonly machine: { readonly cpus: number; readonly cpuModel: string; readonly memoryGiB: number; readonly node: string }
  readonly versions: Readonly<Record<string, string>>
  readonly throughput: {
    readonly messages: number
    readonly prefetch: number
    readonly rounds: number
    readonly summary: Summary
    readonly freeClient?: FreeClient
  }
  readonly realPath: {
    readonly tasks: number
    readonly prefetch: number
    readonly rounds: number
    readonly summary: Summary
    readonly freeClient?: FreeClient
  }
  /** The real path on RabbitMQ 4.x with quorum queues, one node, or why it did not run. */
  readonly quorum?: QuorumPath | undefined
  /** The same on a three-node cluster. */
  readonly cluster?: QuorumPath | undefined
  readonly publishing: {
    readonly publishes: number
    readonly rounds: number
    readonly inFlight: Readonly<Record<string, { readonly summary: Summary; readonly freeClient?: FreeClient }>>
  }
  readonly recovery: { readonly faults: number; readonly baseDelayMs: number; readonly medianMs: number; readonly p95Ms: number }
  readonly shutdown: { readonly inFlight: number; readonly handlerMs: number; readonly medianDrainMs: number }
  readonly memory: {
    readonly points: ReadonlyArray<{ readonly reconnects: number; readonly rssMiB: number; readonly heapUsedMiB: number }>
    readonly heapGrowthMiB: number
    readonly activeResourcesGrowth: number
  }
}

const escape = (text: string) => text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")

const barLeft = 200
const barMax = 420
const rowHeight = 26

const labels: Readonly<Record<string, string>> = {
  amqplib: "amqplib (raw)",
  "amqplib-batched": "amqplib, batched acks",
  "amqplib-mandatory": "amqplib, mandatory",
  "amqplib-effect": "amqplib, Effect fibers",
  "example-worker": "example worker (npm start)"
}
const label = (client: string) => labels[client] ?? client

/** One scenario: its title, its note, one bar a client; returns the SVG and the height used. */
const section = (top: number, title: string, note: string, summary: Summary): { svg: string; height: number } => {
  const entries = Object.entries(summary)
  const max = Math.max(...entries.map(([, s]) => s.medianMsgsPerSec))
  const rows = entries.map(([client, s], i) => {
    const y = top + 40 + i * rowHeight
    const w = Math.max(2, (s.medianMsgsPerSec / max) * barMax)
    const ours = client === "effect-rabbitmq-worker" || client === "example-worker"
    return [
      `<text x="${barLeft - 10}" y="${y + 14}" text-anchor="end" font-weight="${ours ? "bold" : "normal"}">${escape(label(client))}</text>`,
      `<rect x="${barLeft}" y="${y}" width="${w.toFixed(1)}" height="18" fill="${ours ? "#4f46e5" : "#9ca3af"}"/>`,
      `<text x="${barLeft + w + 6}" y="${y + 14}">${Math.round(s.medianMsgsPerSec).toLocaleString("en")} msgs/s · ${
        (s.ratioToRaw ?? 0).toFixed(2)
      }x · ${s.medianCpuMicrosPerMessage} µs CPU/msg${
        s.medianBrokerCpuMicrosPerMessage === undefined ? "" : ` · broker ${s.medianBrokerCpuMicrosPerMessage} µs/msg`
      }</text>`
    ].join("\n")
  })
  const svg = [
    `<text x="20" y="${top + 16}" font-size="15" font-weight="bold">${escape(title)}</text>`,
    `<text x="20" y="${top + 32}" fill="#4b5563">${escape(note)}</text>`,
    ...rows
  ].join("\n")
  return { svg, height: 40 + entries.length * rowHeight + 16 }
}

const quorumSection = (part: QuorumPath | undefined, title: string, where: string): Array<[string, string, Summary]> =>
  part === undefined || !("summary" in part) ? [] : [[
    `The real path on RabbitMQ ${part.rabbitmq}, quorum queues, ${title} (median of ${part.rounds} rounds)`,
    `${part.tasks.toLocaleString("en")} tasks, prefetch ${part.prefetch}; task and result queues are quorum queues ${where}${
      freeNote(part.freeClient)
    }`,
    part.summary
  ]]

export const chart = (results: Results): string => {
  const width = 1100
  const sections: Array<[string, string, Summary]> = [
    [
      `Consume only (median of ${results.throughput.rounds} alternating rounds)`,
      `${results.throughput.messages.toLocaleString("en")} small JSON messages, prefetch ${results.throughput.prefetch}: decode, ack; ratio to raw amqplib${
        freeNote(results.throughput.freeClient)
      }`,
      results.throughput.summary
    ],
    [
      `The real path: consume, publish a confirmed result, ack (median of ${results.realPath.rounds} rounds)`,
      `${results.realPath.tasks.toLocaleString("en")} tasks, prefetch ${results.realPath.prefetch}; results persistent, each task acked once its result is confirmed${
        freeNote(results.realPath.freeClient)
      }`,
      results.realPath.summary
    ],
    ...quorumSection(results.quorum, "one node", "on one node"),
    ...quorumSection(results.cluster, "a three-node cluster", "replicated on three nodes (all on this machine)"),
    ...Object.entries(results.publishing.inFlight).map(([n, r]): [string, string, Summary] => [
      `Confirmed publishing, ${n} in flight (median of ${results.publishing.rounds} rounds)`,
      `${results.publishing.publishes.toLocaleString("en")} persistent publishes to a durable queue, each awaited${freeNote(r.freeClient)}`,
      r.summary
    ])
  ]
  let top = 10
  const parts: Array<string> = []
  for (const [title, note, summary] of sections) {
    const { height, svg } = section(top, title, note, summary)
    parts.push(svg)
    top += height
  }
  const first = results.memory.points[0]
  const last = results.memory.points[results.memory.points.length - 1]
  const facts = [
    `Recovery after a server-side connection close (${results.recovery.faults} faults, backoff base ${results.recovery.baseDelayMs} ms): median ${results.recovery.medianMs} ms, p95 ${results.recovery.p95Ms} ms to the next message handled`,
    `Shutdown with ${results.shutdown.inFlight} messages in flight (handlers of ${results.shutdown.handlerMs} ms): SIGTERM to exit ${results.shutdown.medianDrainMs} ms (median)`,
    ...[results.quorum, results.cluster].flatMap((part) =>
      part !== undefined && "skipped" in part ? [`The real path on quorum queues: skipped, ${part.skipped}`] : []
    ),
    `Memory after ${first?.reconnects} / ${last?.reconnects} forced reconnects: heap ${first?.heapUsedMiB} / ${last?.heapUsedMiB} MiB, RSS ${first?.rssMiB} / ${last?.rssMiB} MiB, open handles +${results.memory.activeResourcesGrowth}`,
    `${results.date.slice(0, 10)} · ${results.machine.cpus} × ${results.machine.cpuModel} · ${results.machine.memoryGiB} GiB · Node ${results.machine.node} · ${
      Object.entries(results.versions).map(([name, v]) => `${name} ${v}`).join(" · ")
    }`
  ]
  const factsTop = top + 10
  const height = factsTop + facts.length * 22 + 10
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="Helvetica, Arial, sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
${parts.join("\n")}
${facts.map((fact, i) => `<text x="20" y="${factsTop + i * 22}" fill="#374151" font-size="${i === facts.length - 1 ? 10 : 12}">${escape(fact)}</text>`).join("\n")}
</svg>
`
}
