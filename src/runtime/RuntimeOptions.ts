import { z } from "zod";
import type { Engine } from "../engine/Engine.ts";
import { type LlamaEngineOptions, llamaEngineOptionsSchema } from "../engine/LlamaEngine.ts";
import { SluiceError } from "../errors.ts";
import { integer, parseOptions, positiveNumber } from "../parseOptions.ts";
import { type Drafter, isDrafter } from "./Drafter.ts";

export interface RuntimeOptions extends Omit<LlamaEngineOptions, "signal"> {
  /**
   * Use this engine instead of loading a model (ScriptedEngine, a remote engine, a shared LlamaEngine). The
   * model options (`model`, `slots`, `contextSize`, `threads`, `batchSize`, `onLoadProgress`) belong to the
   * engine then and cannot be given with it.
   */
  engine?: Engine;
  /**
   * Prompt tokens read per step, an integer >= 1 or `"auto"`. `"auto"` (the default) sizes chunks so that a
   * step reading a prompt takes about `targetStepMs`, learned from the engine's measured step times; a number
   * fixes the chunk per slot. Either way it bounds how long a decoding stream waits for a prompt and how fast a
   * cancel lands while prefilling.
   */
  prefillChunkSize?: number | "auto";
  /**
   * The decode-gap budget, in ms (above 0, at most 60000): while streams are decoding, a step that reads
   * prompt tokens aims to take this long, so it bounds every stream's gap behind someone else's prompt (and a
   * cancel while prefilling). Smaller: smoother streams, a long prompt's first token later. By default each
   * prompt is read in about six steps: a sixth of its modelled read time, at least 3 decode steps and at most
   * 1 s (`PrefillSizer`), so a stream's longest gap is about a sixth of reading the prompt in one go while the
   * prompt itself loses only a few steps' overhead.
   */
  targetStepMs?: number;
  /**
   * With no stream decoding, the time a prompt-reading step may take, in ms (above 0, at most 60000): only a
   * cancel waits on it. Larger reads a lone prompt in fewer, more efficient steps (a whole batch when it fits,
   * as llama-server does); smaller lands a cancel during a long prefill sooner. Defaults to 500.
   */
  soloPrefillStepMs?: number;
  /**
   * Most requests waiting for a slot, an integer >= 0; a request that a free slot takes at once does not wait
   * and does not count. Beyond it generate() throws `queue_full`. Defaults to 256; 0 admits only what fits.
   */
  maxQueue?: number;
  /**
   * Keep each slot's KV cache after its request and give a new request the free slot whose cache shares the
   * longest prefix with its prompt, so it reads only the rest (requests opt out with `cachePrompt: false`).
   * Defaults to true; ignored when the engine has no prompt cache (`capabilities.promptCache`).
   */
  promptCache?: boolean;
  /** maxTokens when a request has none, an integer >= 1. Defaults to 256 (capped by the room left in the context). */
  defaultMaxTokens?: number;
  /**
   * Speculative decoding: what guesses the tokens that come next, for the engine to verify several per step.
   * `"prompt-lookup"`: n-gram matches against the prompt and the output so far (`PromptLookup`, n from 3 down
   * to 1; no second model); `"draft-model"`: a small model with the same vocabulary drafts greedily
   * (`ModelDrafter` over the `draftModel` engine; the default when `draftModel` is given, and refused without
   * it); `"off"` (the default otherwise), or a `Drafter` of your own (a `PromptLookup` with other n-gram sizes,
   * a `ModelDrafter` over an engine you created). Needs an engine that verifies drafts
   * (`capabilities.speculative`; ignored otherwise). Requests speculate unless they ask `speculative: false` or
   * use what verification does not support (grammar, logprobs, penalties, logitBias, minTokens). Greedy output
   * is the same token for token; see the README's Speculative decoding for sampling and seeds.
   */
  drafter?: "prompt-lookup" | "draft-model" | "off" | Drafter;
  /**
   * Path of a GGUF draft model for speculative decoding (llama-server's `--model-draft`): a smaller model with
   * the target's vocabulary (checked token for token; `invalid_option` otherwise). `Runtime.create` loads it
   * with the target's slots, threads, context size and GPU options and closes it on `close()`; `drafter`
   * then defaults to `"draft-model"` and cannot be another drafter. Defaults to none.
   */
  draftModel?: string;
  /**
   * Most draft tokens per request per step (llama.cpp's `--spec-draft-n-max`, formerly `--draft-max`), an
   * integer from 1 to 64. Defaults to 8. Each request's draft length adapts below it to its recent
   * acceptance (`DraftLength`), down to none.
   */
  draftMax?: number;
  /** Aborts model loading. */
  signal?: AbortSignal;
}

