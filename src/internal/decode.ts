/**
 * From a delivery to what a handler receives: the checks that can stop a
 * message before any handler runs (size, content type and encoding, UTF-8,
 * headers, body), all synchronous, so a message that never reaches a
 * handler costs no fiber.
 *
 * @internal
 */
import { isUtf8 } from "node:buffer"
import type * as Channel from "../Channel.ts"
import { Cause, Exit, Schema, SchemaAST } from "effect"
import { SchemaJITCompiler } from "effect/schema"
import type { Message } from "../Message.ts"
import * as Outcome from "../Outcome.ts"

/** A schema that decodes without services. */
export type BodySchema = Schema.Top & Schema.ConstraintDecoder<unknown>

/** What a handler gets: the decoded body, and the message around it. */
export interface Prepared<B, H> {
  readonly body: B
  readonly message: Message<H>
}

// Classes, not object literals: a message is held until its handler ends,
// and V8 allocates the objects of a literal it sees outlive young
// collections straight into the old generation (see `internal/send.ts`).
class Ready<B, H> implements Prepared<B, H> {
  readonly body: B
  readonly message: Message<H>
  constructor(body: B, message: Message<H>) {
    this.body = body
    this.message = message
  }
}

class Incoming<H> implements Message<H> {
  readonly id: string | undefined
  readonly queue: string
  readonly redelivered: boolean
  readonly attempt: number
  readonly exchange: string
  readonly routingKey: string
  readonly headers: H
  readonly contentType: string | undefined
  readonly correlationId: string | undefined
  readonly content: Uint8Array
  constructor(
    id: string | undefined,
    queue: string,
    redelivered: boolean,
    attempt: number,
    exchange: string,
    routingKey: string,
    headers: H,
    contentType: string | undefined,
    correlationId: string | undefined,
    content: Uint8Array
  ) {
    this.id = id
    this.queue = queue
    this.redelivered = redelivered
    this.attempt = attempt
    this.exchange = exchange
    this.routingKey = routingKey
    this.headers = headers
    this.contentType = contentType
    this.correlationId = correlationId
    this.content = content
  }
}

/** Checks and decodes deliveries of one consumer. */
export const preparer = <S extends BodySchema, H extends BodySchema>(
  queue: string,
  schema: S,
  headerSchema: H | undefined
) => {
  const decodeBody = jsonDecoder(schema)
  const decodeHeaders = headerSchema === undefined ? undefined : Schema.decodeUnknownExit(headerSchema)
  return (
    delivery: Channel.Delivery,
    maxBodyBytes: number,
    attempt: number
  ): Prepared<S["Type"], H["Type"]> | Outcome.DecodeError => {
    const content = delivery.content
    if (content.length > maxBodyBytes) {
      return new Outcome.DecodeError({
        kind: "BodyTooLarge",
        reason: `${content.length} bytes, more than the maximum of ${maxBodyBytes}`
      })
    }
    const contentType = stringOrUndefined(delivery.properties.contentType)
    if (contentType !== undefined && !isJson(contentType)) {
      return new Outcome.DecodeError({
        kind: "UnsupportedContentType",
        reason: `content type ${contentType}, expected application/json`
      })
    }
    const contentEncoding = stringOrUndefined(delivery.properties.contentEncoding)
    if (contentEncoding !== undefined && !isPlainEncoding(contentEncoding)) {
      return new Outcome.DecodeError({
        kind: "UnsupportedContentType",
        reason: `content encoding ${contentEncoding} (compressed or encoded), expected plain UTF-8 JSON`
      })
    }
    // Bytes that are not UTF-8 would be decoded to replacement characters:
    // the handler would get a body other than the one sent, without a word.
    if (!isUtf8(content)) {
      return new Outcome.DecodeError({ kind: "InvalidBody", reason: "the body is not valid UTF-8" })
    }
    const rawHeaders: Readonly<Record<string, unknown>> = delivery.properties.headers ?? {}
    let headers: H["Type"] = rawHeaders
    if (decodeHeaders !== undefined) {
      const decoded = decodeHeaders(rawHeaders)
      if (Exit.isFailure(decoded)) {
        return new Outcome.DecodeError({ kind: "InvalidHeaders", reason: causeMessage(decoded.cause) })
      }
      headers = decoded.value
    }
    // A leading byte order mark is not part of the JSON text (RFC 8259 lets a parser ignore it).
    const body = decodeBody(content.toString("utf8", hasBom(content) ? 3 : 0))
    if (Exit.isFailure(body)) {
      return new Outcome.DecodeError({ kind: "InvalidBody", reason: causeMessage(body.cause) })
    }
    const route = originalRoute(delivery, queue)
    return new Ready(
      body.value,
      new Incoming<H["Type"]>(
        stringOrUndefined(delivery.properties.messageId),
        queue,
        delivery.fields.redelivered,
        attempt,
        route.exchange,
        route.routingKey,
        headers,
        contentType,
        stringOrUndefined(delivery.properties.correlationId),
        content
      )
    )
  }
}

