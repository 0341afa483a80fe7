import type { Engine } from "./Engine.ts";
import { LlamaEngine, type LlamaEngineOptions } from "./LlamaEngine.ts";

/**
 * Loads the engine for a local GGUF model (the bundled one by default): the one place a model is loaded, so
 * the runtime above it only ever sees the `Engine` contract. Throws what `LlamaEngine.create` throws.
 */
export function createEngine(options: LlamaEngineOptions = {}): Promise<Engine> {
  return LlamaEngine.create(options);
}
