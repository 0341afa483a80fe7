import { setTimeout as delay } from "node:timers/promises";
import { Vocabulary } from "../detok/Vocabulary.ts";
import { SluiceError } from "../errors.ts";
import type { TokenLogprob } from "../types.ts";
import type { Engine, EngineInfo, StepItem, StepOutcome } from "./Engine.ts";
import { BUNDLED_MODEL_PATH } from "./modelPath.ts";

export interface ScriptedStep {
  /** 1-based step number. */
  step: number;
  items: readonly StepItem[];
}

export interface ScriptedFault {
  /** The step (1-based) at which the fault fires. */
  step: number;
  /** Fail only this slot's item; without it the whole step fails (an engine-wide failure). */
  slot?: number;
  message?: string;
}

export interface ScriptedEngineOptions {
  /** Defaults to the bundled model's vocabulary. */
  vocabulary?: Vocabulary;
  /** Defaults to 4. */
  slots?: number;
  /** Defaults to 512. */
  contextSize?: number;
  /** What a request generates, given its whole prompt. When the script runs out the engine yields EOS. Defaults to the prompt itself (without special tokens). */
  script?: (prompt: readonly number[]) => readonly number[];
  /** Wall time of one step in ms, fixed or computed from the step's items. Defaults to 0 (one macrotask). */
  stepMs?: number | ((items: readonly StepItem[]) => number);
  /** Awaited inside every step before it resolves: lets a test act deterministically while a step is in flight. */
  onStep?: (step: ScriptedStep) => void | Promise<void>;
  faults?: readonly ScriptedFault[];
  /** Awaited inside every releaseSlot before it resolves: lets a test act while a slot is being freed. */
  onReleaseSlot?: (slot: number) => void | Promise<void>;
  /** Whether slots keep their cache between requests (`capabilities.promptCache`). Defaults to true. */
  promptCache?: boolean;
  /** `info.maxStepTokens`. Defaults to 512. */
  maxStepTokens?: number;
  /** `info.minPromptChunk`. Defaults to 1. */
  minPromptChunk?: number;
  /** Whether steps verify drafts (`capabilities.speculative`). Defaults to true. */
  speculative?: boolean;
  /**
   * How many tokens of an item's draft the engine accepts, given the draft and the script's tokens at the same
   * positions (`expected`, as long as the draft): 0 to `draft.length`. Defaults to the longest prefix of the
   * draft equal to `expected`, which is what a model does. Accepted tokens stand in for the script's (the
   * script goes on after them), so a test can accept any run it likes.
   */
  acceptDraft?: (draft: readonly number[], expected: readonly number[], step: ScriptedStep) => number;
}

/**
 * A deterministic engine for tests and benchmarks of the runtime: it replays token scripts with the real
 * vocabulary at a set step time and injects faults at chosen steps. It runs no model.
 */
export class ScriptedEngine implements Engine {
  readonly info: EngineInfo;
  /** Every step, in order, as the runtime issued it. */
  readonly steps: ScriptedStep[] = [];
  readonly #options: ScriptedEngineOptions;
  readonly #byteToken = new Map<number, number>();
  readonly #fed: number[][];
  readonly #scripts: (readonly number[] | undefined)[];
  readonly #cursor: number[];
  #closed = false;

  constructor(vocabulary: Vocabulary, options: ScriptedEngineOptions = {}) {
    this.#options = options;
    const slots = options.slots ?? 4;
    this.info = {
      model: "scripted",
      slots,
      contextSize: options.contextSize ?? 512,
      vocabulary,
      addBos: vocabulary.addBos,
      maxStepTokens: options.maxStepTokens ?? 512,
      minPromptChunk: options.minPromptChunk ?? 1,
      capabilities: {
        promptCache: options.promptCache ?? true,
        grammar: false,
        logprobs: true,
        speculative: options.speculative ?? true,
      },
    };
    for (let id = 0; id < vocabulary.size; id++) {
      const bytes = vocabulary.bytesOf(id);
      if (bytes.length === 1 && !vocabulary.isSpecial(id) && !this.#byteToken.has(bytes[0]!)) {
        this.#byteToken.set(bytes[0]!, id);
      }
    }
    this.#fed = Array.from({ length: slots }, () => []);
    this.#scripts = new Array(slots).fill(undefined);
    this.#cursor = new Array(slots).fill(0);
  }

  static async create(options: ScriptedEngineOptions = {}): Promise<ScriptedEngine> {
    const vocabulary = options.vocabulary ?? (await Vocabulary.fromGgufFile(BUNDLED_MODEL_PATH));
    return new ScriptedEngine(vocabulary, options);
  }

  /** One token per UTF-8 byte (byte-level vocabularies have a token for each byte). */
  tokenize(text: string): number[] {
    const ids: number[] = [];
    for (const byte of new TextEncoder().encode(text)) {
      const id = this.#byteToken.get(byte);
      if (id === undefined) throw new SluiceError("invalid_request", `No token for byte ${byte}.`);
      ids.push(id);
    }
    return ids;
  }

  /** Token ids of a text, for writing scripts. */
  encode(text: string): number[] {
    return this.tokenize(text);
  }

