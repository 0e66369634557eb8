/**
 * The dead-letter queue for the people who run the worker: list the parked
 * messages with their reasons, show one, replay (confirmed, removed only
 * once confirmed, attempts starting again), purge; the library functions and
 * the `npm run dlq` command, against the broker.
 */
import { assert, describe, it } from "@effect/vitest"
import { Data, Effect, Exit, Schema } from "effect"
import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import * as Consumer from "../src/Consumer.ts"
import * as DeadLetters from "../src/DeadLetters.ts"
import type { Message } from "../src/Message.ts"
import * as Topology from "../src/Topology.ts"
import * as broker from "./support/broker.ts"
import { startWorker } from "./support/worker.ts"

const root = fileURLToPath(new URL("..", import.meta.url))
const Task = Schema.Struct({ id: Schema.String })
class NotYet extends Data.TaggedError("NotYet")<{}> {}
const connection = { url: broker.url }

/** `npm run dlq -- ...`, run as node itself: its exit code, stdout and stderr. */
const dlq = (...args: ReadonlyArray<string>) =>
  Effect.callback<{ readonly code: number | null; readonly stdout: string; readonly stderr: string }>((resume) => {
    const child = spawn(process.execPath, ["src/dlq-cli.ts", ...args], {
      cwd: root,
      env: { ...process.env, AMQP_URL: broker.URL },
      stdio: ["ignore", "pipe", "pipe"]
    })
    let stdout = ""
    let stderr = ""
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()))
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
    child.on("exit", (code) => resume(Effect.succeed({ code, stdout, stderr })))
  })

/**
 * A consumer of a queue bound to a topic exchange whose handler fails
 * (dead-letter policy) until `fixed` is set, with `parked` messages parked.
 */
const withParked = (ids: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const admin = yield* broker.admin
    const exchange = yield* admin.exchange("dl")
    const queue = yield* admin.queue("dl")
    const state = { fixed: false, handled: [] as Array<{ id: string; attempt: number; exchange: string }> }
    const consumer = Consumer.make({
      queue,
      schema: Task,
      onFailure: "dead-letter",
      handler: (task, message: Message) =>
        state.fixed
          ? Effect.sync(() => state.handled.push({ id: task.id, attempt: message.attempt, exchange: message.exchange }))
          : Effect.fail(new NotYet())
    })
    const { worker } = yield* startWorker([consumer], {
      topology: Topology.make({ exchanges: [{ name: exchange, type: "topic" }], bindings: [{ exchange, queue, routingKey: "job.*" }] })
    })
    yield* worker.awaitReady
    yield* Effect.promise(async () => {
      for (const id of ids) {
        admin.channel.publish(exchange, "job.run", Buffer.from(JSON.stringify({ id })), { messageId: id, persistent: true, appId: "jobs" })
      }
      await admin.channel.waitForConfirms()
    })
    yield* broker.eventually("parked", admin.ready(`${queue}.dlq`), (n) => n === ids.length)
    return { admin, exchange, queue, state }
  })

