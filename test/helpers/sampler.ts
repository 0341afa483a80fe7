import type { SamplerConfig } from "../../src/engine/Engine.ts";

/** A whole `SamplerConfig` for engine-level tests: greedy, no penalties, biases, grammar or logprobs. */
export function samplerConfig(overrides: Partial<SamplerConfig> = {}): SamplerConfig {
  return {
    temperature: 0,
    topK: 40,
    topP: 0.95,
    minP: 0,
    seed: 1,
    repeatPenalty: 1,
    repeatLastN: 0,
    presencePenalty: 0,
    frequencyPenalty: 0,
    logitBias: undefined,
    suppress: undefined,
    grammar: undefined,
    logprobs: undefined,
    ...overrides,
  };
}
