/**
 * The public data contract of Sluice: what a request looks like, what a consumer receives, and how a
 * generation ends. Shapes may grow; names are stable.
 */

/** How a generation ended. Exactly one terminal chunk carries it. */
export type FinishReason = "eos" | "length" | "stop" | "cancelled" | "error";

export interface ChunkError {
  /** Stable machine-readable code, e.g. `engine_error`, `runtime_closed`. */
  code: string;
  message: string;
}

/** One delta on a channel. */
export interface StreamChunk {
  /** Token ids since the previous chunk. May hold several ids (coalescing, stream interval, bursts). */
  tokenIds: number[];
  /** Text since the previous chunk; always well-formed (no lone surrogates, invalid bytes -> U+FFFD). */
  text: string;
  /** True on the one terminal chunk. */
  finished: boolean;
  /** Set on the terminal chunk. */
  reason?: FinishReason;
  /** The matched stop string or stop token id, when `reason === "stop"`. */
  stop?: string | number;
  /** Set when `reason === "error"`. */
  error?: ChunkError;
}

export interface Usage {
  promptTokens: number;
  completionTokens: number;
  /** Prompt tokens found in the slot's prompt cache and not evaluated again (OpenAI's `cached_tokens`). */
  cachedTokens: number;
}

export interface Timings {
  /** Submission to admission into a slot. */
  queuedMs: number;
  /** Admission to the first generated token (prompt processing). */
  prefillMs: number;
  /** First generated token to the terminal chunk. */
  decodeMs: number;
  /** Submission to the first generated token (time to first token). */
  firstTokenMs: number;
  /** Completion tokens per second over the decode phase. */
  tokensPerSecond: number;
}

/** What `channel.result` resolves with once the terminal chunk is queued. */
export interface GenerationResult {
  id: string;
  reason: FinishReason;
  stop?: string | number;
  error?: ChunkError;
  /** Exactly the concatenation of every chunk's `text`. */
  text: string;
  /** Exactly the concatenation of every chunk's `tokenIds`. */
  tokenIds: number[];
  usage: Usage;
  timings: Timings;
}

/** Sampling parameters. Temperature 0 (the default) is greedy decoding. */
export interface SamplingOptions {
  /** Defaults to 0 (greedy). */
  temperature?: number;
  /** Defaults to 40; 0 means the whole vocabulary. */
  topK?: number;
  /** Defaults to 0.95. */
  topP?: number;
  /** Defaults to 0. */
  minP?: number;
  /**
   * Seed of the sampler; defaults to a random one. Same seed + same prompt = same output when the request
   * runs alone (see the README's Reproducibility).
   */
  seed?: number;
}

/** One generation request. */
export interface GenerationRequest extends SamplingOptions {
  /** Prompt text, or token ids (used as given: no BOS is added to token ids). */
  prompt: string | readonly number[];
  /** Most tokens to generate. Defaults to what is left of the context after the prompt, at most 256. */
  maxTokens?: number;
  /** Stop strings: generation ends when the text contains one; the stop text is not emitted. */
  stop?: string | readonly string[];
  /** Stop token ids: generation ends after one of them is generated. */
  stopTokenIds?: readonly number[];
  /** Emit a chunk every N tokens (>= 1). Gates emission only; defaults to 1. */
  streamInterval?: number;
  /** Remove control tokens from `text` (token ids keep them). Defaults to true. */
  skipSpecialTokens?: boolean;
  /** Keep generating past end-of-generation tokens. Defaults to false. */
  ignoreEos?: boolean;
  /** Parse special-token text (e.g. `<|im_start|>`) in a text prompt. Defaults to false (safe for user text). */
  parseSpecialTokens?: boolean;
  /** Add the model's BOS token in front of a text prompt when the model asks for one. Defaults to true. */
  addBos?: boolean;
  /** Aborting it is the same as `channel.cancel()`. An already-aborted signal gives a `cancelled` finish. */
  signal?: AbortSignal;
  /** Stable request id; generated when absent. */
  id?: string;
  /** Make `channel.result` reject with a `SluiceError` when the generation ends with `error`. Defaults to false. */
  rejectOnError?: boolean;
  /**
   * Reuse a slot's cached prompt prefix (llama.cpp's `cache_prompt`). Defaults to true (when the runtime's
   * `promptCache` is on); false evaluates the whole prompt on an emptied slot.
   */
  cachePrompt?: boolean;
}
