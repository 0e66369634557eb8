/**
 * Two descriptions of one exchange or queue merged field by field (and
 * `arguments` key by key), for {@link Topology.combine}: a field one leaves
 * out never overrides one the other sets, and two values that differ are
 * recorded as a mismatch (the first is kept).
 *
 * @internal
 */
import type { ExchangeSpec, Mismatch, QueueSpec } from "../Topology.ts"

/** One object's two descriptions, field by field; `arguments` key by key. */
export const mergeSpec = <S extends QueueSpec | ExchangeSpec>(
  kind: Mismatch["kind"],
  self: S,
  that: S,
  mismatches: Array<Mismatch>
): S => {
  const merged: Record<string, unknown> = { ...self }
  for (const [field, value] of Object.entries(that)) {
    if (field === "arguments") continue
    merged[field] = pick(kind, self.name, field, (self as unknown as Record<string, unknown>)[field], value, mismatches)
  }
  const args: Record<string, unknown> = { ...self.arguments }
  for (const [key, value] of Object.entries(that.arguments ?? {})) {
    args[key] = pick(kind, self.name, `arguments.${key}`, self.arguments?.[key], value, mismatches)
  }
  merged.arguments = args
  return merged as S
}

const pick = (
  kind: Mismatch["kind"],
  name: string,
  field: string,
  first: unknown,
  second: unknown,
  mismatches: Array<Mismatch>
): unknown => {
  if (second === undefined) return first
  if (first === undefined) return second
  if (canonical(first) !== canonical(second)) mismatches.push({ kind, name, field, values: [first, second] })
  return first
}

/** JSON with sorted keys: equal values, equal text. */
export const canonical = (value: unknown): string =>
  JSON.stringify(value, (_, v: unknown) =>
    typeof v === "object" && v !== null && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => a.localeCompare(b)))
      : v) ?? "undefined"
