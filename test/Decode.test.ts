/**
 * One decoding: the consumer's fast path (JSON.parse and a compiled guard)
 * gives a handler exactly what the full decoder gives, on the same inputs;
 * and the publisher's encoder publishes what the full codec would.
 */
import { assert, describe, it } from "@effect/vitest"
import { Exit, Schema } from "effect"
import { jsonDecoder } from "../src/internal/decode.ts"
import { encoderOf } from "../src/internal/encode.ts"

const Line = Schema.Struct({ sku: Schema.String, qty: Schema.Number })
const Order = Schema.Struct({
  id: Schema.String,
  note: Schema.optionalKey(Schema.String),
  tags: Schema.Array(Schema.String),
  lines: Schema.Array(Line),
  pair: Schema.Tuple([Schema.String, Line]),
  kind: Schema.Union([Schema.Literal("a"), Schema.Literal("b")]),
  extra: Schema.Unknown
})
const Counts = Schema.Record(Schema.String, Schema.Number)
const DeclaresProto = Schema.Struct({ ["__proto__"]: Schema.optionalKey(Schema.Number), a: Schema.optionalKey(Schema.Number) })
const Task = Schema.Struct({ id: Schema.String, failAttempts: Schema.optional(Schema.Int) })
const Tagged = Schema.Union([
  Schema.Struct({ type: Schema.Literal("x"), x: Schema.Number }),
  Schema.Struct({ type: Schema.Literal("y"), y: Schema.String })
])

const order = {
  id: "o1",
  tags: ["t"],
  lines: [{ sku: "s1", qty: 2 }],
  pair: ["p", { sku: "s2", qty: 1 }],
  kind: "a",
  extra: { anything: [1, { goes: true }] }
}

const inputs: ReadonlyArray<string> = [
  JSON.stringify(order),
  JSON.stringify({ ...order, note: "n" }),
  JSON.stringify({ ...order, excess: 1 }),
  JSON.stringify({ ...order, lines: [{ sku: "s1", qty: 2, excess: true }] }),
  JSON.stringify({ ...order, pair: ["p", { sku: "s2", qty: 1, excess: 1 }] }),
  // An own __proto__ key, as JSON.parse makes it.
  `{"__proto__":{"polluted":true},${JSON.stringify(order).slice(1)}`,
  `{"id":"o1","tags":[],"lines":[{"__proto__":{"x":1},"sku":"s","qty":1}],"pair":["p",{"sku":"s","qty":1}],"kind":"b","extra":null}`,
  JSON.stringify({ ...order, kind: "c" }),
  JSON.stringify({ ...order, lines: [{ sku: 1, qty: 2 }] }),
  "{not json",
  "",
  "null",
  JSON.stringify({ type: "x", x: 1, excess: 2 }),
  JSON.stringify({ type: "y", y: "s" }),
  JSON.stringify({ a: 1, b: 2 }),
  `{"__proto__":1,"a":2}`,
  `{"a":2,"b":3}`,
  `{"__proto__":1,"a":2,"b":3}`,
  JSON.stringify({ id: "t", n: 1, tags: ["a", "b"], ok: true }),
  JSON.stringify({ id: "t", failAttempts: 1.5, n: 1 }),
  JSON.stringify({ id: "t", failAttempts: null })
]

const same = <S extends Schema.Top & Schema.ConstraintDecoder<unknown>>(schema: S) => {
  const fast = jsonDecoder(schema)
  const full = Schema.decodeUnknownExit(Schema.fromJsonString(schema))
  for (const input of inputs) {
    const a = fast(input)
    const b = full(input)
    assert.strictEqual(Exit.isSuccess(a), Exit.isSuccess(b), input)
    if (Exit.isSuccess(a) && Exit.isSuccess(b)) {
      assert.deepStrictEqual(a.value, b.value, input)
      assert.strictEqual(Object.hasOwn(a.value as object, "__proto__"), Object.hasOwn(b.value as object, "__proto__"), input)
    }
  }
}

