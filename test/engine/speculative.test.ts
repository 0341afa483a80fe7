import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { type LlamaContext, LlamaModel } from "node-llama-cpp";
import type { SamplerConfig, StepItem } from "../../src/engine/Engine.ts";
import { LlamaEngine } from "../../src/engine/LlamaEngine.ts";
import { samplerConfig } from "../helpers/sampler.ts";

// Real engine: the bundled model, one thread. Drafts are built from a reference run (right, or wrong at a
// chosen position), and the engine must return exactly the tokens plain decoding gives, with the accepted
// count and the KV cache that the draft implies.
const PROMPTS = ["Genesis 1\n1 In the beginning", "And the LORD spake unto Moses, saying", "Psalm 23\n1 The"];
const TOKENS = 40;

let engine: LlamaEngine;
/** llama_decode calls so far (the engine's context, caught as it is created). */
const decodes = { count: 0 };

before(async () => {
  const create = LlamaModel.prototype.createContext;
  LlamaModel.prototype.createContext = async function (this: LlamaModel, options) {
    const context = await create.call(this, options);
    countDecodes(context);
    return context;
  };
  try {
    engine = await LlamaEngine.create({ slots: 3, threads: 1, contextSize: 512 });
  } finally {
    LlamaModel.prototype.createContext = create;
  }
});
after(() => engine.close());

function countDecodes(context: LlamaContext): void {
  const native = (context as unknown as { _ctx: Record<string, (...args: unknown[]) => unknown> })._ctx;
  const decodeBatch = native.decodeBatch!.bind(native);
  // An own property over the prototype's method, as the engine does for sampleToken (a Proxy would break
  // on that read-only property).
  Object.defineProperty(native, "decodeBatch", {
    value: (...args: unknown[]) => {
      decodes.count++;
      return decodeBatch(...args);
    },
  });
}

const sampler = samplerConfig;

function promptOf(text: string): number[] {
  return [engine.info.vocabulary.bos!, ...engine.tokenize(text, { special: false })];
}

async function one(item: StepItem) {
  const [outcome] = await engine.step([item]);
  assert.ok(outcome?.ok, String(!outcome?.ok && outcome?.error));
  return outcome as { ok: true; token: number; accepted?: number };
}

/** Plain decoding (no drafts), the reference. */
async function plain(
  slot: number,
  prompt: number[],
  sample: SamplerConfig,
  count = TOKENS,
): Promise<number[]> {
  await engine.trimSlot(slot, 0);
  const out: number[] = [];
  let tokens = prompt;
  while (out.length < count) {
    const { token } = await one({ slot, tokens, sample });
    out.push(token);
    tokens = [token];
  }
  await engine.releaseSlot(slot);
  return out;
}

/**
 * Speculative decoding with `draft(done)` guessing after `done` tokens; checks every step's accepted count
 * against the reference and the slot's cache after it. Returns the tokens and the steps taken.
 */
async function speculative(
  slot: number,
  prompt: number[],
  sample: SamplerConfig,
  draft: (done: number[]) => number[],
  reference?: number[],
): Promise<{ out: number[]; steps: number }> {
  await engine.trimSlot(slot, 0);
  const out: number[] = [];
  let tokens = prompt;
  let steps = 0;
  while (out.length < TOKENS) {
    const guess = draft(out).slice(0, TOKENS - out.length - 1);
    const { token, accepted } = await one({ slot, tokens, sample, draft: guess });
    steps++;
    assert.ok(accepted !== undefined && accepted >= 0 && accepted <= guess.length);
    if (reference !== undefined) {
      let expected = 0;
      while (expected < guess.length && guess[expected] === reference[out.length + expected]) expected++;
      assert.equal(accepted, expected, `step ${steps}: draft ${guess}`);
    }
    out.push(...guess.slice(0, accepted), token);
    tokens = [token];
    // The cache holds the prompt and every token but the last sampled one: rejected tokens are gone.
    assert.deepEqual(engine.cachedTokens(slot), [...prompt, ...out.slice(0, -1)]);
  }
  await engine.releaseSlot(slot);
  return { out, steps };
}

