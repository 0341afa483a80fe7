import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { type LlamaContext, LlamaModel } from "node-llama-cpp";
import { GREEDY, type SamplerConfig, type StepItem, type StepOutcome } from "../../src/engine/Engine.ts";
import { LlamaEngine } from "../../src/engine/LlamaEngine.ts";
import { Runtime } from "../../src/runtime/Runtime.ts";
import type { GenerationRequest, GenerationResult } from "../../src/types.ts";
import { assertSameResult as same } from "../helpers/results.ts";

// Real engine: the bundled model, one thread, small contexts. Steps whose items are all plain are decoded by
// LlamaEngine itself (`directSteps`); these tests take that path through cancels, a close, a failed decode,
// a full context and random mixes with requests that need node-llama-cpp's evaluation, and check that what
// a slot is left with always serves the next request exactly as an empty slot would.

const GENESIS = "Genesis 1\n1 In the beginning";
const PSALM = "The LORD is my shepherd; I shall not want. He maketh me";
const REPEATING = "And it came to pass, and it came to pass in those days, and it came to pass";

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

/** Calls `hook` right after each step the runtime issues on `engine`, while that step is in flight. */
function duringSteps(
  engine: LlamaEngine,
  hook: (items: readonly StepItem[], direct: boolean) => void,
): () => void {
  const step = engine.step.bind(engine);
  engine.step = (items) => {
    const before = engine.directSteps;
    const pending = step(items);
    hook(items, engine.directSteps > before);
    return pending;
  };
  return () => {
    engine.step = step;
  };
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

describe("a slot after a cancel of its request while a direct step was in flight", () => {
  test("serves plain, speculative, log-probability and grammar requests as an emptied slot does", async () => {
    // One slot: every request reuses what the cancelled one left. Short prompt chunks: prefill takes steps.
    const engine = await LlamaEngine.create({ slots: 1, threads: 1, contextSize: 256 });
    const runtime = await Runtime.create({ engine, drafter: "prompt-lookup", prefillChunkSize: 8 });
    try {
      const next: GenerationRequest[] = [
        { prompt: REPEATING, maxTokens: 32, temperature: 0, speculative: false },
        { prompt: REPEATING, maxTokens: 32, temperature: 0 },
        { prompt: REPEATING, maxTokens: 32, temperature: 0, logprobs: 1 },
        { prompt: REPEATING, maxTokens: 32, temperature: 0.8, seed: 11, speculative: false },
        {
          prompt: `${REPEATING} in the land`,
          maxTokens: 24,
          temperature: 0,
          grammar: { type: "gbnf", grammar: 'root ::= [a-z ,]+ "."' },
        },
      ];
      const fresh: GenerationResult[] = [];
      for (const request of next)
        fresh.push(await runtime.generate({ ...request, cachePrompt: false }).result);

      type Victim = { what: string; request: GenerationRequest; at: (items: readonly StepItem[]) => boolean };
      let sampled = 0;
      let chunks = 0;
      const victims: Victim[] = [
        {
          what: "second prompt chunk",
          request: { prompt: REPEATING, maxTokens: 40, speculative: false },
          at: (items) => items[0]!.sample === undefined && ++chunks === 2,
        },
        {
          what: "third decode step",
          request: { prompt: REPEATING, maxTokens: 40, speculative: false },
          at: (items) => items[0]!.sample !== undefined && ++sampled === 3,
        },
        {
          what: "first step verifying a draft",
          request: { prompt: REPEATING, maxTokens: 40 },
          at: (items) => (items[0]!.draft?.length ?? 0) > 0,
        },
      ];
      for (const victim of victims) {
        for (const via of ["cancel()", "signal"] as const) {
          const what = `${victim.what}, ${via}`;
          sampled = 0;
          chunks = 0;
          const controller = new AbortController();
          // From an emptied slot, so that the whole prompt is read in chunks.
          const channel = runtime.generate({
            ...victim.request,
            cachePrompt: false,
            temperature: 0,
            ignoreEos: true,
            signal: controller.signal,
          });
          let hit: boolean | undefined;
          const stop = duringSteps(engine, (items, direct) => {
            if (hit !== undefined || !victim.at(items)) return;
            hit = direct;
            if (via === "signal") controller.abort();
            else channel.cancel();
          });
          try {
            assert.equal((await channel.result).reason, "cancelled", what);
          } finally {
            stop();
          }
          assert.equal(hit, true, `${what}: cancelled while a direct step was in flight`);
          for (const [i, request] of next.entries()) {
            const result = await runtime.generate(request).result;
            assert.ok(result.usage.cachedTokens > 0, `${what}, request ${i}: the slot's cache was reused`);
            same(result, fresh[i]!, `${what}, request ${i}`);
          }
        }
      }
      assert.ok(runtime.stats.draftTokensAccepted > 0, "drafts were verified");
    } finally {
      await runtime.close();
    }
  });

  test("runtime.close() while a direct step is in flight ends every stream and closes the engine", async () => {
    const engine = await LlamaEngine.create({ slots: 3, threads: 1, contextSize: 256 });
    const runtime = await Runtime.create({ engine, drafter: "prompt-lookup" });
    let closing: Promise<void> | undefined;
    let decoding = 0;
    const stop = duringSteps(engine, (items, direct) => {
      if (direct && items.length === 3 && items.every((item) => item.sample !== undefined)) decoding++;
      if (decoding === 5) closing ??= runtime.close();
    });
    try {
      const channels = [
        runtime.generate({ prompt: GENESIS, maxTokens: 200, ignoreEos: true, speculative: false }),
        runtime.generate({ prompt: REPEATING, maxTokens: 200, ignoreEos: true }),
        runtime.generate({ prompt: PSALM, maxTokens: 200, ignoreEos: true, temperature: 0.7, seed: 2 }),
      ];
      const results = await Promise.all(channels.map((channel) => channel.result));
      assert.ok(closing, "runtime.close() was called during a direct step");
      await closing;
      // Four steps' tokens (and accepted drafts): the fifth step's are dropped, its requests cancelled as it ran.
      for (const [i, result] of results.entries()) {
        assert.equal(result.reason, "cancelled");
        if (i === 1) assert.ok(result.usage.completionTokens >= 4);
        else assert.equal(result.usage.completionTokens, 4);
      }
      await assert.rejects(engine.step([{ slot: 0, tokens: [1], sample: GREEDY }]), {
        code: "engine_failed",
      });
    } finally {
      stop();
      await runtime.close();
    }
  });
});

describe("a full context on the direct path", () => {
  test("a slot fills to the last cell; one token more fails that item alone and leaves its cache as it was", async () => {
    const engine = await LlamaEngine.create({ slots: 2, threads: 1, contextSize: 128 });
    try {
      const size = engine.info.contextSize;
      const prompt = promptOf(engine, REPEATING);
      // Slot 0 read up to the last cell but one, in prompt chunks (node-llama-cpp keeps one cell free).
      const filler = Array.from({ length: size - 2 }, (_, i) => prompt[i % prompt.length]!);
      filler[0] = prompt[0]!;
      for (let at = 0; at < filler.length; at += 64) {
        const [outcome] = await engine.step([
          { slot: 0, tokens: filler.slice(at, at + 64), sample: undefined },
        ]);
        assert.ok(outcome?.ok);
      }
      const direct = engine.directSteps;
      // The last cell: slot 0 samples from it, beside slot 1's prompt.
      const [full, other] = await engine.step([
        { slot: 0, tokens: [prompt[1]!], sample: GREEDY },
        { slot: 1, tokens: prompt, sample: GREEDY },
      ]);
      const token = tokenOf(full, "the last cell");
      tokenOf(other, "beside it");
      assert.equal(engine.cachedTokens(0).length, size - 1);
      // One more: refused before anything is decoded; the other slot's item goes on.
      const [over, beside] = await engine.step([
        { slot: 0, tokens: [token], sample: GREEDY },
        { slot: 1, tokens: [tokenOf(other, "")], sample: GREEDY },
      ]);
      assert.ok(over && !over.ok);
      assert.match(String((over.error as Error).message), /context is full/);
      tokenOf(beside, "beside the full slot");
      assert.equal(engine.cachedTokens(0).length, size - 1);
      assert.deepEqual(engine.cachedTokens(0), [...filler, prompt[1]!]);
      assert.equal(engine.cachedTokens(1).length, prompt.length + 1);
      assert.equal(engine.directSteps - direct, 2);
    } finally {
      await engine.close();
    }
  });

  test("prompt + maxTokens = the context: plain, speculative and log-probability requests side by side", async () => {
    const engine = await LlamaEngine.create({ slots: 3, threads: 1, contextSize: 128 });
    const runtime = await Runtime.create({ engine, drafter: "prompt-lookup" });
    try {
      const size = engine.info.contextSize;
      const prompt = promptOf(engine, REPEATING);
      const maxTokens = size - prompt.length;
      const requests: GenerationRequest[] = [
        { prompt, maxTokens, temperature: 0, ignoreEos: true, speculative: false },
        { prompt, maxTokens, temperature: 0, ignoreEos: true },
        // Shorter: the others' last steps, up to the last cell, are direct.
        { prompt, maxTokens: maxTokens - 32, temperature: 0, ignoreEos: true, logprobs: 1 },
      ];
      const alone: GenerationResult[] = [];
      for (const request of requests)
        alone.push(await runtime.generate({ ...request, cachePrompt: false }).result);
      const direct = engine.directSteps;
      const together = await Promise.all(requests.map((request) => runtime.generate(request).result));
      together.forEach((result, i) => {
        assert.equal(result.reason, "length", `request ${i}: ${result.error?.message}`);
        assert.equal(result.usage.completionTokens, requests[i]!.maxTokens);
        same(result, alone[i]!, `request ${i}`);
      });
      assert.deepEqual(alone[1]!.tokenIds, alone[0]!.tokenIds, "speculative = plain");
      assert.ok(engine.directSteps - direct >= 32, "the plain requests ended on direct steps");
      assert.throws(() => runtime.generate({ prompt, maxTokens: maxTokens + 1 }), {
        code: "prompt_too_long",
      });
    } finally {
      await runtime.close();
    }
  });
});

describe("a failed direct decode", () => {
  test("fails its step's items only; the slots and node-llama-cpp's threads serve the next requests", async () => {
    const failures = { left: 0 };
    const create = LlamaModel.prototype.createContext;
    LlamaModel.prototype.createContext = async function (this: LlamaModel, options) {
      const context = await create.call(this, options);
      failDecodes(context, failures);
      return context;
    };
    let engine: LlamaEngine;
    try {
      engine = await LlamaEngine.create({ slots: 2, threads: 1, contextSize: 256 });
    } finally {
      LlamaModel.prototype.createContext = create;
    }
    const runtime = await Runtime.create({ engine, drafter: "prompt-lookup" });
    try {
      const requests: GenerationRequest[] = [
        { prompt: GENESIS, maxTokens: 24, temperature: 0, speculative: false },
        { prompt: REPEATING, maxTokens: 24, temperature: 0 },
        { prompt: PSALM, maxTokens: 24, temperature: 0, logprobs: 1 },
        { prompt: GENESIS, maxTokens: 24, temperature: 0.8, seed: 5, speculative: false },
      ];
      const fresh: GenerationResult[] = [];
      for (const request of requests)
        fresh.push(await runtime.generate({ ...request, cachePrompt: false }).result);

      // The fourth step where both requests decode fails: armed as it is issued (it decodes after that).
      let failed: boolean | undefined;
      let decoding = 0;
      const stop = duringSteps(engine, (items, direct) => {
        if (failed !== undefined || items.length !== 2 || items.some((item) => item.sample === undefined))
          return;
        if (++decoding < 4) return;
        failed = direct;
        failures.left = 1;
      });
      let results: GenerationResult[];
      try {
        results = await Promise.all([
          runtime.generate({ prompt: GENESIS, maxTokens: 40, ignoreEos: true, speculative: false }).result,
          runtime.generate({ prompt: PSALM, maxTokens: 40, ignoreEos: true, speculative: false }).result,
        ]);
      } finally {
        stop();
      }
      assert.equal(failures.left, 0, "the armed decode ran");
      assert.equal(failed, true, "a direct step failed");
      for (const result of results) {
        assert.equal(result.reason, "error");
        assert.match(result.error!.message, /decode failed on purpose/);
      }
      // Every kind of request afterwards, twice over both slots, each as on an emptied slot.
      for (let round = 0; round < 2; round++) {
        const again = await Promise.all(requests.map((request) => runtime.generate(request).result));
        for (const [i, result] of again.entries()) same(result, fresh[i]!, `round ${round}, request ${i}`);
      }
    } finally {
      await runtime.close();
    }
  });
});

/** Makes the context's next `failures.left` llama_decode calls fail, without decoding. */
function failDecodes(context: LlamaContext, failures: { left: number }): void {
  const native = (context as unknown as { _ctx: Record<string, (...args: unknown[]) => Promise<void>> })._ctx;
  const decodeBatch = native.decodeBatch!.bind(native);
  Object.defineProperty(native, "decodeBatch", {
    value: () => {
      if (failures.left > 0) {
        failures.left--;
        return Promise.reject(new Error("decode failed on purpose"));
      }
      return decodeBatch();
    },
  });
}

describe("random mixes over six slots", () => {
  // Greedy decoding is exact only up to float rounding, which differs with what shares a step (a draft's
  // extra rows, other slots' prompt chunks): where the solo run's top two tokens are within this many nats,
  // either may come out. Outputs are compared up to the first such position; a slot left in a wrong state
  // changes the distribution outright.
  const NEAR_TIE = 0.02;
  const PROMPTS = [
    GENESIS,
    `${GENESIS} God created the heaven and the earth. And the earth`,
    PSALM,
    `${PSALM} to lie down in green pastures`,
    REPEATING,
  ];
  const KINDS: Record<string, { request: Partial<GenerationRequest>; exact: boolean }> = {
    greedy: { request: { speculative: false }, exact: true },
    speculative: { request: {}, exact: true },
    logprobs: { request: { logprobs: 1 }, exact: true },
    minTokens: { request: { minTokens: 1 }, exact: true },
    sampled: { request: { temperature: 0.8, seed: 3, speculative: false }, exact: false },
    speculativeSampled: { request: { temperature: 0.7, seed: 9 }, exact: false },
    grammar: { request: { grammar: { type: "gbnf", grammar: 'root ::= [a-z ,]+ "."' } }, exact: false },
  };
  const arbitrary = fc.array(
    fc.record({
      prompt: fc.constantFrom(...PROMPTS),
      kind: fc.constantFrom(...Object.keys(KINDS)),
      maxTokens: fc.integer({ min: 1, max: 40 }),
      cachePrompt: fc.boolean(),
      cancelAfter: fc.option(fc.integer({ min: 0, max: 5 }), { freq: 3 }),
    }),
    { minLength: 3, maxLength: 10 },
  );

  test("every request's output is its solo output, cancelled ones a prefix of it; slots stay exact", async () => {
    const engine = await LlamaEngine.create({ slots: 6, threads: 1, contextSize: 128 });
    const runtime = await Runtime.create({ engine, drafter: "prompt-lookup" });
    const solo = await Runtime.create({ slots: 1, threads: 1, contextSize: 128, promptCache: false });
    // Solo runs, with the two most likely tokens at each position: how far greedy output is exact.
    const references = new Map<string, { tokens: number[]; exact: number }>();
    const reference = async (request: GenerationRequest) => {
      const { cachePrompt: _, speculative: __, ...rest } = request;
      const key = JSON.stringify(rest);
      let known = references.get(key);
      if (known === undefined) {
        const result = await solo.generate({ ...rest, logprobs: 2 }).result;
        let exact = result.logprobs!.findIndex(
          ({ token, top }) =>
            top[0]?.token !== token || top[0].logprob - (top[1]?.logprob ?? -Infinity) < NEAR_TIE,
        );
        if (exact < 0) exact = result.tokenIds.length;
        known = { tokens: result.tokenIds, exact };
        references.set(key, known);
      }
      return known;
    };
    try {
      const direct = engine.directSteps;
      const steps = runtime.steps;
      let compared = 0;
      await fc.assert(
        fc.asyncProperty(arbitrary, async (mix) => {
          const requests = mix.map(({ prompt, kind, maxTokens, cachePrompt }) => ({
            prompt,
            maxTokens,
            cachePrompt,
            temperature: 0,
            ignoreEos: true,
            ...KINDS[kind]!.request,
          }));
          const results = await Promise.all(
            mix.map(async ({ cancelAfter }, i) => {
              const channel = runtime.generate(requests[i]!);
              if (cancelAfter !== null) {
                let chunks = 0;
                for await (const _ of channel) if (chunks++ === cancelAfter) channel.cancel();
              }
              return channel.result;
            }),
          );
          for (const [i, result] of results.entries()) {
            const { kind } = mix[i]!;
            const request = requests[i]!;
            const what = `${kind} ${JSON.stringify(request)}`;
            assert.notEqual(result.reason, "error", `${what}: ${result.error?.message}`);
            if (result.reason !== "cancelled") {
              assert.equal(result.reason, "length", what);
              assert.equal(result.usage.completionTokens, request.maxTokens, what);
            }
            if (kind === "grammar") assert.match(result.text, /^[a-z ,]*\.?$/, what);
            if (!KINDS[kind]!.exact) continue;
            const { tokens, exact } = await reference(request);
            const upTo = Math.min(exact, result.tokenIds.length);
            assert.deepEqual(result.tokenIds.slice(0, upTo), tokens.slice(0, upTo), what);
            compared++;
          }
        }),
        { numRuns: 20 },
      );
      assert.ok(compared > 0);
      const taken = engine.directSteps - direct;
      assert.ok(taken > 0 && taken < runtime.steps - steps, "both kinds of step were taken");
    } finally {
      await runtime.close();
      await solo.close();
    }
  });
});