  async step(items: readonly StepItem[]): Promise<StepOutcome[]> {
    if (this.#closed) throw new SluiceError("engine_failed", "The engine is closed.");
    const step: ScriptedStep = { step: this.steps.length + 1, items: items.map((i) => ({ ...i })) };
    this.steps.push(step);
    const cost = this.#options.stepMs ?? 0;
    const stepMs = typeof cost === "function" ? cost(items) : cost;
    if (stepMs > 0) await delay(stepMs);
    else await new Promise<void>((resolve) => setImmediate(resolve));
    await this.#options.onStep?.(step);
    const faults = (this.#options.faults ?? []).filter((f) => f.step === step.step);
    const global = faults.find((f) => f.slot === undefined);
    if (global)
      throw new SluiceError(
        "engine_failed",
        global.message ?? `Injected engine failure at step ${step.step}.`,
      );
    return items.map((item): StepOutcome => {
      const fault = faults.find((f) => f.slot === item.slot);
      if (fault)
        return { ok: false, error: new Error(fault.message ?? `Injected fault at step ${step.step}.`) };
      try {
        if (item.draft !== undefined) return this.#verify(item, step);
        const token = this.#advance(item);
        const wanted = item.sample?.logprobs;
        if (wanted === undefined || token === undefined) return { ok: true, token };
        return { ok: true, token, logprob: scriptedLogprob(token, wanted) };
      } catch (error) {
        return { ok: false, error };
      }
    });
  }

  #advance(item: StepItem): number | undefined {
    const fed = this.#fed[item.slot]!;
    fed.push(...item.tokens);
    if (fed.length > this.info.contextSize) throw new Error(`Slot ${item.slot} overflowed its context.`);
    if (item.sample === undefined) return undefined;
    let script = this.#scripts[item.slot];
    if (script === undefined) {
      script = this.#options.script?.(fed) ?? fed.filter((id) => !this.info.vocabulary.isSpecial(id));
      this.#scripts[item.slot] = script;
    }
    const cursor = this.#cursor[item.slot]!;
    this.#cursor[item.slot] = cursor + 1;
    return script[cursor] ?? this.info.vocabulary.eos ?? 0;
  }

  /** A draft checked against the script: the accepted prefix, then the script's own token after it. */
  #verify(item: StepItem, step: ScriptedStep): StepOutcome {
    const draft = item.draft!;
    if (!this.info.capabilities.speculative) throw new Error("This engine does not verify drafts.");
    if (item.sample === undefined || item.sample.logprobs !== undefined) {
      throw new Error("A draft needs a sampling item without logprobs.");
    }
    const slot = item.slot;
    const first = this.#advance({ slot, tokens: item.tokens, sample: item.sample });
    const fed = this.#fed[slot]!;
    fed.push(...draft);
    if (fed.length > this.info.contextSize) throw new Error(`Slot ${slot} overflowed its context.`);
    // #advance moved the cursor one past the first position: the script from there on is what the draft guessed.
    const cursor = this.#cursor[slot]! - 1;
    const script = this.#scripts[slot]!;
    const eos = this.info.vocabulary.eos ?? 0;
    const expected = Array.from({ length: draft.length }, (_, i) => script[cursor + i] ?? eos);
    let accepted = 0;
    if (this.#options.acceptDraft !== undefined) {
      const wanted = Math.floor(this.#options.acceptDraft(draft, expected, step));
      accepted = Math.max(0, Math.min(draft.length, Number.isFinite(wanted) ? wanted : 0));
    } else while (accepted < draft.length && draft[accepted] === expected[accepted]) accepted++;
    const token = accepted === 0 ? first : (script[cursor + accepted] ?? eos);
    this.#cursor[slot] = cursor + accepted + 1;
    // Rejected draft tokens leave the scripted KV cache, as they leave a model's.
    fed.length -= draft.length - accepted;
    return { ok: true, token, accepted };
  }

  /** Every token fed to the slot since it was last trimmed: the scripted KV cache. */
  cachedTokens(slot: number): readonly number[] {
    return this.info.capabilities.promptCache ? this.#fed[slot]! : [];
  }

  async releaseSlot(slot: number): Promise<void> {
    await this.#options.onReleaseSlot?.(slot);
    this.#scripts[slot] = undefined;
    this.#cursor[slot] = 0;
  }

  async trimSlot(slot: number, keep: number): Promise<number> {
    const fed = this.#fed[slot]!;
    fed.length = this.info.capabilities.promptCache ? Math.min(keep, fed.length) : 0;
    return fed.length;
  }

  /** No template: chats fall back to the caller's own format (ChatML with the bundled vocabulary). */
  chatTemplate(): undefined {
    return undefined;
  }

  async close(): Promise<void> {
    this.#closed = true;
  }
}

/**
 * A made-up but well-formed score for a scripted token: the token is the most likely one, with a
 * log-probability that depends on its id only, and `top` alternatives after it in decreasing order.
 */
export function scriptedLogprob(token: number, top: number): TokenLogprob {
  const logprob = -((token % 7) + 1) / 8;
  const alternatives = Array.from({ length: top }, (_, i) =>
    i === 0 ? { token, logprob } : { token: (token + i) % 256, logprob: logprob - i },
  );
  return { token, logprob, top: alternatives };
}
