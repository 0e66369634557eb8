/**
 * The outcome table: from how a handler ended, the policy and the attempt, to
 * ack, retry, requeue, reject or dead-letter.
 */
import { assert, describe, it } from "@effect/vitest"
import { Cause, Data, Duration, Exit } from "effect"
import * as Options from "../src/Options.ts"
import * as Outcome from "../src/Outcome.ts"

class OutOfStock extends Data.TaggedError("OutOfStock")<{ readonly sku: string }> {}

const failed = Exit.fail(new Outcome.HandlerError({ error: new OutOfStock({ sku: "x1" }) }))
const died = Exit.die(new Error("boom"))
const undecodable = Exit.fail(new Outcome.DecodeError({ kind: "InvalidBody", reason: "Expected string" }))
const interrupted = Exit.failCause(Cause.interrupt())
const first = { attempt: 1, redelivered: false }
const retry3 = Outcome.retry({ maxAttempts: 3, delay: "1 second" })
const policies: ReadonlyArray<Outcome.FailurePolicy> = [retry3, "dead-letter", "requeue", "reject"]

describe("Outcome.decide", () => {
  it("success is an ack, whatever the policy", () => {
    for (const policy of policies) assert.deepStrictEqual(Outcome.decide(Exit.void, policy, first), { _tag: "Ack" })
  })

  it("a message that does not decode is dead-lettered at once (rejected under the reject policy)", () => {
    for (const policy of [retry3, "dead-letter", "requeue"] as const) {
      const decision = Outcome.decide(undecodable, policy, first)
      assert.deepStrictEqual(decision, {
        _tag: "DeadLetter",
        failure: { tag: "InvalidBody", message: "Expected string", attempts: 1 }
      })
    }
    assert.strictEqual(Outcome.decide(undecodable, "reject", first)._tag, "Reject")
  })

  it("retry: retried until the last attempt, then dead-lettered with the error's tag", () => {
    assert.deepStrictEqual(Outcome.decide(failed, retry3, first), {
      _tag: "Retry",
      attempt: 1,
      reason: 'OutOfStock: {"sku":"x1"}'
    })
    assert.strictEqual(Outcome.decide(failed, retry3, { attempt: 2, redelivered: false })._tag, "Retry")
    const last = Outcome.decide(failed, retry3, { attempt: 3, redelivered: false })
    assert.strictEqual(last._tag, "DeadLetter")
    assert.deepStrictEqual(last._tag === "DeadLetter" ? last.failure : undefined, {
      tag: "OutOfStock",
      message: '{"sku":"x1"}',
      attempts: 3
    })
  })

  it("a defect is a failure like any other, tagged Defect", () => {
    assert.strictEqual(Outcome.decide(died, retry3, first)._tag, "Retry")
    const parked = Outcome.decide(died, "dead-letter", first)
    assert.deepStrictEqual(parked, { _tag: "DeadLetter", failure: { tag: "Defect", message: "boom", attempts: 1 } })
  })

  it("requeue: once; a redelivered message that fails again is dead-lettered, so it cannot loop", () => {
    assert.strictEqual(Outcome.decide(failed, "requeue", first)._tag, "Requeue")
    assert.strictEqual(Outcome.decide(failed, "requeue", { attempt: 1, redelivered: true })._tag, "DeadLetter")
  })

  it("reject and dead-letter policies", () => {
    assert.strictEqual(Outcome.decide(failed, "reject", first)._tag, "Reject")
    assert.strictEqual(Outcome.decide(failed, "dead-letter", first)._tag, "DeadLetter")
  })

  it("a handler the worker interrupted is requeued, whatever the policy", () => {
    for (const policy of policies) {
      assert.strictEqual(Outcome.decide(interrupted, policy, { ...first, interruptedByWorker: true })._tag, "Requeue")
    }
  })

  it("a handler that interrupted itself failed: settled by the policy, never requeued at once", () => {
    assert.deepStrictEqual(Outcome.decide(interrupted, retry3, first), {
      _tag: "Retry",
      attempt: 1,
      reason: "Interrupted: the handler interrupted itself"
    })
    assert.strictEqual(Outcome.decide(interrupted, retry3, { attempt: 3, redelivered: true })._tag, "DeadLetter")
    assert.strictEqual(Outcome.decide(interrupted, "dead-letter", first)._tag, "DeadLetter")
    assert.strictEqual(Outcome.decide(interrupted, "reject", first)._tag, "Reject")
    assert.strictEqual(Outcome.decide(interrupted, "requeue", { attempt: 1, redelivered: true })._tag, "DeadLetter")
  })

  it("any value a handler fails or dies with is described without throwing", () => {
    // No prototype and a BigInt field: neither JSON nor String can print it.
    const bare: Record<string, unknown> = Object.create(null)
    bare["n"] = 1n
    class Hostile extends Error {
      override get message(): string {
        throw new Error("no message for you")
      }
    }
    const getterTag = {
      get _tag(): string {
        throw new Error("no tag")
      },
      get cause(): unknown {
        throw new Error("no cause")
      }
    }
    const cases: ReadonlyArray<[unknown, string, string]> = [
      [bare, "object", "(an error that cannot be described)"],
      [new Hostile(), "Error", "(an error that cannot be described)"],
      [getterTag, "object", "(an error that cannot be described)"],
      [null, "object", "null"],
      [42n, "bigint", "42"],
      [Symbol.for("s"), "symbol", "Symbol(s)"]
    ]
    for (const [value, tag, message] of cases) {
      for (const exit of [Exit.fail(new Outcome.HandlerError({ error: value })), Exit.die(value)]) {
        const decision = Outcome.decide(exit, "dead-letter", first)
        const expectedTag = Exit.isFailure(exit) && Cause.hasDies(exit.cause) ? "Defect" : tag
        assert.deepStrictEqual(decision, { _tag: "DeadLetter", failure: { tag: expectedTag, message, attempts: 1 } })
      }
      assert.isString(Outcome.describe(value))
    }
  })

  it("a handler timeout is a failure tagged HandlerTimeout", () => {
    const timedOut = Exit.fail(new Outcome.HandlerError({ error: new Outcome.HandlerTimeout({ timeout: Duration.seconds(30) }) }))
    const decision = Outcome.decide(timedOut, "dead-letter", { attempt: 2, redelivered: true })
    assert.deepStrictEqual(decision, {
      _tag: "DeadLetter",
      failure: { tag: "HandlerTimeout", message: "the handler did not finish within 30s", attempts: 2 }
    })
  })

  it("a transient failure (the infrastructure's, not the message's) is requeued once the publisher is ready, and is no attempt", () => {
    class Unavailable extends Data.TaggedError("Unavailable")<{}> {
      readonly [Outcome.TransientTypeId] = true
    }
    class Wrapped extends Data.TaggedError("Wrapped")<{ readonly cause: unknown }> {}
    const transient: ReadonlyArray<Exit.Exit<unknown, Outcome.HandlerError<unknown>>> = [
      Exit.fail(new Outcome.HandlerError({ error: new Unavailable() })),
      Exit.fail(new Outcome.HandlerError({ error: new Wrapped({ cause: new Unavailable() }) })),
      Exit.die(new Unavailable())
    ]
    for (const exit of transient) {
      // Even at the last attempt, under every policy.
      for (const policy of policies) {
        const decision = Outcome.decide(exit, policy, { attempt: 3, redelivered: true })
        assert.strictEqual(decision._tag, "Requeue")
        assert.isTrue(decision._tag === "Requeue" && decision.whenPublisherReady === true)
      }
    }
    assert.isFalse(Outcome.isTransient(new OutOfStock({ sku: "x" })))
    assert.isFalse(Outcome.isTransient(undefined))
  })
})