describe("Decoding a body", () => {
  it("the fast path and the full decoder agree: excess keys stripped at any depth, an own __proto__ included", () => same(Order))
  it("a record (keys the schema cannot list) decodes as the full decoder does", () => {
    same(Counts)
    const decoded = jsonDecoder(Counts)(JSON.stringify({ a: 1, b: 2 }))
    assert.deepStrictEqual(Exit.isSuccess(decoded) ? decoded.value : undefined, { a: 1, b: 2 })
  })
  it("a union of objects (which the fast path does not follow) decodes as the full decoder does", () => same(Tagged))
  it("a schema that declares __proto__ decodes as the full decoder does", () => same(DeclaresProto))
  it("the example's task: an optional integer, and producers' extra fields stripped", () => {
    same(Task)
    const decoded = jsonDecoder(Task)(JSON.stringify({ id: "t", n: 1, tags: ["a"], ok: true, failAttempts: 2 }))
    assert.deepStrictEqual(Exit.isSuccess(decoded) ? decoded.value : undefined, { id: "t", failAttempts: 2 })
  })
  it("excess keys are gone from what the handler gets", () => {
    const decoded = jsonDecoder(Order)(JSON.stringify({ ...order, excess: 1, lines: [{ sku: "s", qty: 1, more: 2 }] }))
    assert.isTrue(Exit.isSuccess(decoded))
    const value = Exit.isSuccess(decoded) ? decoded.value as Record<string, unknown> : {}
    assert.notProperty(value, "excess")
    assert.deepStrictEqual(value["lines"], [{ sku: "s", qty: 1 }])
  })
})

class WithToJson {
  readonly sku = "s"
  readonly qty = 1
  toJSON() {
    return { sku: "serialised", qty: 0 }
  }
}

const values: ReadonlyArray<unknown> = [
  order,
  { ...order, note: "n" },
  { ...order, excess: 1 },
  { ...order, lines: [{ sku: "s1", qty: 2, excess: true }] },
  { ...order, pair: ["p", { sku: "s2", qty: 1, excess: 1 }] },
  { ...order, lines: [new WithToJson()] },
  { ...order, lines: [{ sku: "s", qty: Number.NaN }], extra: new Date(0) },
  { ...order, kind: "c" },
  { ...order, note: undefined },
  { type: "x", x: 1, excess: 2 },
  { type: "y", y: "s" },
  { a: 1, b: 2 },
  null
]

const cycle: Record<string, unknown> = {}
cycle["self"] = cycle

/** What JSON cannot carry, for schemas that let anything through. */
const unserializable: ReadonlyArray<unknown> = [
  { id: "a", data: cycle },
  { id: "a", data: 10n },
  { id: "a", data: { toJSON: () => { throw new Error("no") } } },
  undefined,
  () => 1,
  Symbol("s"),
  { id: "a", data: [1, "fine"] }
]

const sameEncoding = <S extends Schema.Top>(schema: S, inputs: ReadonlyArray<unknown> = values) => {
  const fast = encoderOf(schema)
  const full = Schema.encodeUnknownExit(Schema.fromJsonString(schema) as unknown as Schema.Codec<unknown, string>)
  for (const value of inputs) {
    const a = fast(value as S["Type"])
    const b = full(value)
    assert.isTrue(Exit.isExit(a))
    const exitA = a as Exit.Exit<string, Schema.SchemaError>
    assert.strictEqual(Exit.isSuccess(exitA), Exit.isSuccess(b), typeof value === "symbol" ? "a symbol" : String(value))
    if (Exit.isSuccess(exitA) && Exit.isSuccess(b)) {
      // The same JSON; keys may come in another order.
      assert.deepStrictEqual(JSON.parse(exitA.value), JSON.parse(b.value), JSON.stringify(value))
    }
  }
}

describe("Encoding a body to publish", () => {
  it("the plain-value path and the full codec publish the same JSON: excess keys dropped, class instances encoded by the schema", () => {
    sameEncoding(Order)
    sameEncoding(Line)
    sameEncoding(Counts)
    sameEncoding(Tagged)
  })

  it("a value JSON cannot carry (a bigint, a cycle, a throwing toJSON, a bare undefined) fails as the full codec does, without throwing", () => {
    sameEncoding(Schema.Struct({ id: Schema.String, data: Schema.Unknown }), unserializable)
    sameEncoding(Schema.Unknown, unserializable)
  })
})