describe("DeadLetters", () => {
  it.live("list and show read the parked messages with their reasons, and take none", () =>
    Effect.gen(function*() {
      const { admin, exchange, queue } = yield* withParked(["a", "b", "c"])
      const parked = yield* DeadLetters.list(connection, queue)
      assert.deepStrictEqual(parked.map((p) => p.messageId), ["a", "b", "c"])
      assert.deepStrictEqual([...new Set(parked.map((p) => p.reason))], ["NotYet"])
      assert.deepStrictEqual([...new Set(parked.map((p) => `${p.originalExchange}/${p.originalRoutingKey}`))], [`${exchange}/job.run`])
      assert.deepStrictEqual(parked.map((p) => p.attempts), [1, 1, 1])
      const one = yield* DeadLetters.show(connection, `${queue}.dlq`, "b")
      assert.strictEqual(one?.body, JSON.stringify({ id: "b" }))
      assert.strictEqual(one?.properties["appId"], "jobs")
      assert.isUndefined(yield* DeadLetters.show(connection, queue, "nope"))
      // Still all there, in order.
      assert.strictEqual(yield* admin.ready(`${queue}.dlq`), 3)
      assert.deepStrictEqual((yield* DeadLetters.list(connection, queue, 2)).map((p) => p.messageId), ["a", "b"])
    }))

  it.live("replay sends chosen messages back to their first route, confirmed, with their attempts starting again; the rest stay parked", () =>
    Effect.gen(function*() {
      const { admin, exchange, queue, state } = yield* withParked(["a", "b", "c", "d"])
      state.fixed = true
      const one = yield* DeadLetters.replay(connection, queue, { ids: ["c"] })
      assert.deepStrictEqual(one, { replayed: 1, unroutable: 0, seen: 3 })
      yield* broker.eventually("c handled", Effect.sync(() => state.handled), (h) => h.length === 1)
      assert.deepStrictEqual(state.handled, [{ id: "c", attempt: 1, exchange }])
      assert.deepStrictEqual((yield* DeadLetters.list(connection, queue)).map((p) => p.messageId), ["a", "b", "d"])
      const seen: Array<number> = []
      const rest = yield* DeadLetters.replay(connection, queue, { all: true, onProgress: (p) => seen.push(p.replayed) })
      assert.strictEqual(rest.replayed, 3)
      assert.deepStrictEqual(seen, [1, 2, 3])
      yield* broker.eventually("all handled", Effect.sync(() => state.handled.map((h) => h.id).sort()), (ids) => ids.length === 4)
      assert.strictEqual(yield* admin.ready(`${queue}.dlq`), 0)
      yield* broker.eventually("queue settled", broker.queueCounts(queue), (c) => c.ready === 0 && c.unacked === 0)
    }))

  it.live("a message whose route is gone stays parked; purge empties the dead-letter queue", () =>
    Effect.gen(function*() {
      const { admin, exchange, queue } = yield* withParked(["x", "y"])
      // Unbind: the original route leads nowhere now.
      yield* Effect.promise(() => admin.channel.unbindQueue(queue, exchange, "job.*"))
      const result = yield* DeadLetters.replay(connection, queue, { all: true })
      assert.deepStrictEqual(result, { replayed: 0, unroutable: 2, seen: 2 })
      assert.strictEqual(yield* admin.ready(`${queue}.dlq`), 2)
      assert.strictEqual(yield* DeadLetters.purge(connection, queue), 2)
      assert.strictEqual(yield* admin.ready(`${queue}.dlq`), 0)
    }))

  it.live("a replay stopped half-way loses nothing and can be run again", () =>
    Effect.gen(function*() {
      const ids = Array.from({ length: 300 }, (_, i) => `m${i}`)
      const { admin, queue, state } = yield* withParked(ids)
      state.fixed = true
      // Stopped (interrupted) after 100: what was not confirmed and acked is still parked.
      const first = yield* DeadLetters.replay(connection, queue, { all: true, limit: 100 })
      assert.strictEqual(first.replayed, 100)
      assert.strictEqual(yield* admin.ready(`${queue}.dlq`), 200)
      // Stopped by a crash half-way through the next run.
      const crashed = yield* Effect.exit(DeadLetters.replay(connection, queue, {
        all: true,
        onProgress: (p) => {
          if (p.replayed === 50) throw new Error("stopped")
        }
      }))
      assert.isTrue(Exit.isFailure(crashed))
      // At least the 50 it reported went back (copies in flight with them may have too); the rest is still parked.
      const left = yield* admin.ready(`${queue}.dlq`)
      assert.isAtMost(left, 150)
      assert.isAtLeast(left, 50)
      const again = yield* DeadLetters.replay(connection, queue, { all: true })
      assert.isAtLeast(again.replayed, 1)
      yield* broker.eventually("every message handled", Effect.sync(() => new Set(state.handled.map((h) => h.id)).size), (n) => n === 300, 30_000)
      assert.strictEqual(yield* admin.ready(`${queue}.dlq`), 0)
    }))

  it.live("npm run dlq: list, show, replay and purge from the command line; a wrong command line exits 2 with the usage", () =>
    Effect.gen(function*() {
      const { admin, queue, state } = yield* withParked(["k1", "k2", "k3"])
      const listed = yield* dlq("list", queue)
      assert.strictEqual(listed.code, 0, listed.stderr)
      assert.include(listed.stdout, `3 parked message(s) in ${queue}.dlq`)
      assert.match(listed.stdout, /k1\s+NotYet\s+attempts 1/)
      const json = yield* dlq("list", queue, "--json")
      assert.deepStrictEqual(json.stdout.trim().split("\n").map((line) => JSON.parse(line).messageId), ["k1", "k2", "k3"])
      const shown = yield* dlq("show", queue, "k2")
      assert.include(shown.stdout, `body:       {"id":"k2"}`)
      assert.strictEqual((yield* dlq("show", queue, "missing")).code, 1)
      state.fixed = true
      const replayed = yield* dlq("replay", queue, "--id", "k1")
      assert.include(replayed.stdout, "replayed 1 message(s)")
      yield* broker.eventually("k1 handled", Effect.sync(() => state.handled.map((h) => h.id)), (h) => h.includes("k1"))
      const bad = yield* dlq("replay", queue)
      assert.strictEqual(bad.code, 2)
      assert.include(bad.stderr, "usage:")
      assert.strictEqual((yield* dlq("purge", queue)).code, 2)
      // Asked for, the usage is an answer, not an error: stdout, exit 0, nothing done.
      for (const help of [["--help"], ["-h"], ["help"], ["purge", queue, "--yes", "--help"]]) {
        const asked = yield* dlq(...help)
        assert.strictEqual(asked.code, 0, help.join(" "))
        assert.include(asked.stdout, "usage:")
      }
      const purged = yield* dlq("purge", queue, "--yes")
      assert.include(purged.stdout, "purged 2 message(s)")
      assert.strictEqual(yield* admin.ready(`${queue}.dlq`), 0)
      const unreachable = yield* Effect.callback<number | null>((resume) => {
        const child = spawn(process.execPath, ["src/dlq-cli.ts", "list", queue], {
          cwd: root,
          env: { ...process.env, AMQP_URL: "amqp://guest:guest@127.0.0.1:1" },
          stdio: "ignore"
        })
        child.on("exit", (code) => resume(Effect.succeed(code)))
      })
      assert.strictEqual(unreachable, 1)
    }))
})

