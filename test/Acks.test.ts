/**
 * Batched acks against the real broker: what counts as settled must not
 * change. Each test hands deliveries of a real channel to `Acks`, then closes
 * the channel and asks the broker which messages came back.
 */
import { setFlagsFromString } from "node:v8"
import { runInNewContext } from "node:vm"
import { assert, describe, it } from "@effect/vitest"
import type * as amqp from "amqplib"
import { Effect } from "effect"
import * as Acks from "../src/Acks.ts"
import type * as Channel from "../src/Channel.ts"
import * as broker from "./support/broker.ts"

/** Takes `n` deliveries from `queue` on a fresh channel (prefetch n), recording them with `Acks`. */
const consume = (admin: broker.Admin, queue: string, n: number) =>
  Effect.promise(async () => {
    const channel = await admin.connection.createChannel()
    channel.on("error", () => {})
    await channel.prefetch(n)
    let open = true
    channel.on("close", () => (open = false))
    const sent: Array<number> = []
    const acks = Acks.make(channel, { isOpen: () => open, maxPending: 1000, onSent: (count) => sent.push(count) })
    const deliveries: Array<amqp.ConsumeMessage> = []
    await new Promise<void>((resolve) => {
      void channel.consume(queue, (delivery) => {
        if (delivery === null) return
        acks.delivered(delivery)
        deliveries.push(delivery)
        if (deliveries.length === n) resolve()
      })
    })
    return { acks, channel, deliveries, sent }
  })

const ids = (messages: ReadonlyArray<amqp.Message>) => messages.map((m) => String(m.properties.messageId)).sort()
const nextTurn = Effect.promise(() => new Promise<void>((resolve) => setImmediate(resolve)))

