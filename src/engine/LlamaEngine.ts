import { availableParallelism } from "node:os";
import { basename } from "node:path";
import {
  type CustomBatchingPrioritizationStrategy,
  getLlama,
  getLlamaGpuTypes,
  type Llama,
  type LlamaContext,
  type LlamaContextSequence,
  type LlamaModel,
  type Token,
} from "node-llama-cpp";
import { z } from "zod";
import { Vocabulary } from "../detok/Vocabulary.ts";
import { SluiceError } from "../errors.ts";
import { abortSignal, callback, integer, parseOptions } from "../parseOptions.ts";
import { type ChatTemplate, llamaChatTemplate } from "./ChatTemplate.ts";
import { checkGguf } from "./checkGguf.ts";
import type { Engine, EngineBackend, EngineInfo, SamplerConfig, StepItem, StepOutcome } from "./Engine.ts";
import { BUNDLED_MODEL_PATH } from "./modelPath.ts";

export interface LlamaEngineOptions {
  /** Path of a local GGUF file. Defaults to the bundled model. */
  model?: string;
  /** Batch slots (concurrent generations), 1 to 256 (llama.cpp's `LLAMA_MAX_SEQ`). Defaults to 4. */
  slots?: number;
  /** Tokens per slot (prompt + generation), 2 to 2^20. Defaults to the model's training context, at most 2048. */
  contextSize?: number;
  /** CPU threads for llama.cpp, 1 to 1024. Defaults to half the available cores (at least 1): more oversubscribes. */
  threads?: number;
  /** Most tokens in one step, 1 to 65536. Defaults to 512. The runtime keeps every step within it. */
  batchSize?: number;
  /**
   * Where llama.cpp runs: `"cuda"`, `"vulkan"` or `"metal"` (node-llama-cpp's prebuilt GPU builds; loading
   * fails if that build cannot run here), `"auto"` (the best build that loads, else the CPU) or `"off"` (the
   * CPU). Defaults to `"auto"` where node-llama-cpp finds a GPU toolkit on the machine (CUDA or Vulkan
   * libraries, Apple silicon), else `"off"`, so a CPU-only machine never probes GPU builds. `info.backend`
   * says which one runs.
   */
  gpu?: LlamaGpu;
  /**
   * Model layers to offload to the GPU: a count, `"max"` (every layer) or `"auto"` (as many as fit in its free
   * memory). Defaults to `"auto"`. Ignored when the CPU runs the model.
   */
  gpuLayers?: number | "max" | "auto";
  /** Model load progress, 0..1. */
  onLoadProgress?: (progress: number) => void;
  /** Aborts loading. */
  signal?: AbortSignal;
}

/** The `gpu` option's values. */
export type LlamaGpu = "auto" | "cuda" | "vulkan" | "metal" | "off";
const GPU_VALUES = ["auto", "cuda", "vulkan", "metal", "off"] as const satisfies readonly LlamaGpu[];
const GPU_LAYERS_RULE = 'must be an integer >= 0, "max" or "auto"';

/** llama.cpp's limit on sequences in one context (`LLAMA_MAX_SEQ`). */
export const MAX_SLOTS = 256;

/** The schema `LlamaEngine.create` checks its options against (also the base of `Runtime.create`'s). */
export const llamaEngineOptionsSchema = z.strictObject({
  model: z
    .string({ error: "must be the path of a local .gguf file" })
    .min(1, { error: "must be the path of a local .gguf file" })
    .optional(),
  slots: integer(1, MAX_SLOTS).optional(),
  contextSize: integer(2, 1 << 20).optional(),
  threads: integer(1, 1024).optional(),
  batchSize: integer(1, 1 << 16).optional(),
  gpu: z.enum(GPU_VALUES, { error: `must be one of ${GPU_VALUES.join(", ")}` }).optional(),
  gpuLayers: z
    .union(
      [
        z.number().int({ error: GPU_LAYERS_RULE }).min(0, { error: GPU_LAYERS_RULE }),
        z.enum(["max", "auto"]),
      ],
      {
        error: GPU_LAYERS_RULE,
      },
    )
    .optional(),
  onLoadProgress: callback<(progress: number) => void>().optional(),
  signal: abortSignal().optional(),
});

export function defaultThreads(): number {
  return Math.max(1, Math.floor(availableParallelism() / 2));
}

