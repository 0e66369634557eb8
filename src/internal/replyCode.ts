/**
 * The broker's AMQP 0-9-1 reply codes, classified once: what each one is
 * called and whether the same request, made again, can succeed. Channel,
 * publish and topology errors answer `isRetryable` from here.
 *
 * @internal
 */

const names: Readonly<Record<number, string>> = {
  311: "CONTENT_TOO_LARGE",
  312: "NO_ROUTE",
  313: "NO_CONSUMERS",
  320: "CONNECTION_FORCED",
  402: "INVALID_PATH",
  403: "ACCESS_REFUSED",
  404: "NOT_FOUND",
  405: "RESOURCE_LOCKED",
  406: "PRECONDITION_FAILED",
  501: "FRAME_ERROR",
  502: "SYNTAX_ERROR",
  503: "COMMAND_INVALID",
  504: "CHANNEL_ERROR",
  505: "UNEXPECTED_FRAME",
  506: "RESOURCE_ERROR",
  530: "NOT_ALLOWED",
  540: "NOT_IMPLEMENTED",
  541: "INTERNAL_ERROR"
}

/**
 * Retrying can help: no code (the connection went, not the broker's
 * verdict), the broker closing connections (320: a node stopping), a lock
 * another connection holds (405: an exclusive queue), the broker short of a
 * resource (506), or its own fault (541). Every other code is the broker's
 * answer to the request itself (no such exchange, refused access, a
 * conflicting declaration, a malformed frame): asking again gets it again.
 */
export const isRetryable = (code: number | undefined): boolean =>
  code === undefined || code === 320 || code === 405 || code === 506 || code === 541

/** The code's name (`NOT_FOUND`), or the number itself when it is not one of AMQP's. */
export const nameOf = (code: number): string => names[code] ?? String(code)

/** A declaration that disagrees with what the broker has (406 PRECONDITION_FAILED). */
export const isConflict = (code: number | undefined): boolean => code === 406
