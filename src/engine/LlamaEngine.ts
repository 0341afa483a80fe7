import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { availableParallelism } from "node:os";
import { basename } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import {
  type CustomBatchingPrioritizationStrategy,
  getLlama,
  getLlamaGpuTypes,
  type Llama,
  type LlamaContext,
  type LlamaContextSequence,
  LlamaGrammar,
  LlamaGrammarEvaluationState,
  LlamaJsonSchemaGrammar,
  type LlamaModel,
  type SequenceEvaluateOptions,
  type Token,
  TokenBias,
} from "node-llama-cpp";
import { z } from "zod";
import { Vocabulary } from "../detok/Vocabulary.ts";
import { SluiceError } from "../errors.ts";
import { abortSignal, callback, integer, parseOptions } from "../parseOptions.ts";
import type { GrammarSpec, TokenLogprob } from "../types.ts";
import { type ChatTemplate, llamaChatTemplate } from "./ChatTemplate.ts";
import { checkGguf } from "./checkGguf.ts";
import {
  type Engine,
  type EngineBackend,
  type EngineInfo,
  hasPenalties,
  isPlainSampler,
  type SamplerConfig,
  type StepItem,
  type StepOutcome,
} from "./Engine.ts";
import { checkGbnf } from "./gbnfCheck.ts";
import { toGrammarSchema } from "./jsonSchemaSubset.ts";
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
  /**
   * llama.cpp's flash attention (llama-server's `--flash-attn`): `true`, `false` or `"auto"` (on where the
   * backend supports it). Defaults to `false` on the CPU and `"auto"` on a GPU. On the CPU llama.cpp's
   * flash-attention kernel is the slower one where it matters most here: reading 50 new prompt tokens after
   * 700 cached ones took 80 ms with it and 11 ms without (kjv-tiny, 1 thread), and a decode step at 900 tokens
   * of context 4.9 against 3.2 ms (BENCHMARKS.md, "prefix").
   */
  flashAttention?: boolean | "auto";
  /** Model load progress, 0..1. */
  onLoadProgress?: (progress: number) => void;
  /** Aborts loading. */
  signal?: AbortSignal;
}

/** The `gpu` option's values. */
export type LlamaGpu = "auto" | "cuda" | "vulkan" | "metal" | "off";
const GPU_VALUES = ["auto", "cuda", "vulkan", "metal", "off"] as const satisfies readonly LlamaGpu[];
const GPU_LAYERS_RULE = 'must be an integer >= 0, "max" or "auto"';

/**
 * Query rows per tile of llama.cpp's CPU flash-attention kernel (`GGML_FA_TILE_Q`): a batch with fewer rows
 * per sequence takes the scalar path, whose cost grows with the cached context. kjv-tiny, 1 thread, 700 cached
 * tokens: 50 new ones read in 169 ms, 64 in 13.5 ms.
 */
const FLASH_ATTENTION_TILE = 64;

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
  flashAttention: z
    .union([z.boolean(), z.literal("auto")], { error: 'must be true, false or "auto"' })
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

/** What a slot's generator yields: a token, with its probabilities when log-probabilities were asked. */
interface Sampled {
  token: Token;
  probabilities?: Map<Token, number>;
  confidence?: number;
}
/** Yields bare tokens on the fast path (no log-probabilities asked), `Sampled` otherwise. */
type Generator = AsyncGenerator<Token | Sampled, void, undefined | Token | Token[]>;

/** The log-probability JSON can carry for a probability of 0 (vLLM's convention). */
export const LOGPROB_FLOOR = -9999;

function logOf(probability: number | undefined): number {
  return probability !== undefined && probability > 0
    ? Math.max(LOGPROB_FLOOR, Math.log(probability))
    : LOGPROB_FLOOR;
}

