/**
 * JSON encoders for publish bodies, one per schema, made once: making one
 * costs far more than running it.
 *
 * @internal
 */
import { Effect, Schema, SchemaAST } from "effect"

const encoders = new WeakMap<Schema.Top, (body: unknown) => Effect.Effect<string, Schema.SchemaError, unknown>>()

/**
 * The encoder of `schema`. A schema that transforms nothing needs no
 * services to encode: it runs synchronously, to an `Exit` (an `Exit` is an
 * effect too). Others encode as an effect (their transformations may need
 * services).
 */
export const encoderOf = <S extends Schema.Top>(
  schema: S
): (body: S["Type"]) => Effect.Effect<string, Schema.SchemaError, S["EncodingServices"]> => {
  let encoder = encoders.get(schema)
  if (encoder === undefined) {
    const codec = Schema.fromJsonString(schema)
    encoder = SchemaAST.toEncoded(schema.ast) === schema.ast
      ? Schema.encodeUnknownExit(codec as unknown as Schema.Codec<unknown, string>)
      : Schema.encodeUnknownEffect(codec)
    encoders.set(schema, encoder)
  }
  return encoder as (body: S["Type"]) => Effect.Effect<string, Schema.SchemaError, S["EncodingServices"]>
}