describe("Outcome.check", () => {
  const problems = (policy: Outcome.FailurePolicy) => {
    const checker = new Options.Checker()
    Outcome.check(policy, checker)
    return checker.problems.map((p) => p.option)
  }
  it("a retry needs a positive integer maxAttempts and a finite delay above 0", () => {
    assert.deepStrictEqual(problems(retry3), [])
    assert.deepStrictEqual(problems(Outcome.retry({ maxAttempts: 0, delay: "1 second" })), ["onFailure.maxAttempts"])
    assert.deepStrictEqual(problems(Outcome.retry({ maxAttempts: 2.5, delay: "1 second" })), ["onFailure.maxAttempts"])
    assert.deepStrictEqual(problems(Outcome.retry({ maxAttempts: 3, delay: 0 })), ["onFailure.delay"])
    assert.deepStrictEqual(problems(Outcome.retry({ maxAttempts: 3, delay: -5 })), ["onFailure.delay"])
    assert.deepStrictEqual(problems(Outcome.retry({ maxAttempts: 3, delay: "forever" as Duration.Input })), ["onFailure.delay"])
    assert.deepStrictEqual(problems("nonsense" as Outcome.FailurePolicy), ["onFailure"])
  })
})

describe("Outcome.attemptOf", () => {
  it("is 1 without x-death, and counts the rejections from this queue", () => {
    assert.strictEqual(Outcome.attemptOf(undefined, "q"), 1)
    assert.strictEqual(Outcome.attemptOf({}, "q"), 1)
    const headers = {
      "x-death": [
        { queue: "q.retry", reason: "expired", count: 2 },
        { queue: "q", reason: "rejected", count: 2 },
        { queue: "other", reason: "rejected", count: 7 }
      ]
    }
    assert.strictEqual(Outcome.attemptOf(headers, "q"), 3)
  })
  it("ignores a malformed x-death header", () => {
    assert.strictEqual(Outcome.attemptOf({ "x-death": "nonsense" }, "q"), 1)
    assert.strictEqual(Outcome.attemptOf({ "x-death": [null, 3, { queue: "q", reason: "rejected", count: "2" }] }, "q"), 1)
  })
})