describe("draft verification on the bundled model", () => {
  test("greedy: the same tokens as plain decoding, whatever the drafts; accepted = the matching prefix", async () => {
    for (const text of PROMPTS) {
      const prompt = promptOf(text);
      const reference = await plain(0, prompt, sampler());
      // Right drafts of 1 to 6 tokens, drafts wrong at each position, and empty drafts.
      let call = 0;
      const patterns = [
        (done: number[]) => reference.slice(done.length, done.length + 4),
        (done: number[]) => {
          const guess = reference.slice(done.length, done.length + 1 + (call % 6));
          const wrong = call++ % (guess.length + 1);
          if (wrong < guess.length) guess[wrong] = (guess[wrong]! + 1) % 4000;
          return guess;
        },
        () => [],
      ];
      for (const draft of patterns) {
        const { out } = await speculative(1, prompt, sampler(), draft, reference);
        assert.deepEqual(out, reference, text);
      }
      const { steps } = await speculative(1, prompt, sampler(), patterns[0]!, reference);
      // Right drafts of 4: five tokens a step.
      assert.equal(steps, Math.ceil(TOKENS / 5));
    }
  });

  test("verification shares its step with other slots' decodes and prompt chunks", async () => {
    const [a, b, c] = PROMPTS.map(promptOf) as [number[], number[], number[]];
    const refA = await plain(0, a, sampler());
    const refB = await plain(1, b, sampler());
    for (const slot of [0, 1, 2]) await engine.trimSlot(slot, 0);
    // Slot 0 verifies drafts, slot 1 decodes plainly, slot 2 reads a prompt chunk by chunk, in every step.
    const outA: number[] = [];
    const outB: number[] = [];
    let tokensA = a;
    let tokensB = b;
    let read = 0;
    while (outA.length < TOKENS || outB.length < TOKENS) {
      const items: StepItem[] = [];
      let guess: number[] = [];
      if (outA.length < TOKENS) {
        guess = refA.slice(outA.length, outA.length + 3).slice(0, TOKENS - outA.length - 1);
        if (outA.length % 2 === 1 && guess.length > 1) guess[1] = 7;
        items.push({ slot: 0, tokens: tokensA, sample: sampler(), draft: guess });
      }
      if (outB.length < TOKENS) items.push({ slot: 1, tokens: tokensB, sample: sampler() });
      if (read < c.length - 1) {
        const chunk = c.slice(read, Math.min(read + 3, c.length - 1));
        items.push({ slot: 2, tokens: chunk, sample: undefined });
        read += chunk.length;
      }
      const before = decodes.count;
      const outcomes = await engine.step(items);
      assert.equal(decodes.count - before, 1, "one llama_decode for the whole step");
      for (const [i, item] of items.entries()) {
        const outcome = outcomes[i]!;
        assert.ok(outcome.ok);
        if (item.slot === 0) {
          outA.push(...guess.slice(0, outcome.accepted), outcome.token!);
          tokensA = [outcome.token!];
        } else if (item.slot === 1) {
          outB.push(outcome.token!);
          tokensB = [outcome.token!];
        }
      }
    }
    assert.deepEqual(outA, refA);
    assert.deepEqual(outB, refB);
    assert.deepEqual(engine.cachedTokens(2), c.slice(0, -1));
    for (const slot of [0, 1, 2]) await engine.releaseSlot(slot);
  });

  test("sampling: the same seed and drafts give the same tokens; another seed other tokens", async () => {
    // Each position is sampled with the request's seed mixed with the position, so a run repeats exactly.
    // Whether drafted and undrafted runs agree depends on the llama.cpp build: a verification batch may give
    // logits that differ in their last bits from a one-token decode's, which sampling can amplify (as for
    // requests sharing steps, see the README's Reproducibility); the prebuilt CPU binary does differ.
    const prompt = promptOf(PROMPTS[0]!);
    const sample = sampler({ temperature: 1, topK: 0, topP: 1, seed: 42 });
    const { out: none } = await speculative(1, prompt, sample, () => []);
    const drafts = () => {
      let call = 0;
      return (done: readonly number[]) => {
        // Guesses from the undrafted run, one in three spoiled at its end.
        const guess = none.slice(done.length, done.length + 1 + (call % 5));
        if (call++ % 3 === 2 && guess.length > 0) guess[guess.length - 1] = 11;
        return guess;
      };
    };
    const { out: drafted } = await speculative(1, prompt, sample, drafts());
    const { out: again } = await speculative(1, prompt, sample, drafts());
    assert.deepEqual(again, drafted);
    const { out: other } = await speculative(
      1,
      prompt,
      sampler({ temperature: 1, topK: 0, topP: 1, seed: 43 }),
      () => [],
    );
    assert.notDeepEqual(other, none);
    // And it samples: greedy decoding gives yet other tokens.
    assert.notDeepEqual(none, await plain(0, prompt, sampler()));
  });

  test("a draft with a grammar or log-probabilities is refused for that item only", async () => {
    const prompt = promptOf(PROMPTS[0]!);
    await engine.trimSlot(0, 0);
    const [refused, fine] = await engine.step([
      { slot: 0, tokens: prompt, sample: sampler({ logprobs: 2 }), draft: [] },
      { slot: 1, tokens: prompt, sample: sampler(), draft: [] },
    ]);
    assert.equal(refused?.ok, false);
    assert.equal(fine?.ok, true);
    for (const slot of [0, 1]) {
      await engine.releaseSlot(slot);
      await engine.trimSlot(slot, 0);
    }
  });
});
