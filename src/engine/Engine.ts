import type { Vocabulary } from "../detok/Vocabulary.ts";
import type { GrammarSpec, TokenLogprob } from "../types.ts";
import type { ChatTemplate } from "./ChatTemplate.ts";

/** Per-request sampler settings, fixed for the life of a generation. */
export interface SamplerConfig {
  temperature: number;
  topK: number;
  topP: number;
  minP: number;
  seed: number;
  /** llama.cpp's repeat penalty; 1 is off. */
  repeatPenalty: number;
  /** Context tokens the penalties look back over; 0 off, -1 the whole context. */
  repeatLastN: number;
  presencePenalty: number;
  frequencyPenalty: number;
  /** Token id → logit bias (-100 to 100), or undefined for none. */
  logitBias: ReadonlyMap<number, number> | undefined;
  /**
   * Token ids that cannot be sampled while fewer than `count` tokens have been sampled for this request
   * (`minTokens`: end-of-generation and stop tokens), or undefined.
   */
  suppress: { tokens: readonly number[]; count: number } | undefined;
  /** Checked GBNF from `grammarText`, with the lazy trigger if any (needs `capabilities.grammar`). */
  grammar: { gbnf: string; trigger?: string } | undefined;
  /** Alternatives per sampled token to report (0-20), or undefined for no log-probabilities. */
  logprobs: number | undefined;
}

/** Greedy sampling with nothing else: no penalties, biases, grammar or log-probabilities. */
export const GREEDY: SamplerConfig = Object.freeze({
  temperature: 0,
  topK: 1,
  topP: 1,
  minP: 0,
  seed: 0,
  repeatPenalty: 1,
  repeatLastN: 0,
  presencePenalty: 0,
  frequencyPenalty: 0,
  logitBias: undefined,
  suppress: undefined,
  grammar: undefined,
  logprobs: undefined,
});

/** Whether a sampler applies a repeat, presence or frequency penalty (over a window of at least one token). */
export function hasPenalties(sample: SamplerConfig): boolean {
  return (
    sample.repeatLastN !== 0 &&
    (sample.repeatPenalty !== 1 || sample.presencePenalty !== 0 || sample.frequencyPenalty !== 0)
  );
}

/**
 * Whether a sampler is llama.cpp's sampler chain alone (temperature, top-k, top-p, min-p, seed): no grammar,
 * log-probabilities, biases, banned tokens or penalties. Only such requests speculate, and an engine may sample
 * them on its fast path.
 */
export function isPlainSampler(sample: SamplerConfig): boolean {
  return (
    sample.grammar === undefined &&
    sample.logprobs === undefined &&
    sample.logitBias === undefined &&
    sample.suppress === undefined &&
    !hasPenalties(sample)
  );
}

/**
 * One slot's share of a step. `sample` undefined: a prefill chunk (tokens go into the KV cache, nothing is
 * sampled). `sample` set: feed `tokens` (the last prompt chunk, or the previously sampled token) and sample
 * one next token.
 *
 * `draft` (speculative decoding, engines with `capabilities.speculative`, never with `sample.grammar` or
 * `sample.logprobs`): tokens guessed to follow `tokens`. The engine feeds `tokens` then the draft, samples the
 * next token after the last of `tokens` and after each draft token, accepts the longest draft prefix that
 * equals what it sampled (the outcome's `accepted`) and returns its own token after that prefix (`token`).
 * Rejected draft tokens are gone from the KV cache when the step resolves: the cache then holds `tokens` and
 * the accepted prefix, and, as for a plain item, not `token`. A request carries `draft` (empty when there is
 * no guess) on every sampling item or on none: it picks the request's sampling path (see
 * `EngineCapabilities.speculative`).
 */
export interface StepItem {
  slot: number;
  tokens: readonly number[];
  sample: SamplerConfig | undefined;
  draft?: readonly number[];
}

/**
 * What one item of a step produced. An error here belongs to that slot's request only. For an item with a
 * `draft`, `accepted` (0 to the draft's length) draft tokens were accepted: the request's new tokens are
 * `draft[0..accepted)` then `token`.
 */
export type StepOutcome =
  | { ok: true; token: number | undefined; logprob?: TokenLogprob; accepted?: number }
  | { ok: false; error: unknown };

