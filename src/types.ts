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
  /** With `logprobs` requested: one entry per id of `tokenIds`, in order. */
  logprobs?: TokenLogprob[];
}

/** A generated token's log-probability and its most likely alternatives (natural log). */
export interface TokenLogprob {
  token: number;
  /**
   * Natural log of the token's probability in the distribution it was sampled from: after logit bias,
   * penalties, grammar and, when temperature > 0, temperature and top-k/top-p/min-p (llama.cpp's
   * post-sampling probabilities; at temperature 0 the model's own distribution, biased and penalised).
   */
  logprob: number;
  /** The `logprobs` most likely tokens of that distribution, most likely first (may include `token`). */
  top: { token: number; logprob: number }[];
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
  /** With `logprobs` requested: the concatenation of every chunk's `logprobs`. */
  logprobs?: TokenLogprob[];
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
  /**
   * llama.cpp's repeat penalty: the logit of each token among the last `repeatLastN` context tokens (prompt
   * and generated) is divided by it when positive, multiplied when negative. 0 < value <= 10; 1 (the
   * default) is off.
   */
  repeatPenalty?: number;
  /**
   * How many of the last context tokens the three penalties look at (llama.cpp's `repeat_last_n`): 0 turns
   * them off, -1 means the whole context. Defaults to 64.
   */
  repeatLastN?: number;
  /** OpenAI's: subtracted once from the logit of each token in that window. -2 to 2, default 0. */
  presencePenalty?: number;
  /** OpenAI's: subtracted from a token's logit once per occurrence in that window. -2 to 2, default 0. */
  frequencyPenalty?: number;
  /**
   * Added to the logits of the given token ids (OpenAI's `logit_bias`): -100 to 100; -100 bans the token and
   * 100 all but forces it. End-of-generation tokens can be biased too.
   */
  logitBias?: Readonly<Record<number, number>>;
}

/**
 * A grammar that constrains sampling (the engine must support grammars: `capabilities.grammar`).
 * - `gbnf`: llama.cpp's GBNF text, whose rule `root` matches the whole output. With `trigger`, the output is
 *   free until it contains `trigger`, and from the trigger's first character on it must match `root`
 *   (llama.cpp's lazy grammars: tool calls that may or may not come).
 * - `json`: any JSON object (OpenAI's `response_format: {type: "json_object"}`).
 * - `json_schema`: JSON valid against the schema. Unsupported schema keywords are refused with
 *   `invalid_request` naming them, never ignored.
 */
export type GrammarSpec =
  | { type: "gbnf"; grammar: string; trigger?: string }
  | { type: "json" }
  | { type: "json_schema"; schema: Readonly<Record<string, unknown>> };

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
  /**
   * Generate at least this many tokens: until then end-of-generation tokens and `stopTokenIds` cannot be
   * sampled and stop strings do not match (vLLM's `min_tokens`). Defaults to 0.
   */
  minTokens?: number;
  /** Constrain the output with a grammar or a JSON schema. */
  grammar?: GrammarSpec;
  /**
   * Report each generated token's log-probability with this many alternatives (0 to 20) in every chunk's
   * `logprobs`. Off (and free) when absent.
   */
  logprobs?: number;
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
  /**
   * Speculative decoding (the runtime's `drafter`): draft tokens are verified several per step, and chunks
   * may then carry several tokens. Defaults to true when the runtime has a drafter and the request uses
   * plain sampling; false opts out. Verification supports temperature, top-k, top-p, min-p and seed only:
   * requests with a grammar, logprobs, penalties, logitBias or minTokens do not speculate, and asking
   * `true` with them, or on a runtime without a drafter, is refused (`invalid_request`).
   */
  speculative?: boolean;
}
