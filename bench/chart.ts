/**
 * Renders the benchmark results as an SVG for the README: consumer throughput
 * per client (median msgs/s, ratio to raw amqplib, CPU per message), and the
 * recovery, shutdown and memory figures, with the date, machine and versions.
 */

interface Results {
  readonly date: string
  readonly machine: { readonly cpus: number; readonly cpuModel: string; readonly memoryGiB: number; readonly node: string }
  readonly versions: Readonly<Record<string, string>>
  readonly throughput: {
    readonly messages: number
    readonly prefetch: number
    readonly rounds: number
    readonly summary: Readonly<
      Record<string, { medianMsgsPerSec: number; medianCpuMicrosPerMessage: number; ratioToRaw?: number }>
    >
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

export const chart = (results: Results): string => {
  const width = 980
  const barLeft = 200
  const barMax = 420
  const rowHeight = 30
  const entries = Object.entries(results.throughput.summary)
  const max = Math.max(...entries.map(([, s]) => s.medianMsgsPerSec))
  const top = 70
  const rows = entries.map(([client, s], i) => {
    const y = top + i * rowHeight
    const w = Math.max(2, (s.medianMsgsPerSec / max) * barMax)
    const ours = client === "effect-rabbitmq-worker"
    const label = client === "amqplib-batched" ? "amqplib, batched acks" : client === "amqplib" ? "amqplib (raw)" : client
    return [
      `<text x="${barLeft - 10}" y="${y + 15}" text-anchor="end" font-weight="${ours ? "bold" : "normal"}">${escape(label)}</text>`,
      `<rect x="${barLeft}" y="${y}" width="${w.toFixed(1)}" height="20" fill="${ours ? "#4f46e5" : "#9ca3af"}"/>`,
      `<text x="${barLeft + w + 6}" y="${y + 15}">${Math.round(s.medianMsgsPerSec).toLocaleString("en")} msgs/s · ${
        (s.ratioToRaw ?? 0).toFixed(2)
      }x · ${s.medianCpuMicrosPerMessage} µs CPU/msg</text>`
    ].join("\n")
  })
  const first = results.memory.points[0]
  const last = results.memory.points[results.memory.points.length - 1]
  const facts = [
    `Recovery after a server-side connection close (${results.recovery.faults} faults, backoff base ${results.recovery.baseDelayMs} ms): median ${results.recovery.medianMs} ms, p95 ${results.recovery.p95Ms} ms to the next message handled`,
    `Shutdown with ${results.shutdown.inFlight} messages in flight (handlers of ${results.shutdown.handlerMs} ms): SIGTERM to exit ${results.shutdown.medianDrainMs} ms (median)`,
    `Memory after ${first?.reconnects} / ${last?.reconnects} forced reconnects: heap ${first?.heapUsedMiB} / ${last?.heapUsedMiB} MiB, RSS ${first?.rssMiB} / ${last?.rssMiB} MiB, open handles +${results.memory.activeResourcesGrowth}`,
    `${results.date.slice(0, 10)} · ${results.machine.cpus} × ${results.machine.cpuModel} · ${results.machine.memoryGiB} GiB · Node ${results.machine.node} · ${
      Object.entries(results.versions).map(([name, v]) => `${name} ${v}`).join(" · ")
    }`
  ]
  const factsTop = top + entries.length * rowHeight + 20
  const height = factsTop + facts.length * 22 + 10
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="Helvetica, Arial, sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="20" y="28" font-size="16" font-weight="bold">Consumer throughput (median of ${results.throughput.rounds} alternating rounds)</text>
<text x="20" y="48" fill="#4b5563">${results.throughput.messages.toLocaleString("en")} small JSON messages pre-filled, prefetch ${results.throughput.prefetch}, broker on the same machine; ratio to raw amqplib (per-message ack)</text>
${rows.join("\n")}
${facts.map((fact, i) => `<text x="20" y="${factsTop + i * 22}" fill="#374151" font-size="${i === facts.length - 1 ? 10 : 12}">${escape(fact)}</text>`).join("\n")}
</svg>
`
}
