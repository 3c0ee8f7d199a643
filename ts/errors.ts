/**
 * Errors thrown by layerfold. Every failure carries a stable `code` (README, "Errors"); codes are
 * never renamed or reused.
 */

/** Every code layerfold throws. */
export const ERROR_CODES = [
  'E_NOT_FOUND',
  'E_MODEL_FORMAT',
  'E_UNSUPPORTED',
  'E_CONFIG',
  'E_DATA',
  'E_OUTPUT_EXISTS',
  'E_DISK_FULL',
  'E_IO',
  'E_OOM',
  'E_DEVICE',
  'E_ABORTED',
  'E_DISPOSED',
  'E_INTERNAL',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

/** A failure with a stable machine-readable `code` and a message that says what to do. */
export class LayerfoldError extends Error {
  readonly code: ErrorCode;
  readonly details?: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown; details?: Record<string, unknown> }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'LayerfoldError';
    this.code = code;
    this.details = options?.details;
  }
}

function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === 'string' && (ERROR_CODES as readonly string[]).includes(code);
}

/** Any error from the native addon as a `LayerfoldError` (unknown failures become `E_INTERNAL`). */
export function toLayerfoldError(e: unknown): LayerfoldError {
  if (e instanceof LayerfoldError) return e;
  const code = (e as { code?: unknown })?.code;
  const message = e instanceof Error ? e.message : String(e);
  return new LayerfoldError(isErrorCode(code) ? code : 'E_INTERNAL', message, { cause: e });
}