const ENGINE_METHODS = [
  "tokenize",
  "step",
  "cachedTokens",
  "releaseSlot",
  "trimSlot",
  "chatTemplate",
  "close",
] as const;

function isEngine(value: unknown): value is Engine {
  if (value === null || typeof value !== "object") return false;
  const engine = value as Record<string, unknown>;
  const info = engine.info as Record<string, unknown> | undefined;
  return (
    ENGINE_METHODS.every((method) => typeof engine[method] === "function") &&
    info !== undefined &&
    Number.isInteger(info.slots) &&
    (info.slots as number) >= 1 &&
    Number.isInteger(info.contextSize) &&
    (info.contextSize as number) >= 2 &&
    Number.isInteger(info.maxStepTokens) &&
    typeof info.addBos === "boolean" &&
    typeof info.capabilities === "object" &&
    typeof info.vocabulary === "object"
  );
}

const runtimeOptionsSchema = llamaEngineOptionsSchema.extend({
  engine: z
    .custom<Engine>(isEngine, {
      error: `must implement Engine (${ENGINE_METHODS.join(", ")}, and info with slots >= 1, contextSize >= 2 and a vocabulary)`,
    })
    .optional(),
  prefillChunkSize: z
    .union([z.literal("auto"), integer(1, 1 << 16)], {
      error: 'must be "auto" or an integer from 1 to 65536',
    })
    .optional(),
  targetStepMs: positiveNumber(60_000, "ms").optional(),
  soloPrefillStepMs: positiveNumber(60_000, "ms").optional(),
  maxQueue: integer(0, 1 << 24).optional(),
  defaultMaxTokens: integer(1, 1 << 24).optional(),
  promptCache: z.boolean({ error: "must be true or false" }).optional(),
  drafter: z
    .union([z.enum(["prompt-lookup", "draft-model", "off"]), z.custom<Drafter>(isDrafter)], {
      error: 'must be "prompt-lookup", "draft-model", "off" or a Drafter (name and start(prompt))',
    })
    .optional(),
  draftModel: z.string({ error: "must be the path of a GGUF file" }).min(1, "must not be empty").optional(),
  draftMax: integer(1, 64).optional(),
});

/** The options that load a model: they belong to a given engine and are refused beside it. */
const MODEL_OPTIONS = [
  "model",
  "slots",
  "contextSize",
  "threads",
  "batchSize",
  "gpu",
  "gpuLayers",
  "flashAttention",
  "onLoadProgress",
] as const;

/** Validates `Runtime.create`'s options eagerly; throws `SluiceError` `invalid_option` naming the option. */
export function parseRuntimeOptions(options: RuntimeOptions | undefined): RuntimeOptions {
  const parsed = parseOptions(runtimeOptionsSchema, options, "Runtime.create") as RuntimeOptions;
  if (parsed.engine !== undefined) {
    const clash = MODEL_OPTIONS.find((key) => parsed[key] !== undefined);
    if (clash !== undefined) {
      throw new SluiceError(
        "invalid_option",
        `Runtime.create: ${clash} cannot be given together with engine; it is the engine's (set it where the engine is created).`,
        { param: clash },
      );
    }
  }
  if (parsed.drafter === "draft-model" && parsed.draftModel === undefined) {
    throw new SluiceError(
      "invalid_option",
      'Runtime.create: drafter "draft-model" needs draftModel, the path of a GGUF draft model with the target\'s vocabulary; give draftModel or pick another drafter.',
      { param: "draftModel" },
    );
  }
  if (parsed.draftModel !== undefined && parsed.drafter !== undefined && parsed.drafter !== "draft-model") {
    throw new SluiceError(
      "invalid_option",
      `Runtime.create: draftModel drafts with the drafter "draft-model", not ${typeof parsed.drafter === "string" ? `"${parsed.drafter}"` : "a Drafter of your own"}; remove draftModel or drafter.`,
      { param: "draftModel" },
    );
  }
  return parsed;
}
