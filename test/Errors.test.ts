/**
 * The error families: each says whether retrying can help (`isRetryable`),
 * the broker's reply codes are classified in one place, and a publish error
 * is transient for the outcome rules exactly when it is retryable.
 */
import { assert, describe, it } from "@effect/vitest"
import { Duration } from "effect"
import * as Channel from "../src/Channel.ts"
import { refusedBy } from "../src/internal/confirms.ts"
import * as Connection from "../src/Connection.ts"
import * as Outcome from "../src/Outcome.ts"
import * as Publisher from "../src/Publisher.ts"
import * as Topology from "../src/Topology.ts"

describe("Errors", () => {
  const publishErrors: ReadonlyArray<[Publisher.PublishError, boolean]> = [
    [new Publisher.PublishNacked({ messageId: "m" }), false],
    [new Publisher.PublishUnroutable({ messageId: "m", exchange: "x", routingKey: "k" }), false],
    [new Publisher.PublishRefused({ messageId: "m", reason: "too long" }), false],
    [new Publisher.PublishEncodeError({ messageId: "m", reason: "bad" }), false],
    [new Publisher.PublishTimeout({ messageId: "m", timeout: Duration.seconds(1), sent: true }), true],
    [new Publisher.PublishBufferFull({ messageId: "m", maxWaiting: 1 }), true],
    [new Publisher.PublishUnconfirmed({ messageId: "m", reason: "connection lost" }), true],
    [new Publisher.PublishUnconfirmed({ messageId: "m", reason: "closed", code: 320 }), true],
    [new Publisher.PublishUnconfirmed({ messageId: "m", reason: "no exchange", code: 404 }), false]
  ]

  it("a publish error says whether publishing again can help, and is transient exactly then", () => {
    for (const [error, retryable] of publishErrors) {
      assert.strictEqual(error.isRetryable, retryable, error.message)
      assert.strictEqual(Publisher.isRetryable(error), retryable)
      assert.strictEqual(Outcome.isTransient(error), retryable, error.message)
    }
  })

  it("reply codes: a lost connection, a node stopping, a lock, a resource or internal error can pass; the rest is the broker's answer", () => {
    const retryable = (code: number | undefined) =>
      new Channel.ChannelError({ operation: "declare", code, reason: "" }).isRetryable
    for (const code of [undefined, 320, 405, 506, 541]) assert.isTrue(retryable(code), String(code))
    for (const code of [311, 312, 403, 404, 406, 501, 502, 503, 504, 505, 530, 540]) assert.isFalse(retryable(code), String(code))
  })

  it("connections can always be tried again; a topology conflict never", () => {
    assert.isTrue(new Connection.ConnectError({ server: "s", reason: "refused" }).isRetryable)
    assert.isTrue(new Connection.ConnectionLost({ server: "s", reason: "reset" }).isRetryable)
    assert.isTrue(new Channel.ChannelClosed({ code: 406, reason: "unknown delivery tag" }).isRetryable)
    assert.isFalse(new Topology.TopologyConflict({ kind: "queue", name: "q", argument: "x-queue-type", reason: "" }).isRetryable)
  })

  it("a channel the broker closed for one publish: its words say which publishes it refused (the others were only caught in it)", () => {
    const toX = { exchange: "x", size: 10 }
    const toDefault = { exchange: "", size: 10 }
    const big = { exchange: "", size: 200 }
    // RabbitMQ's own texts (3.10 and 4.x).
    const noExchange = refusedBy("Channel closed by server: 404 (NOT-FOUND) with message \"NOT_FOUND - no exchange 'x' in vhost '/'\"")
    assert.isTrue(noExchange?.(toX))
    assert.isFalse(noExchange?.(toDefault))
    const internal = refusedBy("ACCESS_REFUSED - cannot publish to internal exchange 'it''s' in vhost 'v'")
    assert.isTrue(internal?.({ exchange: "it's", size: 1 }))
    assert.isFalse(internal?.(toX))
    assert.isTrue(refusedBy("ACCESS_REFUSED - access to exchange 'x' in vhost '/' refused for user 'u'")?.(toX))
    const tooLarge = refusedBy("PRECONDITION_FAILED - message size 200 is larger than configured max size 100")
    assert.isTrue(tooLarge?.(big))
    assert.isFalse(tooLarge?.(toDefault))
    assert.isTrue(refusedBy("PRECONDITION_FAILED - message size 200 is larger than max size 100")?.(big))
    // Words that do not say: every publish keeps the broker's code.
    assert.isUndefined(refusedBy("PRECONDITION_FAILED - invalid expiration"))
  })
})