/** Per-slot sampling state beyond node-llama-cpp's own: the grammar and biases of the request on it. */
interface SlotSampling {
  sampled: number;
  /** The grammar's evaluation state once it applies (at once, or from a lazy grammar's trigger on). */
  grammarState: LlamaGrammarEvaluationState | undefined;
  /** A lazy grammar not yet triggered: the compiled grammar, its trigger and the output bytes so far. */
  pending: { grammar: LlamaGrammar; trigger: Buffer; tail: Buffer } | undefined;
}

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
  readonly #sampling: (SlotSampling | undefined)[];
  /** Each slot's samplers for draft verification (one per position), created by its speculative requests. */
  readonly #verifierPool: (InternalSampler[] | undefined)[];
  /**
   * Whether steps whose items are all plain are decoded here rather than through node-llama-cpp's batch
   * dispatcher (`#decodeDirect`): not for models whose sequences take checkpoints (recurrent, hybrid or
   * sliding-window memory), which only the dispatcher takes, nor on Vulkan.
   */
  readonly #direct: boolean;
  #directSteps = 0;
  /** llama.cpp's any-JSON-object grammar (OpenAI's json_object), read once. */
  readonly #jsonGrammar: string;
  /** Compiled grammars by GBNF text, most recently used last (compiling parses the text). */
  readonly #grammars = new Map<string, LlamaGrammar>();
  /**
   * Steps not yet settled. `close` waits for them before it disposes what they use: a slot's samplers, the
   * context's logits (a plain item has no generator whose `return()` would wait for its step).
   */
  readonly #inFlight = new Set<Promise<StepOutcome[]>>();
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
    this.#sampling = new Array(info.slots).fill(undefined);
    this.#verifierPool = new Array(info.slots).fill(undefined);
    // Vulkan decodes under a lock of node-llama-cpp's own (its workaround for parallel decodes on several contexts).
    this.#direct = !this.#sequences[0]!.needsCheckpoints && llama.gpu !== "vulkan";
    this.#jsonGrammar = readFileSync(
      fileURLToPath(new URL("../llama/grammars/json.gbnf", import.meta.resolve("node-llama-cpp"))),
      "utf8",
    );
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
    const flashAttention = options.flashAttention ?? (backend === "cpu" ? false : "auto");
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
        flashAttention,
        ...(options.signal ? { createSignal: options.signal } : {}),
      });
      deliverSamplingErrors(context);
      const vocabulary = Vocabulary.fromGguf(checked.vocabulary);
      const info: EngineInfo = {
        model: basename(modelPath),
        slots,
        // node-llama-cpp rounds the context up; the usable per-sequence size is what the sequence reports.
        contextSize: context.contextSize,
        vocabulary,
        addBos: model.tokens.shouldPrependBosToken,
        maxStepTokens: context.batchSize,
        // llama.cpp's CPU flash attention (GGML_FA_TILE_Q, 64 query rows): fewer go through its scalar path.
        minPromptChunk: backend === "cpu" && flashAttention !== false ? FLASH_ATTENTION_TILE : 1,
        capabilities: { promptCache: true, grammar: true, logprobs: true, speculative: true },
        backend,
        gpuLayers: model.gpuLayers,
        flashAttention,
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

  /**
   * Steps decoded without node-llama-cpp's batch dispatcher so far (every item plain, see `step`): a
   * diagnostic of which path the engine took. The other steps went through node-llama-cpp's evaluation.
   */
  get directSteps(): number {
    return this.#directSteps;
  }

  chatTemplate(override?: string): ChatTemplate | undefined {
    return llamaChatTemplate(this.#model, this.info.addBos, override);
  }

  grammarText(spec: GrammarSpec): string {
    let gbnf: string;
    if (spec.type === "json") gbnf = this.#jsonGrammar;
    else if (spec.type === "json_schema") {
      const schema = toGrammarSchema(spec.schema);
      try {
        gbnf = new LlamaJsonSchemaGrammar(this.#llama, schema as never).grammar;
      } catch (cause) {
        throw new SluiceError(
          "invalid_request",
          "The JSON schema gives a grammar llama.cpp cannot parse (a $ref cycle with no way out, or nesting " +
            `deeper than it allows): ${(cause as Error).message}`,
          { param: "grammar", cause },
        );
      }
      gbnf = finiteJsonGrammar(gbnf);
    } else gbnf = spec.grammar;
    checkGbnf(gbnf);
    this.#grammar(gbnf);
    return gbnf;
  }

  /** The compiled grammar of a GBNF text; throws `invalid_request` with llama.cpp's reason when it does not parse. */
  #grammar(gbnf: string): LlamaGrammar {
    let grammar = this.#grammars.get(gbnf);
    if (grammar === undefined) {
      try {
        grammar = new LlamaGrammar(this.#llama, { grammar: gbnf });
      } catch (cause) {
        throw new SluiceError(
          "invalid_request",
          "The grammar is not valid GBNF (llama.cpp could not parse it; it needs a `root` rule and every " +
            `rule it references): ${(cause as Error).message}`,
          { param: "grammar", cause },
        );
      }
      if (this.#grammars.size >= 64) this.#grammars.delete(this.#grammars.keys().next().value!);
    } else this.#grammars.delete(gbnf);
    this.#grammars.set(gbnf, grammar);
    return grammar;
  }

  tokenize(text: string, options: { special: boolean }): number[] {
    return this.#model.tokenize(text, options.special) as number[];
  }

  step(items: readonly StepItem[]): Promise<StepOutcome[]> {
    if (this.#closed) return Promise.reject(new SluiceError("engine_failed", "The engine is closed."));
    const step =
      // The common case: every item plain, one batch built and decoded here.
      this.#direct && items.every((item) => this.#plain(item))
        ? this.#decodeDirect(items)
        : // Issued in one synchronous pass so node-llama-cpp gathers every item into one llama_decode.
          Promise.all(items.map((item) => this.#run(item)));
    this.#inFlight.add(step);
    const settled = () => this.#inFlight.delete(step);
    step.then(settled, settled);
    return step;
  }

  /**
   * Whether an item needs nothing of node-llama-cpp's evaluation beyond a decode and llama.cpp's sampler chain:
   * it reads prompt tokens, or samples with a plain sampler (`isPlainSampler`) on a slot without a generator.
   * Plain sampling items always take the verification path (`#verify`, `#decodeDirect`), never a generator,
   * so that a request's tokens do not depend on which path a step took.
   */
  #plain(item: StepItem): boolean {
    if (item.sample === undefined) return true;
    return this.#generators[item.slot] === undefined && isPlainSampler(item.sample);
  }

  /**
   * A step of plain items (`#plain`), decoded without node-llama-cpp's batch dispatcher: one llama_decode of
   * every item's tokens (and drafts), then every sampling position sampled at once, each with its own sampler
   * of its slot, exactly as `#verify` samples them. The dispatcher's generality (queued decodes, priorities,
   * a promise chain and a lock per sequence, a generator per request) costs about a tenth of a small model's
   * step: measured on kjv-tiny, 1 thread, greedy, a runtime step took 1.01 ms for one stream and 3.16 ms for
   * four this way, against 1.10 and 3.56 ms through node-llama-cpp's generators (medians of five alternating runs).
   *
   * The sequences' bookkeeping (next token index, context tokens) is updated as node-llama-cpp's own decode
   * updates it, under its context lock, so its other calls (erase, clear, generators) see the same state.
   * A failed decode fails every item of the step; an item that does not fit its slot's context fails alone.
   */
  async #decodeDirect(items: readonly StepItem[]): Promise<StepOutcome[]> {
    this.#directSteps++;
    const outcomes: StepOutcome[] = new Array(items.length);
    const batch: DirectItem[] = [];
    let size = 0;
    items.forEach((item, index) => {
      const sequence = this.#sequences[item.slot]! as unknown as InternalSequence;
      const draft = item.draft ?? NO_TOKENS;
      const input = draft.length === 0 ? item.tokens : [...item.tokens, ...draft];
      try {
        this.#checkFed(item);
        // node-llama-cpp keeps one cell free (its decode shifts the context from there): so does this one.
        if (sequence.nextTokenIndex + input.length > this.#context.contextSize - 1) {
          throw new SluiceError("engine_error", "The slot's context is full.");
        }
      } catch (error) {
        outcomes[index] = { ok: false, error };
        return;
      }
      batch.push({ index, item, sequence, input, start: sequence.nextTokenIndex, sampled: [] });
      size += input.length;
    });
    if (batch.length > 0) {
      try {
        const withLock = await nodeLlamaCppWithLock();
        await withLock([this.#context, "context"], () => this.#decodeBatch(batch, size));
      } catch (error) {
        for (const { index } of batch) outcomes[index] = { ok: false, error };
        return outcomes;
      }
      await Promise.all(
        batch.map(async ({ index, item, sampled }) => {
          try {
            outcomes[index] =
              item.sample === undefined
                ? { ok: true, token: undefined }
                : await this.#accept(item, item.draft, sampled);
          } catch (error) {
            outcomes[index] = { ok: false, error: samplingError(error) };
          }
        }),
      );
    }
    return outcomes;
  }

  /** Adds every item to one batch, decodes it and samples every position that samples. Under the context lock. */
  async #decodeBatch(batch: DirectItem[], size: number): Promise<void> {
    const context = this.#context as unknown as InternalLlamaContext;
    const native = context._ctx;
    native.initBatch(size);
    for (const entry of batch) {
      const { item, input, start } = entry;
      // Logits after the last prompt token and after each draft token (none for a prompt chunk that does not sample).
      const first = item.tokens.length - 1;
      const logits =
        item.sample === undefined ? [] : Array.from({ length: input.length - first }, (_, j) => first + j);
      entry.logits = native.addToBatch(
        entry.sequence._sequenceId,
        start,
        Uint32Array.from(input),
        Uint32Array.from(logits),
      );
    }
    // As node-llama-cpp's dispatcher decodes (3.22.1): the context's threads reserved for the decode (shared with
    // other contexts of this Llama, released shortly after), and its backend kept from disposal meanwhile,
    // sampling included (the samples read the context's logits, as its own awaited samplings do).
    context._reserveThreads();
    try {
      const guard = context._backendContextDisposeGuard.createPreventDisposalHandle();
      try {
        const allocation = context._threadSplitterConsumer?.getAllocationToConsume();
        const [threads, handle] = (allocation instanceof Promise ? await allocation : allocation) ?? [];
        try {
          if (threads != null) native.setThreads(threads);
          await native.decodeBatch();
        } finally {
          handle?.dispose();
        }
        for (const { sequence, input } of batch) {
          sequence._nextTokenIndex += input.length;
          sequence._contextTokens = sequence._contextTokens.concat(input);
        }
        // Sampled before the lock is let go: the next decode overwrites the logits.
        await Promise.all(
          batch.map(async (entry) => {
            const { item, start, logits } = entry;
            if (item.sample === undefined || logits === undefined) return;
            const first = item.tokens.length - 1;
            const samplers = this.#verifiers(item.slot, logits.length);
            const sample = item.sample;
            entry.sampled = Array.from(logits, (batchLogitIndex, j) =>
              this.#sampleAt(samplers[j]!, sample, batchLogitIndex, start + first + j),
            );
            // A failed position fails its item only (`#accept`), not the step.
            await Promise.allSettled(entry.sampled);
          }),
        );
      } finally {
        guard.dispose();
      }
    } finally {
      context._scheduleToFreeReservedThreads();
    }
  }

  async #run(item: StepItem): Promise<StepOutcome> {
    try {
      if (item.sample === undefined) {
        await this.#sequences[item.slot]!.evaluateWithoutGeneratingNewTokens(item.tokens as Token[]);
        return { ok: true, token: undefined };
      }
      if (item.draft !== undefined || this.#plain(item))
        return await this.#verify(item, item.sample, item.draft);
      let generator = this.#generators[item.slot];
      if (generator === undefined) {
        generator = this.#startGenerator(item.slot, item.tokens, item.sample);
      } else if (item.tokens.length !== 1 || item.tokens[0] !== this.#lastSampled[item.slot]) {
        // The generator feeds back what it sampled; anything else would desynchronise the KV cache.
        throw new SluiceError("internal_error", `Slot ${item.slot} was fed tokens it did not sample.`);
      }
      const next = await generator.next();
      if (next.done) throw new SluiceError("engine_error", "The engine ended the sequence unexpectedly.");
      const { value } = next;
      const token = typeof value === "number" ? value : value.token;
      this.#lastSampled[item.slot] = token;
      const sampling = this.#sampling[item.slot];
      if (sampling !== undefined) {
        sampling.sampled++;
        if (sampling.pending !== undefined) this.#watchTrigger(sampling, token);
      }
      const wanted = item.sample.logprobs;
      if (wanted === undefined) return { ok: true, token };
      return { ok: true, token, logprob: logprobOf(value as Sampled, wanted) };
    } catch (error) {
      return { ok: false, error: samplingError(error) };
    }
  }

  /**
   * Speculative decoding: the item's tokens and its draft go into the step's batch as one decode, with logits
   * after the last token and after each draft token. Every position is sampled at once, each with its own
   * sampler of the slot; the draft is accepted up to the first position where the target's token differs,
   * and that token (or the one after a fully accepted draft) is the outcome's. Rejected draft tokens are
   * erased from the KV cache before the step resolves.
   *
   * node-llama-cpp's `controlledEvaluate` does the same decode but creates a sampler per call and samples the
   * positions one after another (a thread-pool round trip each); on the bundled model that cost more than
   * the decode itself, so this calls the internal decode it is built on (`_decodeTokens`, node-llama-cpp
   * 3.22.1). Requests with drafts decode through here on every step, never through a generator, so that
   * their tokens do not depend on which steps had drafts (see `positionSeed`).
   */
  async #verify(
    item: StepItem,
    sample: SamplerConfig,
    draft: readonly number[] | undefined,
  ): Promise<StepOutcome> {
    const { slot, tokens } = item;
    this.#checkFed(item);
    const drafted = draft ?? NO_TOKENS;
    const sequence = this.#sequences[slot]! as unknown as InternalSequence;
    const samplers = this.#verifiers(slot, drafted.length + 1);
    const first = tokens.length - 1;
    const input = drafted.length === 0 ? tokens : [...tokens, ...drafted];
    const logits: boolean[] = [];
    for (let i = first; i < input.length; i++) logits[i] = true;
    const position = sequence.nextTokenIndex + first;
    const results = await sequence._decodeTokens(
      input,
      logits,
      DEFAULT_EVALUATION_PRIORITY,
      sequence._tokenMeter,
      this.#noShift,
      (batchLogitIndex: number, index: number) => {
        const j = index - first;
        // Wrapped, not returned: node-llama-cpp chains the positions of an item when their mapper returns a
        // promise (each waits for the one before); each position has its own sampler, so all run at once.
        return { sampled: this.#sampleAt(samplers[j]!, sample, batchLogitIndex, position + j) };
      },
      sequence._takeIntervalCheckpointIfNeededAfterBatch,
    );
    return this.#accept(
      item,
      draft,
      results.slice(first).map((r) => r?.sampled),
    );
  }

  /** Refuses a sampling item whose tokens are not the one its slot sampled last (a desynchronised KV cache). */
  #checkFed(item: StepItem): void {
    const { slot, tokens, sample } = item;
    if (sample === undefined) return;
    if (
      sample.grammar !== undefined ||
      sample.logprobs !== undefined ||
      this.#generators[slot] !== undefined
    ) {
      throw new SluiceError(
        "internal_error",
        `Slot ${slot} was given a draft with a grammar, log-probabilities or after plain decoding steps.`,
      );
    }
    const last = this.#lastSampled[slot];
    if (last !== undefined && (tokens.length !== 1 || tokens[0] !== last)) {
      throw new SluiceError("internal_error", `Slot ${slot} was fed tokens it did not sample.`);
    }
  }

  /**
   * Samples one verified position at KV position `position` with its own sampler. Greedy sampling ignores the
   * seed: a fixed one keeps the sampler chain as it is between positions.
   */
  #sampleAt(
    sampler: InternalSampler,
    sample: SamplerConfig,
    batchLogitIndex: number,
    position: number,
  ): Promise<number> {
    try {
      sampler.applyConfig({
        temperature: sample.temperature,
        topK: sample.topK,
        topP: sample.topP,
        minP: sample.minP,
        seed: sample.temperature > 0 ? positionSeed(sample.seed, position) : 0,
      });
      return (this.#context as unknown as InternalLlamaContext)._ctx.sampleToken(batchLogitIndex, sampler);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /**
   * The outcome of a verified item from its positions' samples: the draft accepted up to the first position
   * where the target's token differs, that token (or the one after a fully accepted draft) the outcome's.
   * Rejected draft tokens are erased from the KV cache before the step resolves. `accepted` is reported for
   * an item that carried a draft.
   */
  async #accept(
    item: StepItem,
    draft: readonly number[] | undefined,
    positions: readonly (Promise<number> | undefined)[],
  ): Promise<StepOutcome> {
    const { slot } = item;
    const drafted = draft ?? NO_TOKENS;
    // Every position's sampling is awaited: a slot's samplers are reused by its next step.
    const sampled = await Promise.all(positions);
    let accepted = 0;
    while (accepted < drafted.length && sampled[accepted] === drafted[accepted]) accepted++;
    const token = sampled[accepted];
    if (typeof token !== "number" || token < 0) {
      // A failed sampling left its cause (`deliverSamplingErrors`): said, and cleared for the next failure.
      const failure = samplingError(new Error("Failed to sample next token"));
      throw failure instanceof SluiceError
        ? failure
        : new SluiceError("engine_error", "The engine sampled no token.");
    }
    // Rejected positions leave the KV cache before the step resolves: the next step starts from exact state.
    const cut = drafted.length - accepted;
    if (cut > 0) {
      const end = this.#sequences[slot]!.nextTokenIndex;
      await this.#sequences[slot]!.eraseContextTokenRanges([{ start: end - cut, end }]);
    }
    this.#lastSampled[slot] = token;
    return draft === undefined ? { ok: true, token } : { ok: true, token, accepted };
  }

  /**
   * The slot's verification samplers (llama.cpp sampler chains), one per position so that positions sample
   * in parallel: at least `count`, created as needed and reconfigured per use.
   */
  #verifiers(slot: number, count: number): InternalSampler[] {
    let samplers = this.#verifierPool[slot];
    if (samplers === undefined) {
      samplers = [];
      this.#verifierPool[slot] = samplers;
    }
    while (samplers.length < count) {
      const bindings = (
        this.#llama as unknown as { _bindings: { AddonSampler: new (model: unknown) => InternalSampler } }
      )._bindings;
      samplers.push(new bindings.AddonSampler((this.#model as unknown as { _model: unknown })._model));
    }
    return samplers;
  }

  /** The runtime keeps prompt + maxTokens within the context; a shift would silently drop the prompt. */
  readonly #noShift = {
    size: 1,
    strategy: (): never => {
      throw new SluiceError("engine_error", "The slot's context is full.");
    },
  };

  #startGenerator(slot: number, tokens: readonly number[], sample: SamplerConfig): Generator {
    const sequence = this.#sequences[slot]!;
    const options: SequenceEvaluateOptions = {
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
    };
    const sampling = this.#samplingOf(sample);
    this.#sampling[slot] = sampling;
    if (sampling !== undefined) {
      if (sample.grammar !== undefined) options.grammarEvaluationState = () => sampling.grammarState;
      const bias = tokenBiasOf(this.#model, sample, sampling);
      if (bias !== undefined) options.tokenBias = bias;
    }
    if (hasPenalties(sample)) {
      const lastN = sample.repeatLastN;
      options.repeatPenalty = {
        // The window over the slot's context (prompt and generated), llama.cpp's `repeat_last_n`.
        punishTokens: () => {
          const context = sequence.contextTokens;
          return lastN < 0 ? context : context.slice(-lastN);
        },
        maxPunishTokens: lastN < 0 ? this.info.contextSize : lastN,
        penalty: sample.repeatPenalty,
        presencePenalty: sample.presencePenalty,
        frequencyPenalty: sample.frequencyPenalty,
      };
    }
    const generator: Generator =
      sample.logprobs === undefined
        ? sequence.evaluate(tokens as Token[], options)
        : (sequence.evaluateWithMetadata(
            tokens as Token[],
            sample.logprobs > 0 ? { probabilities: true } : { confidence: true },
            options,
          ) as Generator);
    this.#generators[slot] = generator;
    return generator;
  }

  /** The slot state a request's sampler needs, or undefined when it needs none (the common, fast case). */
  #samplingOf(sample: SamplerConfig): SlotSampling | undefined {
    if (sample.grammar === undefined && sample.logitBias === undefined && sample.suppress === undefined) {
      return undefined;
    }
    const sampling: SlotSampling = { sampled: 0, grammarState: undefined, pending: undefined };
    if (sample.grammar !== undefined) {
      const grammar = this.#grammar(sample.grammar.gbnf);
      if (sample.grammar.trigger === undefined) {
        sampling.grammarState = new LlamaGrammarEvaluationState({ model: this.#model, grammar });
      } else {
        sampling.pending = { grammar, trigger: Buffer.from(sample.grammar.trigger), tail: Buffer.alloc(0) };
      }
    }
    return sampling;
  }

  /**
   * A lazy grammar: once the output holds the trigger, the grammar applies from the trigger's first byte.
   * The text from there to the end of the last token already went by unconstrained, so it is fed to the
   * grammar first; should it not fit, the grammar stays off (the output is then what the model wrote).
   */
  #watchTrigger(sampling: SlotSampling, token: number): void {
    const pending = sampling.pending!;
    const bytes = this.info.vocabulary.bytesOf(token);
    const tail = Buffer.concat([pending.tail, bytes]);
    const at = tail.indexOf(pending.trigger);
    if (at < 0) {
      // Only the last trigger-length - 1 bytes can start a match.
      pending.tail = tail.subarray(Math.max(0, tail.length - pending.trigger.length + 1));
      return;
    }
    sampling.pending = undefined;
    const state = new LlamaGrammarEvaluationState({ model: this.#model, grammar: pending.grammar });
    const seen = this.#model.tokenize(tail.subarray(at).toString("utf8"), false) as Token[];
    if (acceptTokens(this.#llama, state, seen)) sampling.grammarState = state;
  }

  cachedTokens(slot: number): readonly number[] {
    return this.#sequences[slot]!.contextTokens as number[];
  }

  async releaseSlot(slot: number): Promise<void> {
    const generator = this.#generators[slot];
    this.#generators[slot] = undefined;
    this.#sampling[slot] = undefined;
    this.#lastSampled[slot] = undefined;
    // A new request starts with a new sampler: no random state carries over from the last one.
    for (const sampler of this.#verifierPool[slot] ?? []) sampler.dispose();
    this.#verifierPool[slot] = undefined;
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
    // A step in flight finishes first: its samplers and the logits it samples from are disposed below.
    await Promise.allSettled(this.#inFlight);
    await Promise.allSettled(this.#generators.map((g) => g?.return()));
    for (const sampler of this.#verifierPool.flat()) sampler?.dispose();
    await this.#context.dispose().catch(() => {});
    await this.#model.dispose().catch(() => {});
    await this.#llama.dispose().catch(() => {});
  }
}

/** The last sampling failure `deliverSamplingErrors` turned into node-llama-cpp's "no token" result. */
let lastSamplingFailure: unknown;

/**
 * node-llama-cpp 3.22 loses a failed sampling: when llama.cpp's sampler throws (a grammar that accepts none of
 * the tokens the other samplers left, say), the rejection escapes its batch dispatcher as an unhandled
 * rejection (fatal in Node) and the evaluation waiting for that token never settles, so its slot would never
 * be freed. Its generator already turns a "no token" result (-1) into an error of that evaluation, so a
 * failed sampling is made that result; the cause is kept for the error the request ends with.
 */
function deliverSamplingErrors(context: LlamaContext): void {
  const native = (context as unknown as { _ctx: { sampleToken(...args: unknown[]): Promise<unknown> } })._ctx;
  const sampleToken = native.sampleToken.bind(native);
  // The native method is read-only on its prototype: the instance gets its own property.
  Object.defineProperty(native, "sampleToken", {
    writable: true,
    configurable: true,
    value: (...args: unknown[]) =>
      sampleToken(...args).catch((cause: unknown) => {
        lastSamplingFailure = cause;
        return -1;
      }),
  });
}

/** The error a step's item failed with, with the sampler's own reason when sampling failed. */
function samplingError(error: unknown): unknown {
  if (!(error instanceof Error) || error.message !== "Failed to sample next token" || !lastSamplingFailure) {
    return error;
  }
  const cause = lastSamplingFailure;
  lastSamplingFailure = undefined;
  return new SluiceError(
    "engine_error",
    `The sampler found no token to pick: ${(cause as Error).message ?? String(cause)}`,
    { cause },
  );
}

/**
 * node-llama-cpp's JSON-schema GBNF, adjusted so that every output is valid JSON whose numbers parse to
 * what the schema asks: its integers and numbers allow 16-digit exponents (`1E1111111111111111` parses to
 * Infinity, no integer), so integers get no exponent and at most 15 digits, and other numbers an exponent of
 * at most two digits;
 * and its root ends with four newlines for node-llama-cpp's own stop trigger, removed here so that the
 * closing brace leaves end-of-generation as the only token.
 */
function finiteJsonGrammar(gbnf: string): string {
  const exponent = ' ([eE] [-+]? ("0" | [1-9] [0-9]{0,15}))?';
  return gbnf
    .split("\n")
    .map((line) => {
      if (line.startsWith("root ::= ") && line.endsWith(' "\\n\\n\\n\\n" [\\n]*')) {
        return line.slice(0, -' "\\n\\n\\n\\n" [\\n]*'.length);
      }
      // At most 15 digits: every integer it writes is exact in a double (see GRAMMAR_INTEGER_LIMIT).
      if (line.startsWith("integer-number-rule ::= ")) {
        return line.replace(exponent, "").replace("[1-9] [0-9]{0,15}", "[1-9] [0-9]{0,14}");
      }
      if (line.startsWith("fractional-number-rule ::= "))
        return line.replace(exponent, " ([eE] [-+]? [0-9]{1,2})?");
      return line;
    })
    .join("\n");
}

/** lifecycle-utils' `withLock`, as node-llama-cpp uses it to keep decodes of one context apart. */
type WithLock = <T>(scope: readonly unknown[], callback: () => Promise<T>) => Promise<T>;

let withLockOfNodeLlamaCpp: Promise<WithLock> | undefined;

/**
 * node-llama-cpp's own `withLock` (lifecycle-utils, resolved from node-llama-cpp's location, not this
 * package's): its lock table lives in the module, so only the copy node-llama-cpp loads keeps a direct step
 * and node-llama-cpp's own decodes of the same context apart, whatever copies an install has.
 */
function nodeLlamaCppWithLock(): Promise<WithLock> {
  withLockOfNodeLlamaCpp ??= (async () => {
    const from = createRequire(fileURLToPath(import.meta.resolve("node-llama-cpp")));
    const module = (await import(pathToFileURL(from.resolve("lifecycle-utils")).href)) as {
      withLock: WithLock;
    };
    return module.withLock;
  })();
  return withLockOfNodeLlamaCpp;
}

/** An item's draft when it has none. */
const NO_TOKENS: readonly number[] = Object.freeze([]);

/** node-llama-cpp's default evaluation priority (3.22.1), which every other call of this engine uses. */
const DEFAULT_EVALUATION_PRIORITY = 5;

/** The parts of node-llama-cpp 3.22.1's sequence that draft verification and direct steps use. */
interface InternalSequence {
  readonly nextTokenIndex: number;
  readonly _sequenceId: number;
  _nextTokenIndex: number;
  _contextTokens: number[];
  readonly _tokenMeter: unknown;
  readonly _takeIntervalCheckpointIfNeededAfterBatch: unknown;
  _decodeTokens(
    tokens: readonly number[],
    logits: readonly boolean[],
    priority: number,
    tokenMeter: unknown,
    contextShift: unknown,
    mapper: (batchLogitIndex: number, index: number) => { sampled: Promise<number> },
    afterBatch: unknown,
  ): Promise<({ sampled: Promise<number> } | undefined)[]>;
}

/** The parts of node-llama-cpp 3.22.1's context (and its addon's) that direct steps use (`#decodeDirect`). */
interface InternalLlamaContext {
  _ctx: {
    initBatch(size: number): void;
    addToBatch(
      sequenceId: number,
      firstTokenIndex: number,
      tokens: Uint32Array,
      logits: Uint32Array,
    ): Uint32Array;
    setThreads(threads: number): void;
    decodeBatch(): Promise<void>;
    sampleToken(batchLogitIndex: number, sampler: InternalSampler): Promise<number>;
  };
  _reserveThreads(): void;
  _scheduleToFreeReservedThreads(): void;
  _backendContextDisposeGuard: { createPreventDisposalHandle(): { dispose(): void } };
  _threadSplitterConsumer?: {
    getAllocationToConsume():
      | [number, { dispose(): void }]
      | undefined
      | Promise<[number, { dispose(): void }] | undefined>;
  };
}

/** One item of a direct step: where its tokens go and, once decoded, its positions' samples. */
interface DirectItem {
  index: number;
  item: StepItem;
  sequence: InternalSequence;
  input: readonly number[];
  /** The KV position of its first token. */
  start: number;
  /** The batch's logit indexes of its sampling positions. */
  logits?: Uint32Array;
  sampled: Promise<number>[];
}

interface InternalSampler {
  applyConfig(config: Record<string, number>): void;
  dispose(): void;
}

/**
 * The sampler seed at one KV position of a speculative request: the request's seed mixed with the position,
 * so that the token sampled at a position depends on the seed, the position and the logits there, never on
 * which step sampled it or how many draft tokens that step verified.
 */
export function positionSeed(seed: number, position: number): number {
  let h = Math.imul(seed ^ 0x5bd1e995, 0x9e3779b1) ^ Math.imul(position + 1, 0x85ebca6b);
  h ^= h >>> 15;
  h = Math.imul(h, 0xc2b2ae35);
  return (h ^ (h >>> 13)) >>> 0;
}

function logprobOf(sampled: Sampled, top: number): TokenLogprob {
  const { token, probabilities } = sampled;
  if (probabilities === undefined) return { token, logprob: logOf(sampled.confidence), top: [] };
  const alternatives: TokenLogprob["top"] = [];
  // The map is in the sampler's order, most likely first.
  for (const [id, p] of probabilities) {
    if (alternatives.length >= top) break;
    alternatives.push({ token: id, logprob: logOf(p) });
  }
  return { token, logprob: logOf(probabilities.get(token)), top: alternatives };
}

/**
 * Logit biases for node-llama-cpp: the request's `logitBias`, plus a ban on the suppressed tokens while
 * fewer than `suppress.count` were sampled (`minTokens`). TokenBias's public setter skips end-of-generation
 * tokens, which are exactly what `minTokens` and an OpenAI logit_bias may target, so its map is filled
 * directly (node-llama-cpp 3.22 reads it as token → logit offset).
 */
function tokenBiasOf(
  model: LlamaModel,
  sample: SamplerConfig,
  sampling: SlotSampling,
): (() => TokenBias) | undefined {
  const make = (ban: readonly number[]) => {
    const bias = new TokenBias(model.tokenizer);
    const map = (bias as unknown as { _biases: Map<number, number> })._biases;
    for (const [token, value] of sample.logitBias ?? []) map.set(token, value);
    for (const token of ban) map.set(token, Number.NEGATIVE_INFINITY);
    return bias;
  };
  const { suppress } = sample;
  if (suppress === undefined && sample.logitBias === undefined) return undefined;
  const plain = make([]);
  if (suppress === undefined) return () => plain;
  const banning = make(suppress.tokens);
  return () => (sampling.sampled < suppress.count ? banning : plain);
}

/**
 * Feeds tokens to a grammar state, each only if the grammar accepts it (llama.cpp aborts on a token the
 * grammar rejects). node-llama-cpp accepts sampled tokens itself but offers no public call for tokens it did
 * not sample: its bindings' own functions are used. Returns false when a token does not fit.
 */
function acceptTokens(llama: Llama, state: LlamaGrammarEvaluationState, tokens: readonly Token[]): boolean {
  const bindings = (llama as unknown as { _bindings: { AddonSampler: GrammarBindings } })._bindings
    .AddonSampler;
  const native = (state as unknown as { _state: unknown })._state;
  for (const token of tokens) {
    if (!bindings.canBeNextTokenForGrammarEvaluationState(native, token)) return false;
    bindings.acceptGrammarEvaluationStateToken(native, token);
  }
  return true;
}

interface GrammarBindings {
  canBeNextTokenForGrammarEvaluationState(state: unknown, token: Token): boolean;
  acceptGrammarEvaluationStateToken(state: unknown, token: Token): void;
}
