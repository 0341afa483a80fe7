/**
 * One cancel trial on each side, for bench/cancel.ts: N streams started together, each cancelled at its own
 * point, measured from cancel() to the terminal chunk and to the slot being free.
 */
import type { LlamaCompletion, LlamaContextSequence, Token } from "node-llama-cpp";
import type { Runtime } from "../src/runtime/Runtime.ts";
import { type RuntimeWatch, readStream } from "./drivers.ts";

export type Scenario = "prefill" | "decode";

/** Tokens asked for: enough that no random cancel point falls after a natural finish. */
export const MAX_TOKENS: Record<Scenario, number> = { prefill: 128, decode: 64 };

export interface Sample {
  /** Where the request really was when cancel() ran. */
  phase: string;
  msToTerminal: number;
  msToFree: number;
  /** Engine steps between cancel() and the slot being free (Sluice only). */
  steps?: number;
  /** Tokens put into a batch for this request after cancel(). */
  tokensAfter: number;
}

export interface TrialOutcome {
  samples: Sample[];
  /** Streams that ended on their own before their cancel point (not samples). */
  finishedFirst: number;
}

export interface Sides {
  runtime: Runtime;
  watch: RuntimeWatch;
  completions: LlamaCompletion[];
  sequences: LlamaContextSequence[];
}

export async function sluiceTrial(
  sides: Sides,
  prompts: readonly Token[][],
  scenario: Scenario,
  delays: readonly number[],
  tag: string,
): Promise<TrialOutcome> {
  const { runtime, watch } = sides;
  watch.steps.length = 0;
  watch.recordSteps = true;
  const runs = prompts.map(async (prompt, i) => {
    const id = `${tag}-${i}`;
    const channel = runtime.generate({ prompt, maxTokens: MAX_TOKENS[scenario], temperature: 0, id });
    let cancel: { at: number; step: number; slot: number } | undefined;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const fire = () => {
      const slot = runtime.snapshot().slots.find((s) => s.requestId === id)?.index ?? -1;
      cancel = { at: performance.now(), step: runtime.steps, slot };
      channel.cancel();
    };
    if (scenario === "prefill") timer = setTimeout(fire, delays[i]);
    const trace = await readStream(channel, () => {
      if (scenario === "decode") timer = setTimeout(fire, delays[i]);
    });
    clearTimeout(timer);
    return { trace, cancel, record: await watch.ended(id) };
  });
  const results = await Promise.all(runs);
  watch.recordSteps = false;
  const samples: Sample[] = [];
  for (const { trace, cancel, record } of results) {
    if (!cancel || trace.reason !== "cancelled" || !record.cancel) continue;
    // The step in flight at cancel() (cancel.step + 1) was issued before it; later steps were issued after.
    let tokensAfter = 0;
    for (const event of watch.steps) {
      if (event.step <= cancel.step + 1) continue;
      for (const item of event.items) if (item.slot === cancel.slot) tokensAfter += item.tokens.length;
    }
    samples.push({
      phase: record.cancel.phase,
      msToTerminal: trace.terminalAt - cancel.at,
      msToFree: record.cancel.msToFree,
      steps: record.cancel.stepsToFree,
      tokensAfter,
    });
  }
  return { samples, finishedFirst: results.length - samples.length };
}

export async function nlcTrial(
  sides: Sides,
  prompts: readonly Token[][],
  scenario: Scenario,
  delays: readonly number[],
): Promise<TrialOutcome> {
  const runs = prompts.map(async (prompt, i) => {
    const sequence = sides.sequences[i]!;
    const completion = sides.completions[i]!;
    const controller = new AbortController();
    const meter = () => sequence.tokenMeter.usedInputTokens + sequence.tokenMeter.usedOutputTokens;
    let tokens = 0;
    let cancel: { at: number; meter: number; hadToken: boolean } | undefined;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const fire = () => {
      cancel = { at: performance.now(), meter: meter(), hadToken: tokens > 0 };
      controller.abort();
    };
    if (scenario === "prefill") timer = setTimeout(fire, delays[i]);
    const result = await completion.generateCompletionWithMeta(prompt, {
      signal: controller.signal,
      stopOnAbortSignal: true,
      maxTokens: MAX_TOKENS[scenario],
      temperature: 0,
      // Sluice applies no repeat penalty; the same greedy sampling on both sides.
      repeatPenalty: false,
      onToken: (chunk) => {
        if (tokens === 0 && scenario === "decode") timer = setTimeout(fire, delays[i]);
        tokens += chunk.length;
      },
    });
    const doneAt = performance.now();
    clearTimeout(timer);
    if (!cancel || result.metadata.stopReason !== "abort") return undefined;
    const sample: Sample = {
      phase: cancel.hadToken ? "decode" : "prefill",
      msToTerminal: doneAt - cancel.at,
      msToFree: doneAt - cancel.at,
      tokensAfter: meter() - cancel.meter,
    };
    return sample;
  });
  const results = await Promise.all(runs);
  // Untimed: forget the prompts so the next trial prefills again instead of reusing the cached prefix.
  await Promise.all(sides.sequences.map((sequence) => sequence.clearHistory()));
  const samples = results.filter((s): s is Sample => s !== undefined);
  return { samples, finishedFirst: results.length - samples.length };
}

/** Wall time of both sides running the prompts to `maxTokens` with no cancel (first run of each: warm-up). */
export async function timeRuns(
  sides: Sides,
  sluicePrompts: Token[][],
  nlcPrompts: Token[][],
  maxTokens: number,
) {
  const sluice = async () => {
    const started = performance.now();
    const traces = await Promise.all(
      sluicePrompts.map((prompt) =>
        readStream(sides.runtime.generate({ prompt, maxTokens, temperature: 0, ignoreEos: true })),
      ),
    );
    return {
      ms: performance.now() - started,
      firstMs: Math.max(...traces.map((t) => t.tokenTimes[0]! - started)),
    };
  };
  const nlc = async () => {
    const started = performance.now();
    let first = 0;
    await Promise.all(
      nlcPrompts.map((prompt, i) =>
        sides.completions[i]!.generateCompletion(prompt, {
          maxTokens,
          temperature: 0,
          repeatPenalty: false,
          onToken: () => {
            first ||= performance.now() - started;
          },
        }),
      ),
    );
    await Promise.all(sides.sequences.map((sequence) => sequence.clearHistory()));
    return { ms: performance.now() - started, firstMs: first };
  };
  await sluice();
  await nlc();
  return { sluice: await sluice(), nlc: await nlc() };
}
