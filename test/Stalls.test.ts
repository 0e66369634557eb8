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
})
