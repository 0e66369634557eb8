/**
 * JSON encoders for publish bodies, one per schema, made once: making one
 * costs far more than running it.
 *
 * @internal
 */
import { type Effect, Exit, Schema, SchemaAST } from "effect"
import { plainValue } from "./decode.ts"

const encoders = new WeakMap<Schema.Top, (body: unknown) => Effect.Effect<string, Schema.SchemaError, unknown>>()

/**
 * The encoder of `schema`. A schema that transforms nothing needs no
 * services to encode: it runs synchronously, to an `Exit` (an `Exit` is an
 * effect too), and a plain value of its type (no undeclared key, no class
 * instance) goes straight to `JSON.stringify`, the codec's own last step;
 * keys keep the value's order rather than the schema's. Others encode as an
 * effect (their transformations may need services).
 */
export const encoderOf = <S extends Schema.Top>(
  schema: S
): (body: S["Type"]) => Effect.Effect<string, Schema.SchemaError, S["EncodingServices"]> => {
  let encoder = encoders.get(schema)
  if (encoder === undefined) {
    encoder = make(schema)
    encoders.set(schema, encoder)
  }
  return encoder as (body: S["Type"]) => Effect.Effect<string, Schema.SchemaError, S["EncodingServices"]>
}

const make = (schema: Schema.Top): (body: unknown) => Effect.Effect<string, Schema.SchemaError, unknown> => {
  const codec = Schema.fromJsonString(schema)
  if (SchemaAST.toEncoded(schema.ast) !== schema.ast) return Schema.encodeUnknownEffect(codec)
  const full = Schema.encodeUnknownExit(codec as unknown as Schema.Codec<unknown, string>)
  const plain = plainValue(schema)
  if (plain === undefined) return full
  // A plain value of the type is its own encoding: JSON.stringify is what the codec would end with.
  return (body) => {
    if (!plain(body)) return full(body)
    const json = stringified(body)
    // What JSON cannot carry (a bigint, a cycle, a throwing toJSON, a bare
    // undefined or function) is the codec's to explain: a typed SchemaError.
    return json === undefined ? full(body) : Exit.succeed(json)
  }
}

/** `JSON.stringify`, or undefined where it throws or gives no text. */
const stringified = (value: unknown): string | undefined => {
  try {
    const json: unknown = JSON.stringify(value)
    return typeof json === "string" ? json : undefined
  } catch {
    return undefined
  }
}
