import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // Deletes whatever queues the tests' workers declared on their own.
    globalSetup: ["test/support/global.ts"],
    // Broker tests inject real faults (heartbeat timeouts take seconds).
    testTimeout: 60_000,
    hookTimeout: 30_000,
    // Files share one broker: running them one at a time keeps fault injection
    // (stop_app, close_all_connections) from reaching another file's test.
    fileParallelism: false,
    // Worker logs are printed only for the tests that fail.
    silent: "passed-only",
    // The JSON report is what .ci/run counts passed and failed tests from.
    reporters: ["default", ["json", { outputFile: ".vitest-report.json" }]]
  }
})