/**
 * Encodings that leave the bytes as they are: none, `identity`, MIME's
 * `7bit`, `8bit` and `binary`, and the charsets UTF-8 text is already in
 * (some clients put the charset here). The bytes are checked for UTF-8 next.
 */
const plainEncodings = new Set(["", "identity", "7bit", "8bit", "binary", "utf-8", "utf8", "us-ascii", "ascii"])

const isPlainEncoding = (contentEncoding: string) => plainEncodings.has(contentEncoding.trim().toLowerCase())

const hasBom = (content: Uint8Array) => content.length >= 3 && content[0] === 0xef && content[1] === 0xbb && content[2] === 0xbf

const isJson = (contentType: string) => {
  const type = contentType.split(";")[0]!.trim().toLowerCase()
  return type === "application/json" || type.endsWith("+json")
}

/**
 * Decodes JSON text with a schema. When decoding changes nothing (the schema's
 * encoded and decoded forms are the same, as for plain structs of strings,
 * numbers and arrays), `JSON.parse` and a type check do the work at a tenth
 * of the cost; the full decoder runs only to explain a failure. The type check
 * is compiled by Effect's schema JIT (about ten times faster than the
 * interpreter on a small struct; where code generation is not allowed, Effect
 * falls back to the interpreter).
 *
 * The fast path gives a handler exactly what the full decoder gives: a value
 * with no key the schema does not declare (an own `__proto__` included),
 * anywhere in it, is handed over as parsed; one with such keys is copied
 * without them, as the full decoder strips them (producers often send more
 * fields than a consumer reads, and the full decoder costs about four times
 * the copy). A schema whose shape this cannot follow (records, unions of
 * objects, recursion) always takes the full decoder.
 */
export const jsonDecoder = <S extends BodySchema>(schema: S) => {
  const decode = Schema.decodeUnknownExit(Schema.fromJsonString(schema))
  const shape = shapeOf(schema)
  if (shape === undefined) return decode
  const { is, keys } = shape
  return (text: string): Exit.Exit<S["Type"], Schema.SchemaError> => {
    let value: unknown
    try {
      value = JSON.parse(text)
    } catch {
      return decode(text)
    }
    if (!is(value)) return decode(text)
    return Exit.succeed(keys.exact(value) ? value : keys.strip(value))
  }
}

/**
 * For a schema that transforms nothing and whose shape {@link keysOf} can
 * follow: its compiled type check, and what {@link keysOf} gives for its
 * type. Undefined for other schemas.
 */
const shapeOf = (schema: Schema.Top) => {
  if (SchemaAST.toEncoded(schema.ast) !== schema.ast) return undefined
  const type = SchemaAST.toType(schema.ast)
  const keys = keysOf(type)
  if (keys === undefined) return undefined
  SchemaJITCompiler.enable(type)
  return { is: Schema.is(schema), keys }
}

/**
 * For a schema that transforms nothing and whose shape {@link keysOf} can
 * follow: whether a value is of its type with nothing the schema does not
 * declare, and only plain objects where it declares objects. Such a value is
 * its own encoding and its own decoding; any other needs the schema's full
 * codec. Undefined for other schemas.
 */
export const plainValue = (schema: Schema.Top): ((value: unknown) => boolean) | undefined => {
  const shape = shapeOf(schema)
  if (shape === undefined) return undefined
  const { is, keys } = shape
  return (value) => is(value) && keys.exact(value)
}

/** The keys of a value already known to be of a schema's type, at any depth. */
interface Keys {
  /** It has no key the schema does not declare, and only plain objects where the schema declares objects. */
  readonly exact: (value: unknown) => boolean
  /** A copy without the keys the schema does not declare, built as the full decoder builds it. */
  readonly strip: (value: unknown) => unknown
}

/** What holds no object: nothing to check, nothing to strip. */
const scalar: Keys = { exact: () => true, strip: (value) => value }

