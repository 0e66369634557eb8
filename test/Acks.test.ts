/**
 * Batched acks against the real broker: what counts as settled must not
 * change. Each test hands deliveries of a real channel to `Acks`, then closes
 * the channel and asks the broker which messages came back.
 */
import { assert, describe, it } from "@effect/vitest"
import type * as amqp from "amqplib"
import { Effect } from "effect"
import * as Acks from "../src/Acks.ts"
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
})
