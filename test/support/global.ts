/**
 * Run once around the whole suite: afterwards, every queue a test created
 * (their names start with `test-`) is deleted, including the ones a worker
 * declared on its own (a consumer's retry queue of each delay).
 */
import * as amqp from "amqplib"
import { execFileSync } from "node:child_process"

const URL = process.env.AMQP_URL ?? "amqp://guest:guest@127.0.0.1:5672"

export const teardown = async () => {
  let names: Array<string>
  try {
    names = execFileSync("rabbitmqctl", ["list_queues", "name", "--quiet", "--no-table-headers"], { encoding: "utf8", timeout: 30_000 })
      .split("\n").map((line) => line.trim()).filter((name) => name.startsWith("test-"))
  } catch {
    return
  }
  if (names.length === 0) return
  const connection = await amqp.connect(URL)
  connection.on("error", () => {})
  const channel = await connection.createChannel()
  channel.on("error", () => {})
  for (const name of names) await channel.deleteQueue(name).catch(() => undefined)
  await connection.close().catch(() => undefined)
}
