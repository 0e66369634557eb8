import { defineConfig, type TestProjectInlineConfiguration } from "vitest/config"

/**
 * The suite runs once per broker: the machine's RabbitMQ 3.10 on 5672, then
 * RabbitMQ 4.3 (a single node on 5680; with test/rabbitmq4/, what only 4.3
 * does), then the cluster tests on a three-node
 * 4.3 cluster (5681-5683). The 4.3 brokers run in a chroot that
 * scripts/rabbitmq4.sh builds once and starts when down.
 */
const rabbitmq4 = "bash scripts/rabbitmq4.sh"

// Tests that talk to no broker run once, in the first project.
const brokerless = ["test/Decode.test.ts", "test/Outcome.test.ts", "test/Package.test.ts", "test/Reconnect.test.ts", "test/Stalls.test.ts", "test/Errors.test.ts"]

const project = (
  name: string,
  groupOrder: number,
  include: ReadonlyArray<string>,
  exclude: ReadonlyArray<string>,
  env: Record<string, string>
): TestProjectInlineConfiguration => ({
  extends: true,
  test: {
    name,
    include: [...include],
    exclude: [...exclude],
    env,
    sequence: { groupOrder },
    // Starts the project's broker; afterwards deletes whatever queues the
    // tests' workers declared on their own.
    globalSetup: ["test/support/global.ts"]
  }
})

export default defineConfig({
  test: {
    // Broker tests inject real faults (heartbeat timeouts take seconds).
    testTimeout: 60_000,
    hookTimeout: 30_000,
    // Files share one broker: running them one at a time keeps fault injection
    // (stop_app, close_all_connections) from reaching another file's test.
    fileParallelism: false,
    // Worker logs are printed only for the tests that fail.
    silent: "passed-only",
    // The JSON report is what .ci/run counts passed and failed tests from.
    reporters: ["default", ["json", { outputFile: ".vitest-report.json" }]],
    projects: [
      project("rabbitmq-3.10", 0, ["test/*.test.ts"], [], {}),
      project("rabbitmq-4.3", 1, ["test/*.test.ts", "test/rabbitmq4/*.test.ts"], brokerless, {
        AMQP_URL: "amqp://guest:guest@127.0.0.1:5680",
        RABBITMQCTL: `${rabbitmq4} ctl single`,
        BROKER_SETUP: `${rabbitmq4} up`
      }),
      project("cluster-4.3", 2, ["test/cluster/*.test.ts"], [], {
        AMQP_URL: "amqp://guest:guest@127.0.0.1:5681,amqp://guest:guest@127.0.0.1:5682,amqp://guest:guest@127.0.0.1:5683",
        RABBITMQCTL: `${rabbitmq4} ctl a`,
        BROKER_SETUP: `${rabbitmq4} up`
      })
    ]
  }
})
