/**
 * Using the library: a consumer whose handler needs a service of the
 * application, provided by a layer. Run with `node examples/orders.ts`.
 */
import { Context, Data, Effect, Layer, Redacted, Schema } from "effect"
import { Consumer, Outcome, Worker } from "../src/index.ts"

class OutOfStock extends Data.TaggedError("OutOfStock")<{ readonly orderId: string }> {}

// The handler's dependencies are ordinary Effect services.
class Orders extends Context.Service<Orders, {
  readonly ship: (orderId: string, quantity: number) => Effect.Effect<void, OutOfStock>
}>()("app/Orders") {}

const OrdersLive = Layer.succeed(Orders, {
  ship: (orderId, quantity) =>
    quantity > 100 ? Effect.fail(new OutOfStock({ orderId })) : Effect.log(`shipped ${orderId}`)
})

const ShipOrder = Schema.Struct({ orderId: Schema.String, quantity: Schema.Int })

const shipOrders = Consumer.make({
  queue: "orders.ship",
  schema: ShipOrder, // bodies that do not decode go to orders.ship.dlq, never to the handler
  handler: (order, message) => // message: id, headers, redelivered, ...
    Effect.gen(function*() {
      const orders = yield* Orders
      yield* orders.ship(order.orderId, order.quantity)
      yield* Effect.log(`order ${order.orderId} done (redelivered: ${message.redelivered})`)
    }),
  // OutOfStock (or a defect): try again in 30 s, 10 times in all, then park it in orders.ship.dlq
  onFailure: Outcome.retry({ maxAttempts: 10, delay: "30 seconds" }),
  prefetch: 50,
  concurrency: 10,
  queueOptions: { type: "quorum" }
})

Worker.run(
  { connection: { url: Redacted.make(process.env.AMQP_URL ?? "amqp://guest:guest@127.0.0.1:5672") } },
  [shipOrders]
).pipe(
  Effect.provide(OrdersLive),
  Worker.runMain // SIGTERM / SIGINT: drain, then exit 0
)