describe("Outcome delivery counts", () => {
  it("a broker's x-delivery-count counts only failures from RabbitMQ 4.3 on", () => {
    for (const version of ["4.3.0", "4.3.6", "4.10.1", "5.0.0"]) assert.isTrue(Outcome.countsFailedDeliveries(version), version)
    for (const version of ["3.10.8", "3.13.7", "4.0.5", "4.2.1", "", "unknown"]) assert.isFalse(Outcome.countsFailedDeliveries(version), version)
  })

  it("failed deliveries come from x-delivery-count, and each is an attempt", () => {
    assert.strictEqual(Outcome.failedDeliveriesOf(undefined), 0)
    assert.strictEqual(Outcome.failedDeliveriesOf({ "x-delivery-count": 2 }), 2)
    assert.strictEqual(Outcome.failedDeliveriesOf({ "x-delivery-count": "2" }), 0)
    assert.strictEqual(Outcome.failedDeliveriesOf({ "x-delivery-count": -1 }), 0)
    assert.strictEqual(Outcome.attemptOf({ "x-delivery-count": 2 }, "q", 2), 3)
    // A retried copy on its third attempt that then crashed the worker once.
    assert.strictEqual(Outcome.attemptOf({ [Outcome.attemptHeader]: 3 }, "q", 1), 4)
    // Retried by an earlier version (two rejections through the retry queue), then one crash.
    const legacy = { "x-death": [{ queue: "q", reason: "rejected", count: 2 }] }
    assert.strictEqual(Outcome.attemptOf(legacy, "q", 1), 4)
  })

  it("a message past its attempts without ever being settled is parked (rejected under reject) before it runs", () => {
    const retry = Outcome.retry({ maxAttempts: 3, delay: "1 second" })
    assert.isUndefined(Outcome.unsettled(retry, 3, 2))
    // Past maxAttempts only through a retry of an older policy: it still runs.
    assert.isUndefined(Outcome.unsettled(retry, 4, 0))
    const parked = Outcome.unsettled(retry, 4, 3)
    assert.strictEqual(parked?._tag, "DeadLetter")
    if (parked?._tag === "DeadLetter") {
      assert.strictEqual(parked.failure.tag, "DeliveryLimit")
      assert.strictEqual(parked.failure.attempts, 3)
    }
    const limit = Outcome.unsettledDeliveryLimit
    for (const policy of ["dead-letter", "requeue"] as const) {
      assert.isUndefined(Outcome.unsettled(policy, limit, limit - 1))
      assert.strictEqual(Outcome.unsettled(policy, limit + 1, limit)?._tag, "DeadLetter")
    }
    assert.strictEqual(Outcome.unsettled("reject", limit + 1, limit)?._tag, "Reject")
  })
})