/**
 * The `gpu` option as `getLlama` takes it. Without one, "auto" only where node-llama-cpp detects a GPU
 * toolkit: "auto" elsewhere would try to load each GPU build before settling on the CPU.
 */
async function llamaGpu(gpu: LlamaGpu | undefined): Promise<"auto" | "cuda" | "vulkan" | "metal" | false> {
  if (gpu === "off") return false;
  if (gpu !== undefined) return gpu;
  const usable = await getLlamaGpuTypes("supported");
  return usable.some((type) => type !== false) ? "auto" : false;
}

type Generator = AsyncGenerator<Token, void, undefined | Token | Token[]>;

// Every item of a step is already sized by the runtime to fit the batch; decodes go first so that, should the
// engine ever have to split, a long prefill never starves a generating slot. Must return the original items.
const decodeFirst: CustomBatchingPrioritizationStrategy = ({ items, size }) => {
  let left = size;
  const result = [];
  for (const item of [...items].sort((a, b) => a.tokens.length - b.tokens.length)) {
    if (left <= 0) break;
    const processAmount = Math.min(item.tokens.length, left);
    left -= processAmount;
    result.push({ item, processAmount });
  }
  return result;
};

/** node-llama-cpp (CPU or GPU): one context with a fixed pool of sequences, one sequence per slot. */
export class LlamaEngine implements Engine {
  readonly info: EngineInfo;
  readonly threads: number;
  readonly #llama: Llama;
  readonly #model: LlamaModel;
  readonly #context: LlamaContext;
  readonly #sequences: LlamaContextSequence[];
  /** The live sampling generator of each slot, created by the slot's first sampling item. */
  readonly #generators: (Generator | undefined)[];
  readonly #lastSampled: (number | undefined)[];
  #closed = false;

  private constructor(
    llama: Llama,
    model: LlamaModel,
    context: LlamaContext,
    info: EngineInfo,
    threads: number,
  ) {
    this.#llama = llama;
    this.#model = model;
    this.#context = context;
    this.info = info;
    this.threads = threads;
    this.#sequences = Array.from({ length: info.slots }, () => context.getSequence());
    this.#generators = new Array(info.slots).fill(undefined);
    this.#lastSampled = new Array(info.slots).fill(undefined);
  }

  /**
   * Checks the GGUF, loads it and creates one context with `slots` sequences. Throws `invalid_option` for a
   * bad option (before anything is read), `model_invalid` for a file llama.cpp cannot load, and
   * `model_load_failed` when loading fails.
   */
  static async create(options: LlamaEngineOptions = {}): Promise<LlamaEngine> {
    parseOptions(llamaEngineOptionsSchema, options, "LlamaEngine.create");
    const modelPath = options.model ?? BUNDLED_MODEL_PATH;
    const slots = options.slots ?? 4;
    const threads = options.threads ?? defaultThreads();
    // The one read of the file by Sluice: checked, and its vocabulary taken from the same pass.
    const checked = await checkGguf(modelPath);
    const { contextLength } = checked;
    const contextSize = options.contextSize ?? Math.min(contextLength || 2048, 2048);
    const batchSize = options.batchSize ?? 512;
    const gpu = await llamaGpu(options.gpu);
    let llama: Llama;
    try {
      llama = await getLlama({
        gpu,
        build: "never",
        skipDownload: true,
        maxThreads: threads,
        logLevel: "error" as never,
        progressLogs: false,
      });
    } catch (cause) {
      throw new SluiceError(
        "model_load_failed",
        `gpu: ${String(gpu || "off")}: node-llama-cpp could not load that llama.cpp build here ` +
          `(${(cause as Error).message}); use gpu "auto" or "off".`,
        { cause },
      );
    }
    const backend: EngineBackend = llama.gpu === false ? "cpu" : llama.gpu;
    let model: LlamaModel | undefined;
    try {
      model = await llama.loadModel({
        modelPath,
        gpuLayers: backend === "cpu" ? 0 : (options.gpuLayers ?? "auto"),
        ...(options.onLoadProgress ? { onLoadProgress: options.onLoadProgress } : {}),
        ...(options.signal ? { loadSignal: options.signal } : {}),
      });
      const context = await model.createContext({
        sequences: slots,
        contextSize,
        threads,
        batchSize,
        batching: { itemPrioritizationStrategy: decodeFirst },
        ...(options.signal ? { createSignal: options.signal } : {}),
      });
      const vocabulary = Vocabulary.fromGguf(checked.vocabulary);
      const info: EngineInfo = {
        model: basename(modelPath),
        slots,
        // node-llama-cpp rounds the context up; the usable per-sequence size is what the sequence reports.
        contextSize: context.contextSize,
        vocabulary,
        addBos: model.tokens.shouldPrependBosToken,
        maxStepTokens: context.batchSize,
        capabilities: { promptCache: true, grammar: false, logprobs: false },
        backend,
        gpuLayers: model.gpuLayers,
      };
      return new LlamaEngine(llama, model, context, info, threads);
    } catch (cause) {
      await model?.dispose().catch(() => {});
      await llama.dispose().catch(() => {});
      if (cause instanceof SluiceError) throw cause;
      throw new SluiceError("model_load_failed", `Could not load ${modelPath}: ${(cause as Error).message}`, {
        cause,
      });
    }
  }

