import { GREEDY, type SamplerConfig } from "../../src/engine/Engine.ts";

/** A whole `SamplerConfig` for engine-level tests: greedy, no penalties, biases, grammar or logprobs. */
export function samplerConfig(overrides: Partial<SamplerConfig> = {}): SamplerConfig {
  return { ...GREEDY, topK: 40, topP: 0.95, seed: 1, ...overrides };
}
