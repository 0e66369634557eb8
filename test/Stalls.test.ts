/**
 * The chaos run's stall measure (chaos/stalls.ts), on records whose stalls
 * are known: a gap with tasks waiting is a stall from when the first of them
 * was confirmed; a gap with nothing to do is none.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Stalls from "../chaos/stalls.ts"

describe("chaos stalls", () => {
  it("a gap while confirmed tasks wait is a stall from the first waiting confirm; an idle gap is none", () => {
    // Tasks every 10 ms until 1000, then nothing handled until 7000 although
    // tasks were confirmed from 1005 on; then an idle gap (nothing confirmed) until 20000.
    const confirmed = [...Array.from({ length: 100 }, (_, i) => i * 10), 1005, 1010, 19_000]
    const handled = [...Array.from({ length: 100 }, (_, i) => i * 10 + 5), 7000, 7010, 20_000]
    const found = Stalls.stalls(handled, handled, confirmed)
    assert.deepStrictEqual(found, [{ from: 1005, to: 7000 }, { from: 19_000, to: 20_000 }])
    assert.strictEqual(Stalls.longestIn(found, 0, Infinity), 5995)
    assert.strictEqual(Stalls.longestIn(found, 6000, 6500), 5995)
    assert.strictEqual(Stalls.longestIn(found, 8000, 18_000), 0)
  })

  it("a duplicate handling ends a gap but does not count a task as handled twice", () => {
    const found = Stalls.stalls([0, 3000], [0], [0, 100])
    assert.deepStrictEqual(found, [{ from: 100, to: 3000 }])
  })

  it("the part of a stall while the broker withheld another client's confirms is cut out", () => {
    const found = [{ from: 1000, to: 7000 }]
    assert.deepStrictEqual(Stalls.outside(found, [{ from: 2000, to: 6500 }]), [{ from: 1000, to: 2000 }, { from: 6500, to: 7000 }])
    assert.deepStrictEqual(Stalls.outside(found, [{ from: 0, to: 8000 }]), [])
    assert.deepStrictEqual(Stalls.outside(found, [{ from: 8000, to: 9000 }]), found)
    assert.strictEqual(Stalls.longestIn(Stalls.outside(found, [{ from: 1500, to: 2000 }, { from: 1800, to: 3000 }]), 0, Infinity), 4000)
  })

  it("the story of a stall: the events from before it to its end, in time order, the nearest kept", () => {
    const stall = { from: 20_000, to: 28_000 }
    const events = [
      { at: 27_000, who: "worker 1", text: "connected to 127.0.0.1:5672" },
      { at: 1_000, who: "fault", text: "close (worker 0)" },
      { at: 19_000, who: "fault", text: "pause (worker 1)" },
      { at: 12_000, who: "worker 0", text: "shutting down" },
      { at: 29_000, who: "fault", text: "restart (all workers)" },
      { at: 19_990, who: "fault", text: "close (worker 1)" }
    ]
    assert.deepStrictEqual(Stalls.story(stall, events), [
      "  -8.0 s  worker 0  shutting down",
      "  -1.0 s  fault     pause (worker 1)",
      "  +0.0 s  fault     close (worker 1)",
      "  +7.0 s  worker 1  connected to 127.0.0.1:5672"
    ])
    // Over the limit, those nearest the stall's start stay.
    assert.deepStrictEqual(Stalls.story(stall, events, 15_000, 2), [
      "  -1.0 s  fault     pause (worker 1)",
      "  +0.0 s  fault     close (worker 1)"
    ])
    assert.deepStrictEqual(Stalls.longest([{ from: 0, to: 10 }, stall, { from: 30_000, to: 30_500 }]), stall)
    assert.strictEqual(Stalls.longest([]), undefined)
  })
})