  chatTemplate(override?: string): ChatTemplate | undefined {
    return llamaChatTemplate(this.#model, this.info.addBos, override);
  }

  tokenize(text: string, options: { special: boolean }): number[] {
    return this.#model.tokenize(text, options.special) as number[];
  }

  step(items: readonly StepItem[]): Promise<StepOutcome[]> {
    if (this.#closed) return Promise.reject(new SluiceError("engine_failed", "The engine is closed."));
    // Issued in one synchronous pass so node-llama-cpp gathers every item into one llama_decode.
    return Promise.all(items.map((item) => this.#run(item)));
  }

  async #run(item: StepItem): Promise<StepOutcome> {
    try {
      if (item.sample === undefined) {
        await this.#sequences[item.slot]!.evaluateWithoutGeneratingNewTokens(item.tokens as Token[]);
        return { ok: true, token: undefined };
      }
      let generator = this.#generators[item.slot];
      if (generator === undefined) {
        generator = this.#startGenerator(item.slot, item.tokens, item.sample);
      } else if (item.tokens.length !== 1 || item.tokens[0] !== this.#lastSampled[item.slot]) {
        // The generator feeds back what it sampled; anything else would desynchronise the KV cache.
        throw new SluiceError("internal_error", `Slot ${item.slot} was fed tokens it did not sample.`);
      }
      const next = await generator.next();
      if (next.done) throw new SluiceError("engine_error", "The engine ended the sequence unexpectedly.");
      this.#lastSampled[item.slot] = next.value;
      return { ok: true, token: next.value };
    } catch (error) {
      return { ok: false, error };
    }
  }

  #startGenerator(slot: number, tokens: readonly number[], sample: SamplerConfig): Generator {
    const generator = this.#sequences[slot]!.evaluate(tokens as Token[], {
      temperature: sample.temperature,
      topK: sample.topK,
      topP: sample.topP,
      minP: sample.minP,
      seed: sample.seed,
      yieldEogToken: true,
      contextShift: {
        // The runtime keeps prompt + maxTokens within the context; a shift would silently drop the prompt.
        strategy: () => {
          throw new SluiceError("engine_error", "The slot's context is full.");
        },
      },
    });
    this.#generators[slot] = generator;
    return generator;
  }

  cachedTokens(slot: number): readonly number[] {
    return this.#sequences[slot]!.contextTokens as number[];
  }

  async releaseSlot(slot: number): Promise<void> {
    const generator = this.#generators[slot];
    this.#generators[slot] = undefined;
    this.#lastSampled[slot] = undefined;
    // The generator must have exited before the KV cache is touched (erasing under a queued decode corrupts
    // the sequence for every later request). Its last sampled token was never fed: it is not in the cache.
    if (generator) await generator.return();
  }

  async trimSlot(slot: number, keep: number): Promise<number> {
    const sequence = this.#sequences[slot]!;
    const end = sequence.nextTokenIndex;
    if (keep >= end) return end;
    try {
      if (keep === 0) await sequence.clearHistory();
      else await sequence.eraseContextTokenRanges([{ start: keep, end }]);
      return sequence.nextTokenIndex;
    } catch {
      // A model whose memory cannot drop a tail (recurrent state): start over rather than keep a wrong cache.
      await sequence.clearHistory();
      return 0;
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.allSettled(this.#generators.map((g) => g?.return()));
    await this.#context.dispose().catch(() => {});
    await this.#model.dispose().catch(() => {});
    await this.#llama.dispose().catch(() => {});
  }
}
