import { assert, describe, it } from "@effect/vitest"
import { Clock, Duration, Effect, Fiber, Random } from "effect"
import { TestClock } from "effect/testing"
import * as Reconnect from "../src/Reconnect.ts"

/**
 * A fake transport for virtual-time tests: each call is one session attempt.
 * `plan` says, per attempt, how long the session stays ready before it is
 * lost (a number of milliseconds), or that connecting fails at once ("fail").
 */
const fakeSessions = (plan: ReadonlyArray<number | "fail">) => {
  const attempts: Array<number> = []
  const session = (ready: Effect.Effect<void>) =>
    Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      attempts.push(now)
      const step = plan[attempts.length - 1]
      if (step === undefined) return yield* Effect.never
      if (step === "fail") return yield* Effect.fail("connect refused")
      yield* ready
      yield* Effect.sleep(Duration.millis(step))
      return yield* Effect.fail("connection lost")
    })
  return { attempts, session }
}

/** Jitter off: Random always returns 0.5, which scales a delay by exactly 1. */
const noJitter = Effect.provideService(Random.Random, {
  nextIntUnsafe: () => 0,
  nextDoubleUnsafe: () => 0.5
})

describe("Reconnect.loop (virtual time)", () => {
  it.effect("backs off exponentially from the base delay while connecting fails", () =>
    Effect.gen(function*() {
      const { attempts, session } = fakeSessions(["fail", "fail", "fail", "fail"])
      const fiber = yield* Effect.forkChild(
        Reconnect.loop({ backoff: { base: "100 millis", max: "10 seconds" } }, session).pipe(noJitter)
      )
      yield* TestClock.adjust("10 seconds")
      assert.deepStrictEqual(attempts, [0, 100, 300, 700, 1500])
      yield* Fiber.interrupt(fiber)
    }))
  it.effect("never waits longer than the maximum delay", () =>
    Effect.gen(function*() {
      const { attempts, session } = fakeSessions(Array.from({ length: 12 }, () => "fail" as const))
      const fiber = yield* Effect.forkChild(
        Reconnect.loop({ backoff: { base: "100 millis", max: "1200 millis" } }, session).pipe(noJitter)
      )
      yield* TestClock.adjust("30 seconds")
      const gaps = attempts.slice(1).map((t, i) => t - attempts[i]!)
      // 100, 200, 400, 800 then capped at 1200 / 1.2 = 1000 (the jitter's headroom)
      assert.deepStrictEqual(gaps, [100, 200, 400, 800, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000])
      yield* Fiber.interrupt(fiber)
    }))
  it.effect("jittered delays stay within ±20% and under the cap", () =>
    Effect.gen(function*() {
      const { attempts, session } = fakeSessions(Array.from({ length: 10 }, () => "fail" as const))
      const fiber = yield* Effect.forkChild(
        Reconnect.loop({ backoff: { base: "100 millis", max: "1 second" } }, session)
      )
      yield* TestClock.adjust("1 minute")
      const gaps = attempts.slice(1).map((t, i) => t - attempts[i]!)
      assert.strictEqual(gaps.length, 10)
      gaps.forEach((gap, i) => {
        const nominal = Math.min(100 * 2 ** i, 1000 / 1.2)
        assert.isAtLeast(gap, Math.floor(nominal * 0.8), `gap ${i}`)
        assert.isAtMost(gap, Math.ceil(nominal * 1.2), `gap ${i}`)
        assert.isAtMost(gap, 1000, `gap ${i}`)
      })
      yield* Fiber.interrupt(fiber)
    }))
  it.effect("the jitter really moves the delays: at its extremes they are 0.8 and 1.2 times the nominal one", () =>
    Effect.gen(function*() {
      const run = (random: number) =>
        Effect.gen(function*() {
          const { attempts, session } = fakeSessions(["fail", "fail", "fail"])
          const fiber = yield* Effect.forkChild(
            Reconnect.loop({ backoff: { base: "100 millis", max: "10 seconds" } }, session).pipe(
              Effect.provideService(Random.Random, { nextIntUnsafe: () => 0, nextDoubleUnsafe: () => random })
            )
          )
          yield* TestClock.adjust("10 seconds")
          yield* Fiber.interrupt(fiber)
          return attempts.slice(1).map((t, i) => t - attempts[i]!)
        })
      assert.deepStrictEqual(yield* run(0), [80, 160, 320])
      assert.deepStrictEqual(yield* run(1), [120, 240, 480])
    }))

  it.effect("starts from the base delay again after a healthy session", () =>
    Effect.gen(function*() {
      // Three failures (delays 100, 200, 400), then a session healthy for 6 s
      // (lost at 6700), then two more failures: the delays start again at 100
      // (6800), 200 (7000), 400 (7400) instead of going on with 800.
      const { attempts, session } = fakeSessions(["fail", "fail", "fail", 6000, "fail", "fail"])
      const fiber = yield* Effect.forkChild(
        Reconnect.loop({ backoff: { base: "100 millis", max: "10 seconds", healthyAfter: "5 seconds" } }, session)
          .pipe(noJitter)
      )
      yield* TestClock.adjust("1 minute")
      assert.deepStrictEqual(attempts, [0, 100, 300, 700, 6800, 7000, 7400])
      yield* Fiber.interrupt(fiber)
    }))
  it.effect("a connection that drops right after connecting still backs off", () =>
    Effect.gen(function*() {
      // Every session becomes ready, then is lost after 10 ms: never healthy.
      const { attempts, session } = fakeSessions([10, 10, 10, 10, 10])
      const fiber = yield* Effect.forkChild(
        Reconnect.loop({ backoff: { base: "100 millis", max: "10 seconds", healthyAfter: "5 seconds" } }, session)
          .pipe(noJitter)
      )
      yield* TestClock.adjust("1 minute")
      const gaps = attempts.slice(1).map((t, i) => t - attempts[i]!)
      assert.deepStrictEqual(gaps, [110, 210, 410, 810, 1610])
      yield* Fiber.interrupt(fiber)
    }))
  it.effect("reports every retry with its attempt number and delay", () =>
    Effect.gen(function*() {
      const { session } = fakeSessions(["fail", "fail", "fail"])
      const seen: Array<[number, number]> = []
      const fiber = yield* Effect.forkChild(
        Reconnect.loop({
          backoff: { base: "100 millis", max: "10 seconds" },
          onRetry: ({ attempt, delay }) => Effect.sync(() => seen.push([attempt, Duration.toMillis(delay)]))
        }, session).pipe(noJitter)
      )
      yield* TestClock.adjust("10 seconds")
      assert.deepStrictEqual(seen, [[1, 100], [2, 200], [3, 400]])
      yield* Fiber.interrupt(fiber)
    }))
  it.effect("a retry report that dies does not end the reconnecting: the next attempts come on time", () =>
    Effect.gen(function*() {
      const { attempts, session } = fakeSessions(["fail", "fail", "fail"])
      let reports = 0
      const fiber = yield* Effect.forkChild(
        Reconnect.loop({
          backoff: { base: "100 millis", max: "10 seconds" },
          onRetry: () =>
            Effect.sync(() => {
              reports++
              throw new Error("the report broke")
            })
        }, session).pipe(noJitter)
      )
      yield* TestClock.adjust("10 seconds")
      assert.deepStrictEqual(attempts, [0, 100, 300, 700])
      assert.strictEqual(reports, 3)
      assert.isUndefined(fiber.pollUnsafe())
      yield* Fiber.interrupt(fiber)
    }))
  it.effect("ends with a fatal error instead of retrying it", () =>
    Effect.gen(function*() {
      const { attempts, session } = fakeSessions(["fail"])
      const exit = yield* Reconnect.loop({
        backoff: { base: "100 millis", max: "10 seconds" },
        isFatal: (error): error is "connect refused" => error === "connect refused"
      }, session).pipe(Effect.flip)
      assert.strictEqual(exit, "connect refused")
      assert.deepStrictEqual(attempts, [0])
    }))
})
