/**
 * The outcome table: from how a handler ended to ack, requeue or reject.
 */
import { assert, describe, it } from "@effect/vitest"
import { Cause, Data, Exit } from "effect"
import * as Outcome from "../src/Outcome.ts"

class OutOfStock extends Data.TaggedError("OutOfStock")<{ readonly sku: string }> {}

const failed = Exit.fail(new Outcome.HandlerError({ error: new OutOfStock({ sku: "x1" }) }))
const died = Exit.die(new Error("boom"))

describe("Outcome.decide", () => {
  it("success is an ack", () => {
    assert.deepStrictEqual(Outcome.decide(Exit.void, "requeue"), { _tag: "Ack" })
  })
  it("a body that did not decode is rejected whatever the policy", () => {
    const exit = Exit.fail(new Outcome.DecodeError({ reason: "Expected string" }))
    for (const policy of ["requeue", "reject"] as const) {
      const decision = Outcome.decide(exit, policy)
      assert.strictEqual(decision._tag, "Reject")
    }
  })
  it("a typed failure follows the policy and names the error", () => {
    const requeued = Outcome.decide(failed, "requeue")
    assert.strictEqual(requeued._tag, "Requeue")
    assert.include(requeued._tag === "Requeue" ? requeued.reason : "", "OutOfStock")
    assert.strictEqual(Outcome.decide(failed, "reject")._tag, "Reject")
  })
  it("a defect follows the policy", () => {
    assert.strictEqual(Outcome.decide(died, "requeue")._tag, "Requeue")
    const rejected = Outcome.decide(died, "reject")
    assert.strictEqual(rejected._tag, "Reject")
    assert.include(rejected._tag === "Reject" ? rejected.reason : "", "boom")
  })
  it("an interrupted handler is requeued whatever the policy", () => {
    const exit = Exit.failCause(Cause.interrupt())
    assert.strictEqual(Outcome.decide(exit, "reject")._tag, "Requeue")
    assert.strictEqual(Outcome.decide(exit, "requeue")._tag, "Requeue")
  })
})