/** What an engine can do beyond running steps. */
export interface EngineCapabilities {
  /**
   * Slots keep their KV cache after a request: `cachedTokens` reports it and `trimSlot` keeps a prefix of it,
   * so a request sharing a prefix with a slot's last one reads only the rest. When false, `cachedTokens` is
   * always empty and the runtime starts every request from an empty slot.
   */
  promptCache: boolean;
  /** `grammarText` compiles grammars and steps honour `SamplerConfig.grammar`. */
  grammar: boolean;
  /** Steps report `logprob` for items whose sampler asks for `logprobs`. */
  logprobs: boolean;
  /**
   * Steps verify `StepItem.draft` (speculative decoding) in the same batch as every other item. Greedy
   * output is the same token for token with or without drafts; with temperature > 0 each position's token is
   * the target's own sample there, so the output follows the target's distribution whatever was drafted.
   */
  speculative: boolean;
}

export interface EngineInfo {
  /** Human-readable model name (file name for local models). */
  model: string;
  slots: number;
  /** Tokens one slot can hold: prompt + generated. */
  contextSize: number;
  vocabulary: Vocabulary;
  /** Whether a text prompt gets the BOS token in front (the model's `add_bos_token`, llama.cpp's rule). */
  addBos: boolean;
  /** Most tokens one step may carry across all its items (the engine's batch size). */
  maxStepTokens: number;
  /**
   * Fewest prompt tokens worth reading for one slot in a step (1 when any count reads at full speed). Below
   * it a chunk read over a long cache is disproportionately slow: llama.cpp's CPU flash-attention kernel
   * takes batches of fewer than 64 tokens through a scalar path whose cost grows with the cached context.
   * The runtime reads prompt chunks at least this long unless the chunk finishes the prompt, and leaves at
   * least this many tokens to read after a cached prefix when the prompt has them.
   */
  minPromptChunk?: number;
  capabilities: EngineCapabilities;
  /** Where the model runs, for engines that run one (the llama.cpp build in use). */
  backend?: EngineBackend;
  /** Model layers offloaded to the GPU (0 on the CPU), for engines that run a model. */
  gpuLayers?: number;
  /** llama.cpp's flash attention as configured (`"auto"`: on where the backend supports it). */
  flashAttention?: boolean | "auto";
}

/** The compute backend a model runs on. */
export type EngineBackend = "cpu" | "cuda" | "vulkan" | "metal";

/**
 * The one interface the step loop drives, and everything the runtime and the server rely on. A step is one
 * batched engine call advancing every item. The runtime never issues two steps at once and never calls
 * `releaseSlot` or `trimSlot` while a step is in flight.
 *
 * A slot's life: steps feed it tokens (appended to its KV cache); `releaseSlot` ends the request on it (the
 * cache stays); `trimSlot` keeps the first n cached tokens before the next request's first step.
 */
export interface Engine {
  readonly info: EngineInfo;
  /** Text to token ids. `special`: parse special-token text (`<|im_start|>`) into control tokens. No BOS added. */
  tokenize(text: string, options: { special: boolean }): number[];
  /** Run one step. Resolves one outcome per item, in order; rejects only when the whole engine failed. */
  step(items: readonly StepItem[]): Promise<StepOutcome[]>;
  /**
   * The tokens in the slot's KV cache, in order: every token a step fed it since it was last trimmed (a sampled
   * token is in it only once fed back). Empty without `capabilities.promptCache`.
   */
  cachedTokens(slot: number): readonly number[];
  /**
   * The request on the slot is over: end whatever per-request state the engine keeps for it (sampler,
   * generator). The KV cache stays as it is.
   */
  releaseSlot(slot: number): Promise<void>;
  /**
   * Keep the first `keep` cached tokens of a released slot and drop the rest; resolves with how many were
   * kept (fewer, down to 0, when the engine cannot cut there). `trimSlot(slot, 0)` empties the slot.
   */
  trimSlot(slot: number, keep: number): Promise<number>;
  /**
   * The model's chat template (or `override`, a Jinja template in its place), or undefined when the engine has
   * none that runs: callers then fall back to a format of their own.
   */
  chatTemplate(override?: string): ChatTemplate | undefined;
  /**
   * The GBNF a grammar spec compiles to (root rule `root`), checked: throws `SluiceError` `invalid_request`
   * for GBNF that does not parse or a JSON schema using a feature the engine cannot enforce (named in the
   * message). Present when `capabilities.grammar`.
   */
  grammarText?(spec: GrammarSpec): string;
  close(): Promise<void>;
}