/** The {@link Keys} of a type; undefined for a shape this cannot follow. */
const keysOf = (ast: SchemaAST.AST): Keys | undefined => {
  switch (ast._tag) {
    case "Objects": {
      if (ast.indexSignatures.length > 0) return undefined
      const declared = new Set<PropertyKey>(ast.propertySignatures.map((p) => p.name))
      const fields: Array<readonly [PropertyKey, Keys]> = []
      for (const property of ast.propertySignatures) {
        const keys = keysOf(property.type)
        if (keys === undefined) return undefined
        fields.push([property.name, keys])
      }
      const nested = fields.filter(([, keys]) => keys !== scalar)
      return {
        exact: (value) => {
          if (typeof value !== "object" || value === null) return true
          // A class instance (a `toJSON`, getters) is not what JSON would carry of it.
          const proto: unknown = Object.getPrototypeOf(value)
          if (proto !== Object.prototype && proto !== null) return false
          // `for...in` walks the keys without making an array of them; it also
          // sees inherited enumerable keys (a polluted prototype): such a value is copied by `strip`.
          for (const key in value) if (!declared.has(key)) return false
          for (const [name, keys] of nested) {
            const inner = (value as Record<PropertyKey, unknown>)[name]
            if (inner !== undefined && !keys.exact(inner)) return false
          }
          return true
        },
        strip: (value) => {
          if (typeof value !== "object" || value === null) return value
          const record = value as Record<PropertyKey, unknown>
          const out: Record<PropertyKey, unknown> = {}
          // Declared keys only, in the schema's order, looked up as the full decoder does.
          for (const [name, keys] of fields) {
            if (!(name === "__proto__" ? Object.hasOwn(record, name) : name in record)) continue
            const inner = keys.strip(record[name])
            // Assigned, a `__proto__` key would set the copy's prototype.
            if (name === "__proto__") Object.defineProperty(out, name, { value: inner, writable: true, enumerable: true, configurable: true })
            else out[name] = inner
          }
          return out
        }
      }
    }
    case "Arrays": {
      if (ast.rest.length > 1) return undefined
      const elements = ast.elements.map(keysOf)
      const rest = ast.rest.length === 1 ? keysOf(ast.rest[0]!) : scalar
      if (rest === undefined || !elements.every((keys) => keys !== undefined)) return undefined
      if (rest === scalar && elements.every((keys) => keys === scalar)) return scalar
      const at = (i: number) => i < elements.length ? elements[i]! : rest
      return {
        exact: (value) => {
          if (!Array.isArray(value)) return true
          for (let i = 0; i < value.length; i++) if (!at(i).exact(value[i])) return false
          return true
        },
        strip: (value) => Array.isArray(value) ? value.map((inner, i) => at(i).strip(inner)) : value
      }
    }
    case "Union":
      // Which member matched is the decoder's business: only unions of scalars are followed.
      return ast.types.every((member) => keysOf(member) === scalar) ? scalar : undefined
    case "Suspend":
    case "Declaration":
      return undefined
    default:
      return scalar
  }
}

/** The message of a schema failure, from the cause `decodeUnknownExit` returns. */
const causeMessage = (cause: Cause.Cause<Schema.SchemaError>): string => {
  const error = Cause.findErrorOption(cause)
  return error._tag === "Some" ? error.value.message : Cause.pretty(cause)
}

/**
 * The exchange and routing key a message first came to `queue` with. A
 * retried message comes back from the retry queue through the default
 * exchange; its first route is in the broker's `x-death` record of a
 * rejection from `queue` (retries of earlier versions) or in the headers
 * of the retry's copy.
 */
export const originalRoute = (
  delivery: Channel.Delivery,
  queue: string
): { readonly exchange: string; readonly routingKey: string } => {
  const deaths: unknown = delivery.properties.headers?.["x-death"]
  if (Array.isArray(deaths)) {
    // Most recent first: the oldest record of this queue is the first route.
    for (let i = deaths.length - 1; i >= 0; i--) {
      const death = deaths[i] as { readonly queue?: unknown; readonly exchange?: unknown; readonly "routing-keys"?: unknown }
      const keys = death?.["routing-keys"]
      if (death?.queue === queue && typeof death.exchange === "string" && Array.isArray(keys) && typeof keys[0] === "string") {
        return { exchange: death.exchange, routingKey: keys[0] }
      }
    }
  }
  // A retry's copy carries its first route (and its attempt, which marks it as ours).
  const headers = delivery.properties.headers
  const exchange: unknown = headers?.["x-original-exchange"]
  const routingKey: unknown = headers?.["x-original-routing-key"]
  if (typeof headers?.[Outcome.attemptHeader] === "number" && typeof exchange === "string" && typeof routingKey === "string") {
    return { exchange, routingKey }
  }
  // The delivery's own fields carry both (and nothing needs a copy of them).
  return delivery.fields
}

export const stringOrUndefined = (value: unknown): string | undefined => typeof value === "string" ? value : undefined
