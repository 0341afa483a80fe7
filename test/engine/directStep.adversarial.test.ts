import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { GREEDY, type SamplerConfig, type StepOutcome } from "../../src/engine/Engine.ts";
import { LlamaEngine } from "../../src/engine/LlamaEngine.ts";

// Real engine: the bundled model, one thread, small contexts. Steps whose items are all plain are decoded by
// LlamaEngine itself (`directSteps`); these tests take that path through a close with a step in flight.

const GENESIS = "Genesis 1\n1 In the beginning";
const PSALM = "The LORD is my shepherd; I shall not want. He maketh me";

function promptOf(engine: LlamaEngine, text: string): number[] {
  return [engine.info.vocabulary.bos!, ...engine.tokenize(text, { special: false })];
}

function tokenOf(outcome: StepOutcome | undefined, what: string): number {
  assert.ok(outcome?.ok, `${what}: ${outcome && !outcome.ok ? String(outcome.error) : "no outcome"}`);
  assert.equal(typeof outcome.token, "number", what);
  return outcome.token!;
}

/**
 * Feeds each slot its prompt, then `steps - 1` more steps of one token each, every slot in every step.
 * `during(n)` runs right after step n is issued, while it is in flight. Returns every step's tokens.
 */
async function decode(
  engine: LlamaEngine,
  prompts: number[][],
  samples: SamplerConfig[],
  steps: number,
  during?: (step: number) => void,
): Promise<number[][]> {
  const out: number[][] = [];
  let feed = prompts;
  for (let n = 0; n < steps; n++) {
    const pending = engine.step(feed.map((tokens, slot) => ({ slot, tokens, sample: samples[slot] })));
    during?.(n);
    const tokens = (await pending).map((outcome, slot) => tokenOf(outcome, `step ${n}, slot ${slot}`));
    out.push(tokens);
    feed = tokens.map((token) => [token]);
  }
  return out;
}

describe("close() with a step in flight", () => {
  for (const mixed of [false, true]) {
    const what = mixed ? "a step through node-llama-cpp (plain beside logprobs)" : "a direct step";
    test(`${what} finishes with the tokens it would have had, then the engine refuses steps`, async () => {
      const engine = await LlamaEngine.create({ slots: 2, threads: 1, contextSize: 128 });
      try {
        const prompts = [promptOf(engine, GENESIS), promptOf(engine, PSALM)];
        const samples = [GREEDY, mixed ? { ...GREEDY, logprobs: 1 } : GREEDY];
        const reference = await decode(engine, prompts, samples, 4);
        for (const slot of [0, 1]) {
          await engine.releaseSlot(slot);
          await engine.trimSlot(slot, 0);
        }
        const direct = engine.directSteps;
        let closing: Promise<void> | undefined;
        const again = await decode(engine, prompts, samples, 4, (n) => {
          if (n === 3) closing = engine.close();
        });
        assert.ok(closing, "close() was called");
        await closing;
        assert.deepEqual(again, reference);
        assert.equal(engine.directSteps - direct, mixed ? 0 : 4, "the steps took the path under test");
        await assert.rejects(engine.step([{ slot: 0, tokens: [again[3]![0]!], sample: GREEDY }]), {
          code: "engine_failed",
        });
      } finally {
        await engine.close();
      }
    });
  }
});