describe("Acks", () => {
  it.live("acks behind a delivery still being handled are sent one by one; the unfinished one stays unacked", () =>
    Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("acks-gap", {})
      yield* admin.publishTasks(queue, ["m1", "m2", "m3", "m4", "m5"])
      const { acks, channel, deliveries, sent } = yield* consume(admin, queue, 5)
      for (const delivery of deliveries.slice(1)) acks.ack(delivery)
      yield* nextTurn
      assert.deepStrictEqual(sent, [4])
      yield* Effect.promise(() => channel.close())
      // Only m1 was not acked: it is the one back in the queue.
      assert.deepStrictEqual(ids(yield* admin.drainQueue(queue)), ["m1"])
    }))

  it.live("a nack is sent at once and never folded into a multiple ack", () =>
    Effect.gen(function*() {
      const admin = yield* broker.admin
      const dead = yield* admin.queue("acks-dead", {})
      const queue = yield* admin.queue("acks-nack", { deadLetterExchange: "", deadLetterRoutingKey: dead })
      yield* admin.publishTasks(queue, ["m1", "m2", "m3", "m4", "m5"])
      const { acks, channel, deliveries } = yield* consume(admin, queue, 5)
      assert.isTrue(acks.nack(deliveries[1]!, false))
      for (const delivery of [deliveries[0]!, ...deliveries.slice(2)]) acks.ack(delivery)
      yield* nextTurn
      yield* Effect.promise(() => channel.close())
      assert.deepStrictEqual(ids(yield* admin.drainQueue(queue)), [])
      assert.deepStrictEqual(ids(yield* admin.drainQueue(dead)), ["m2"])
    }))

  it.live("on a quiet channel a single ack goes out within one turn of the event loop", () =>
    Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("acks-quiet", {})
      yield* admin.publishTasks(queue, ["only"])
      const { acks, channel, deliveries, sent } = yield* consume(admin, queue, 1)
      acks.ack(deliveries[0]!)
      yield* nextTurn
      assert.deepStrictEqual(sent, [1])
      yield* Effect.promise(() => channel.close())
      assert.deepStrictEqual(ids(yield* admin.drainQueue(queue)), [])
    }))

  it.live("acks still queued when the channel dies are dropped: the broker redelivers those messages", () =>
    Effect.gen(function*() {
      const admin = yield* broker.admin
      const queue = yield* admin.queue("acks-lost", {})
      yield* admin.publishTasks(queue, ["m1", "m2", "m3"])
      const { acks, channel, deliveries, sent } = yield* consume(admin, queue, 3)
      for (const delivery of deliveries) acks.ack(delivery)
      // The channel closes before the queued acks are flushed.
      yield* Effect.promise(() => channel.close())
      yield* nextTurn
      assert.deepStrictEqual(sent, [])
      assert.deepStrictEqual(ids(yield* admin.drainQueue(queue)), ["m1", "m2", "m3"])
    }))

  // What the broker would make of the frames Acks sends, worked out here:
  // which acks go out is this module's decision, not the broker's.
  describe("the frames it sends (a channel that records them)", () => {
    /** A channel that settles tags the way the broker does: `multiple` covers every outstanding tag up to it. */
    const recorder = (tags: ReadonlyArray<number>, decided = new Map<number, "ack" | "nack">()) => {
      const outstanding = new Set(tags)
      const settledBy = new Map<number, "ack" | "nack">()
      const settle = (tag: number, multiple: boolean, how: "ack" | "nack") => {
        assert.isTrue(outstanding.has(tag), `tag ${tag} is not outstanding`)
        for (const t of multiple ? [...outstanding].filter((t) => t <= tag) : [tag]) {
          // Settled exactly as its handling decided, and only once it was decided.
          assert.strictEqual(how, decided.get(t), `tag ${t}`)
          outstanding.delete(t)
          settledBy.set(t, how)
        }
      }
      const channel = {
        ack: (message: amqp.Message, multiple = false) => settle(message.fields.deliveryTag, multiple, "ack"),
        nack: (message: amqp.Message, multiple = false) => settle(message.fields.deliveryTag, multiple, "nack")
      } as unknown as Channel.RawChannel
      return { channel, outstanding, settledBy }
    }
    const delivery = (tag: number) => ({ fields: { deliveryTag: tag } }) as unknown as Channel.Delivery
    /** Deterministic pseudo-random numbers (mulberry32). */
    const random = (seed: number) => () => {
      seed = (seed + 0x6d2b79f5) | 0
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed)
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296
    }

    it("never settles a delivery that was not acked, in any order, with gaps in the tags and thousands in flight", () => {
      for (const seed of [1, 2, 3, 4, 5]) {
        const next = random(seed)
        // Tags mostly one apart, sometimes more (deliveries of another consumer on the channel).
        const tags: Array<number> = []
        for (let tag = 1; tags.length < 5000; tag += next() < 0.05 ? 2 + Math.floor(next() * 5) : 1) tags.push(tag)
        const decided = new Map<number, "ack" | "nack">()
        const { channel, outstanding, settledBy } = recorder(tags, decided)
        const sent: Array<number> = []
        const acks = Acks.make(channel, { isOpen: () => true, maxPending: 1 + Math.floor(next() * 200), onSent: (n) => sent.push(n) })
        const deliveries = tags.map(delivery)
        for (const d of deliveries) acks.delivered(d)
        // Settled in a shuffled order, a window at a time, so the head lags behind.
        const order = deliveries.map((d, i) => ({ d, key: i + next() * 400 })).sort((a, b) => a.key - b.key).map((x) => x.d)
        for (const d of order) {
          const tag = d.fields.deliveryTag
          if (next() < 0.03) {
            decided.set(tag, "nack")
            assert.isTrue(acks.nack(d, true))
          } else {
            decided.set(tag, "ack")
            acks.ack(d)
          }
          if (next() < 0.01) acks.flush()
        }
        acks.flush()
        assert.strictEqual(outstanding.size, 0)
        assert.deepStrictEqual(settledBy, new Map([...decided].sort(([a], [b]) => a - b).map(([t, how]) => [t, how])))
        const ackedCount = [...decided.values()].filter((how) => how === "ack").length
        assert.strictEqual(sent.reduce((a, b) => a + b, 0), ackedCount)
      }
    })

    it.live("settled deliveries behind one still being handled are let go: a stuck handler does not make it grow", () =>
      Effect.gen(function*() {
        // A garbage collector to call from the test, without a node flag.
        setFlagsFromString("--expose-gc")
        const gc = runInNewContext("gc") as () => void
        const n = 20_001
        const tags = Array.from({ length: n }, (_, i) => i + 1)
        const decided = new Map(tags.slice(1).map((tag) => [tag, "ack" as const]))
        const { channel, outstanding } = recorder(tags, decided)
        const acks = Acks.make(channel, { isOpen: () => true, maxPending: 25, onSent: () => {} })
        const stuck = delivery(1)
        acks.delivered(stuck)
        const released: Array<WeakRef<Channel.Delivery>> = []
        for (const tag of tags.slice(1)) {
          const d = delivery(tag)
          acks.delivered(d)
          acks.ack(d)
          if (tag % 500 === 0) released.push(new WeakRef(d))
        }
        acks.flush()
        // Everything but the first went out, one by one (a multiple ack would cover the first).
        assert.deepStrictEqual([...outstanding], [1])
        yield* nextTurn
        gc()
        // Settled ones are dropped in batches (about a thousand at a time): of 40 watched, only
        // those among the last thousand or so may still be held.
        const kept = released.filter((ref) => ref.deref() !== undefined).length
        assert.isAtMost(kept, 3, `${kept} of ${released.length} settled deliveries still held`)
        decided.set(1, "ack")
        acks.ack(stuck)
        acks.flush()
        assert.strictEqual(outstanding.size, 0)
      }))

    it("an ack of a delivery it no longer knows (the broker took it back) sends nothing", () => {
      const { channel, settledBy } = recorder([1, 2])
      const acks = Acks.make(channel, { isOpen: () => true, maxPending: 1, onSent: () => {} })
      const [first, second] = [delivery(1), delivery(2)]
      acks.delivered(first)
      acks.delivered(second)
      acks.reset()
      acks.ack(first)
      acks.ack(second)
      acks.flush()
      assert.strictEqual(settledBy.size, 0)
    })
  })
})
