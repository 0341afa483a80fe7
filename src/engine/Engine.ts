import type { Vocabulary } from "../detok/Vocabulary.ts";

/** Per-request sampler settings, fixed for the life of a generation. */
export interface SamplerConfig {
  temperature: number;
  topK: number;
  topP: number;
  minP: number;
  seed: number;
}

/**
 * One slot's share of a step. `sample` undefined: a prefill chunk (tokens go into the KV cache, nothing is
 * sampled). `sample` set: feed `tokens` (the last prompt chunk, or the previously sampled token) and sample
 * one next token.
 */
export interface StepItem {
  slot: number;
  tokens: readonly number[];
  sample: SamplerConfig | undefined;
}

/** What one item of a step produced. An error here belongs to that slot's request only. */
export type StepOutcome = { ok: true; token: number | undefined } | { ok: false; error: unknown };

export interface EngineInfo {
  /** Human-readable model name (file name for local models). */
  model: string;
  slots: number;
  /** Tokens one slot can hold: prompt + generated. */
  contextSize: number;
  vocabulary: Vocabulary;
}

/**
 * The one interface the step loop drives. A step is one batched engine call advancing every item. The runtime
 * never issues two steps at once and never resets a slot while a step is in flight.
 */
export interface Engine {
  readonly info: EngineInfo;
  /** Text to token ids. `special`: parse special-token text (`<|im_start|>`) into control tokens. No BOS added. */
  tokenize(text: string, options: { special: boolean }): number[];
  /** Run one step. Resolves one outcome per item, in order; rejects only when the whole engine failed. */
  step(items: readonly StepItem[]): Promise<StepOutcome[]>;
  /** Forget a slot's state so another request can use it. Only called when no step is in flight. */
  resetSlot(slot: number): Promise<void>;
  close(): Promise<void>;
}
