/**
 * RabbitMQ 4.x's message size limit (`max_message_size`, 16 MiB by default
 * since 4.0; 128 MiB before, too large to test cheaply): the broker closes
 * the publisher's channel for the one publish over it. That publish fails for
 * good (406); the publishes caught in the close can be sent again.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Schema } from "effect"
import type * as PublishError from "../../src/PublishError.ts"
import * as broker from "../support/broker.ts"
import * as logs from "../support/logs.ts"
import { startWorker } from "../support/worker.ts"

const Padded = Schema.Struct({ id: Schema.String, pad: Schema.String })

const failure = (exit: Exit.Exit<void, PublishError.PublishError>) =>
  Exit.isFailure(exit) ? Exit.findErrorOption(exit).pipe((o) => o._tag === "Some" ? o.value : undefined) : undefined

describe("RabbitMQ 4.x message size limit", () => {
  it.live("a publish over max_message_size fails for good (406); those caught in its channel's close are retryable", () =>
    Effect.gen(function*() {
      const limit = Number(/\{ok,(\d+)\}/.exec(yield* broker.rabbitmqctl("eval", "application:get_env(rabbit, max_message_size)."))?.[1])
      assert.isTrue(Number.isSafeInteger(limit) && limit <= 32 * 1024 * 1024, `max_message_size ${limit}`)
      const admin = yield* broker.admin
      const queue = yield* admin.queue("oversize", {})
      const { worker } = yield* startWorker([])
      yield* worker.awaitReady
      const exits = yield* Effect.forEach(
        Array.from({ length: 200 }, (_, i) => i),
        (i) =>
          Effect.exit(worker.publisher.publish({
            routingKey: queue,
            schema: Padded,
            body: { id: `m${i}`, pad: i === 100 ? "x".repeat(limit + 1) : "" },
            messageId: `m${i}`
          })),
        { concurrency: "unbounded" }
      )
      const refused = failure(exits[100]!)
      assert.strictEqual(refused?._tag, "PublishUnconfirmed")
      assert.isTrue(refused?._tag === "PublishUnconfirmed" && refused.code === 406 && !refused.isRetryable, refused?.message)
      const caught = exits.filter((_, i) => i !== 100).map(failure).filter((error) => error !== undefined)
      assert.isAbove(caught.length, 0, "no publish was caught in the close: the test proves nothing")
      for (const error of caught) {
        assert.isTrue(error._tag === "PublishUnconfirmed" && error.isRetryable, error.message)
      }
      // The channel is opened again: publishing goes on.
      yield* worker.publisher.publish({ routingKey: queue, schema: Padded, body: { id: "after", pad: "" }, messageId: "after" })
    }).pipe(Effect.provide(logs.capture().layer)))
})
