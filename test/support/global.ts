/**
 * Run once around each project of the suite (one project per broker, see
 * vitest.config.ts). Before: the project's broker is made to run (the 4.3
 * brokers are built and started by scripts/rabbitmq4.sh). After: every queue a
 * test created (their names start with `test-`) is deleted, including the
 * ones a worker declared on its own (a consumer's retry queue of each delay).
 */
import * as amqp from "amqplib"
import { execFileSync } from "node:child_process"
import type { TestProject } from "vitest/node"

const settingsOf = (project: TestProject) => {
  const env = (project.config.env ?? {}) as Record<string, string | undefined>
  const urls = (env.AMQP_URL ?? process.env.AMQP_URL ?? "amqp://guest:guest@127.0.0.1:5672").split(",").map((u) => u.trim())
  const ctl = (env.RABBITMQCTL ?? "rabbitmqctl").split(" ").filter((word) => word.length > 0)
  return { urls, ctl, setup: env.BROKER_SETUP }
}

export default (project: TestProject) => {
  const { urls, ctl, setup } = settingsOf(project)
  if (setup !== undefined) {
    const [command, ...args] = setup.split(" ")
    execFileSync(command!, args, { stdio: "inherit", timeout: 15 * 60_000 })
  }
  return async () => {
    let names: Array<string>
    try {
      const [command, ...prefix] = ctl
      names = execFileSync(command!, [...prefix, "list_queues", "name", "--quiet", "--no-table-headers"], { encoding: "utf8", timeout: 30_000 })
        .split("\n").map((line) => line.trim()).filter((name) => name.startsWith("test-"))
    } catch {
      return
    }
    if (names.length === 0) return
    // Any node of a cluster can delete any queue; the first that answers does.
    for (const url of urls) {
      try {
        const connection = await amqp.connect(url)
        connection.on("error", () => {})
        const channel = await connection.createChannel()
        channel.on("error", () => {})
        for (const name of names) await channel.deleteQueue(name).catch(() => undefined)
        await connection.close().catch(() => undefined)
        return
      } catch {
        continue
      }
    }
  }
}
