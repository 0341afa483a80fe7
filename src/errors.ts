/**
 * Every error Sluice raises is a `SluiceError` with a stable `code`. HTTP statuses are mapped only at the
 * server edge. A cancel is a normal finish, never an error.
 */
export type SluiceErrorCode =
  | "invalid_request"
  /** A constructor or factory option (Runtime.create, LlamaEngine.create, createServer) is wrong. */
  | "invalid_option"
  | "prompt_too_long"
  | "queue_full"
  | "runtime_closed"
  | "engine_error"
  | "engine_failed"
  | "model_invalid"
  | "model_load_failed"
  | "channel_reused"
  | "internal_error";

export class SluiceError extends Error {
  override readonly name = "SluiceError";
  readonly code: SluiceErrorCode;
  /** The request field at fault, when there is one (e.g. `maxTokens`). */
  readonly param: string | undefined;

  constructor(code: SluiceErrorCode, message: string, options?: { param?: string; cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.param = options?.param;
  }

  toJSON(): { code: string; message: string; param?: string } {
    return this.param === undefined
      ? { code: this.code, message: this.message }
      : { code: this.code, message: this.message, param: this.param };
  }
}

/** Any thrown value as `{ code, message }`, for error chunks. */
export function toChunkError(error: unknown, fallbackCode: SluiceErrorCode = "internal_error") {
  if (error instanceof SluiceError) return { code: error.code, message: error.message };
  const message = error instanceof Error ? error.message : String(error);
  return { code: fallbackCode, message };
}
