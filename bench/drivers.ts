/**
 * How the engine benchmarks drive each side: Sluice through its public Runtime and channels, node-llama-cpp
 * through its own API with its default batching (what its users get). Both read the same token ids.
 */
import type { LlamaContext, LlamaContextSequence, Token } from "node-llama-cpp";
import type { StreamChannel } from "../src/channel/index.ts";
import type { StepItem } from "../src/engine/Engine.ts";
import type { RequestRecord } from "../src/runtime/RequestState.ts";
import { Runtime } from "../src/runtime/Runtime.ts";
import type { FinishReason } from "../src/types.ts";
import { SHORT_PROMPTS } from "./corpus.ts";
import { type BenchModel, type LoadedModel, withBos } from "./models.ts";

export interface StepEvent {
  step: number;
  items: readonly StepItem[];
  /** When the runtime reported the step done (performance.now()). */
  at: number;
}

/** Subscribes to a runtime: request-end records by id (the slot is free when one arrives) and steps. */
export class RuntimeWatch {
  readonly steps: StepEvent[] = [];
  recordSteps = false;
  readonly #records = new Map<string, RequestRecord>();
  readonly #waiting = new Map<string, (record: RequestRecord) => void>();
  readonly #stop: () => void;

  constructor(runtime: Runtime) {
    this.#stop = runtime.observe((event) => {
      if (event.type === "step") {
        if (this.recordSteps)
          this.steps.push({ step: event.step, items: event.items, at: performance.now() });
        return;
      }
      const resolve = this.#waiting.get(event.record.id);
      if (resolve) {
        this.#waiting.delete(event.record.id);
        resolve(event.record);
      } else this.#records.set(event.record.id, event.record);
    });
  }

  /** Resolves with the request's record once its slot (or queue place) is given back. */
  ended(id: string): Promise<RequestRecord> {
    const record = this.#records.get(id);
    if (record) {
      this.#records.delete(id);
      return Promise.resolve(record);
    }
    return new Promise((resolve) => this.#waiting.set(id, resolve));
  }

  close(): void {
    this.#stop();
  }
}

export interface StreamTrace {
  tokens: number;
  /** Arrival time of every token (a coalesced chunk gives its tokens one shared time). */
  tokenTimes: number[];
  terminalAt: number;
  reason: FinishReason | undefined;
}

/** Reads a channel to its terminal chunk the way an application would (for await), timing each token. */
export async function readStream(channel: StreamChannel, onFirstToken?: () => void): Promise<StreamTrace> {
  const tokenTimes: number[] = [];
  let reason: FinishReason | undefined;
  for await (const chunk of channel) {
    const now = performance.now();
    const first = tokenTimes.length === 0;
    for (let i = 0; i < chunk.tokenIds.length; i++) tokenTimes.push(now);
    if (first && tokenTimes.length > 0) onFirstToken?.();
    if (chunk.finished) reason = chunk.reason;
  }
  return { tokens: tokenTimes.length, tokenTimes, terminalAt: performance.now(), reason };
}

export interface NlcContext {
  context: LlamaContext;
  sequences: LlamaContextSequence[];
  /** Clears every sequence's history, so that the next round starts from an empty context. */
  clearHistory(): Promise<void>;
  dispose(): Promise<void>;
}

/**
 * A node-llama-cpp context as its users create one: the same sequences, context size and threads as the
 * Sluice side, default batching (`maximumParallelism`, batch size min(512, context × sequences)).
 */
export async function nlcContext(
  loaded: LoadedModel,
  spec: BenchModel,
  sequences: number,
): Promise<NlcContext> {
  const context = await loaded.model.createContext({
    sequences,
    contextSize: spec.contextSize,
    threads: spec.threads,
  });
  const list = Array.from({ length: sequences }, () => context.getSequence());
  return {
    context,
    sequences: list,
    clearHistory: async () => {
      await Promise.all(list.map((sequence) => sequence.clearHistory()));
    },
    dispose: () => context.dispose(),
  };
}

/** Both sides of a comparison at one slot count: Sluice's runtime and node-llama-cpp's context, alike. */
export interface EnginePair {
  runtime: Runtime;
  nlc: NlcContext;
  /** Closes the runtime, then disposes the context (the loaded model stays the caller's). */
  close(): Promise<void>;
}

/**
 * A Sluice runtime with `slots` slots and a node-llama-cpp context with as many sequences (`nlcContext`),
 * with the same model file, context size and threads.
 */
export async function enginePair(loaded: LoadedModel, spec: BenchModel, slots: number): Promise<EnginePair> {
  const runtime = await Runtime.create({
    model: spec.path,
    slots,
    contextSize: spec.contextSize,
    threads: spec.threads,
  });
  const nlc = await nlcContext(loaded, spec, slots);
  return {
    runtime,
    nlc,
    close: async () => {
      await runtime.close();
      await nlc.dispose();
    },
  };
}

/** `count` short prompts (the corpus's, in turn), tokenized with BOS where the model wants one. */
export function shortPrompts(loaded: LoadedModel, count: number): Token[][] {
  return Array.from({ length: count }, (_, i) =>
    withBos(loaded, loaded.tokenize(SHORT_PROMPTS[i % SHORT_PROMPTS.length]!)),
  );
}

/**
 * The bare node-llama-cpp lockstep loop: one greedy `evaluate()` generator per sequence, every sequence's
 * next token awaited together, `tokens` times: the engine work alone. Returns each sequence's token ids;
 * the sequences keep their history (`NlcContext.clearHistory()` before the next round).
 */
export async function lockstepLoop(
  sequences: readonly LlamaContextSequence[],
  prompts: readonly (readonly Token[])[],
  tokens: number,
): Promise<number[][]> {
  const iterators = sequences.map((sequence, i) =>
    sequence.evaluate(prompts[i]! as Token[], { temperature: 0, yieldEogToken: true }),
  );
  const ids: number[][] = iterators.map(() => []);
  for (let n = 0; n < tokens; n++) {
    const next = await Promise.all(iterators.map((iterator) => iterator.next()));
    next.forEach((step, i) => {
      if (step.done !== true) ids[i]!.push(step.value);
    });
  }
  await Promise.all(iterators.map((iterator) => iterator.return()));
  return ids;
}

/** Gaps between consecutive token arrivals, in ms. */
export function gaps(times: readonly number[]): number[] {
  const out: number[] = [];
  for (let i = 1; i < times.length; i++) out.push(times[i]! - times[i - 1]!);
  return out;
}

export interface DecodeCounter {
  readonly count: number;
}

/**
 * Counts a node-llama-cpp context's `llama_decode` calls (batches), to explain throughput differences.
 * Instrumentation only: it wraps the context's private native handle, forwarding every call unchanged, and
 * gives up (undefined) if the library's internals ever look different.
 */
export function countDecodes(context: LlamaContext): DecodeCounter | undefined {
  const holder = context as unknown as { _ctx?: Record<string | symbol, unknown> };
  const native = holder._ctx;
  if (native === undefined || typeof native.decodeBatch !== "function") return undefined;
  const counter = { count: 0 };
  holder._ctx = new Proxy(native, {
    get(target, key) {
      const value = target[key];
      if (typeof value !== "function") return value;
      if (key === "decodeBatch") {
        return (...args: unknown[]) => {
          counter.count++;
          return (value as (...a: unknown[]) => unknown).apply(target, args);
        };
      }
      return (value as (...a: unknown[]) => unknown).bind(target);
    },
  });
  return counter;
}
