import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { SluiceError } from "../../src/errors.ts";
import { DraftCost } from "../../src/runtime/DraftCost.ts";
import type { Drafter, RequestDrafter } from "../../src/runtime/Drafter.ts";
import { DraftLength } from "../../src/runtime/DraftLength.ts";
import { PromptLookup } from "../../src/runtime/PromptLookup.ts";
import { planStep } from "../../src/runtime/planStep.ts";
import type { RequestState } from "../../src/runtime/RequestState.ts";
import { Speculation } from "../../src/runtime/Speculation.ts";
import { drain, scriptedRuntime } from "../helpers/scripted.ts";

/** Prompt lookup by brute force: the longest suffix n-gram's most recent earlier occurrence, continued. */
function lookup(tokens: readonly number[], min: number, max: number, k: number): number[] {
  const last = tokens.length - 1;
  for (let n = Math.min(max, last); n >= min; n--) {
    for (let end = last - 1; end >= n - 1; end--) {
      let same = true;
      for (let i = 0; i < n && same; i++) same = tokens[end - i] === tokens[last - i];
      if (!same) continue;
      const out: number[] = [];
      for (let i = 0; i < k; i++) out.push(end + 1 + i <= last ? tokens[end + 1 + i]! : out[end + i - last]!);
      return out;
    }
  }
  return [];
}

describe("PromptLookup", () => {
  test("drafts what followed the longest, most recent earlier match of the suffix (brute force agrees)", () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 0, max: 4 }), { minLength: 1, maxLength: 30 }),
        fc.array(fc.integer({ min: 0, max: 4 }), { maxLength: 40 }),
        fc.integer({ min: 1, max: 4 }),
        fc.integer({ min: 0, max: 3 }),
        fc.integer({ min: 1, max: 8 }),
        (prompt, output, ngramMax, less, k) => {
          const ngramMin = Math.max(1, ngramMax - less);
          const drafter = new PromptLookup({ ngramMax, ngramMin }).start(prompt);
          const seen = [...prompt];
          assert.deepEqual(drafter.draft(k), lookup(seen, ngramMin, ngramMax, k));
          for (const token of output) {
            drafter.push(token);
            seen.push(token);
            // Not every step asks: the index must catch up on every token pushed in between.
            if (token % 2 === 0) assert.deepEqual([...drafter.draft(k)], lookup(seen, ngramMin, ngramMax, k));
          }
          assert.deepEqual([...drafter.draft(k)], lookup(seen, ngramMin, ngramMax, k));
        },
      ),
      { numRuns: 500 },
    );
  });

  test("a prompt being quoted back is drafted from where the quote is; a loop continues itself", () => {
    const passage = [5, 6, 7, 8, 9, 10, 11, 12];
    const drafter = new PromptLookup().start([1, 2, ...passage, 3]);
    drafter.push(5);
    drafter.push(6);
    assert.deepEqual(drafter.draft(4), [7, 8, 9, 10]);
    const loop = new PromptLookup().start([1, 2, 3, 1, 2]);
    assert.deepEqual(loop.draft(7), [3, 1, 2, 3, 1, 2, 3]);
    assert.deepEqual(new PromptLookup().start([1, 2, 3, 4]).draft(4), []);
  });
});

describe("draft length", () => {
  test("grows to draftMax while drafts are accepted, falls to none when they are not, comes back", () => {
    const cost = new DraftCost();
    const length = new DraftLength(6);
    for (let i = 0; i < 30; i++) length.observe(length.current(cost), length.current(cost));
    assert.equal(length.current(cost), 6);
    // Costlier draft tokens: shorter drafts at the same acceptance; a fixed cost per draft: none at low rates.
    length.rate = 0.8;
    const cheap = length.current(cost);
    cost.perToken = 0.6;
    assert.ok(length.current(cost) < cheap);
    cost.perToken = 0.3;
    length.rate = 0.4;
    assert.ok(length.current(cost) > 0);
    cost.fixed = 1;
    assert.equal(length.current(cost), 0);
    cost.fixed = 0;
    for (let i = 0; i < 30; i++) length.observe(Math.max(1, length.current(cost)), 0);
    assert.equal(length.current(cost), 0);
    // At 0, free one-token guesses that turn out right bring drafting back.
    for (let i = 0; i < 30 && length.current(cost) === 0; i++) length.observe(1, 1);
    assert.ok(length.current(cost) > 0);
  });

  test("the length maximises expected tokens per unit of step time", () => {
    fc.assert(
      fc.property(
        fc.double({ min: 0, max: 1, noNaN: true }),
        fc.double({ min: 0, max: 2, noNaN: true }),
        fc.double({ min: 0.01, max: 2, noNaN: true }),
        fc.integer({ min: 1, max: 12 }),
        (rate, fixed, perToken, max) => {
          const cost = new DraftCost();
          cost.fixed = fixed;
          cost.perToken = perToken;
          const length = new DraftLength(max, rate);
          const value = (k: number) => {
            let expected = 0;
            for (let i = 0; i <= k; i++) expected += rate ** i;
            return expected / cost.costOf(k);
          };
          const chosen = length.current(cost);
          for (let k = 0; k <= max; k++) assert.ok(value(chosen) >= value(k) - 1e-9, `${chosen} vs ${k}`);
        },
      ),
    );
  });

  test("after one-token drafts only, longer drafts are still tried once acceptance is high", () => {
    // A compute-bound model: a drafting item costs a whole decode more, each token a third.
    const cost = new DraftCost();
    for (let i = 0; i < 200; i++) {
      cost.observe(1, 1, 0, 0, 0);
      cost.observe(1 + 1 + 0.3, 1, 1, 1, 0);
    }
    assert.ok(Math.abs(cost.costOf(1) - 2.3) < 0.05, String(cost.costOf(1)));
    assert.equal(new DraftLength(8, 0.5).current(cost), 0);
    assert.ok(new DraftLength(8, 0.95).current(cost) >= 4);
  });

  test("costs measured on a busy machine fade: drafting is tried again after plain steps", () => {
    const cost = new DraftCost();
    for (let i = 0; i < 300; i++) {
      cost.observe(1, 1, 0, 0, 0);
      cost.observe(1 + 2 + (i % 8) * 1.5, 1, 1, i % 8 || 1, 0);
    }
    const length = new DraftLength(8, 0.97);
    assert.equal(length.current(cost), 0);
    for (let i = 0; i < 400 && length.current(cost) === 0; i++) cost.observe(1, 1, 0, 0, 0);
    assert.ok(length.current(cost) > 0);
  });

  test("at length 0 the drafter's guess is checked against the next token, and nothing is sent", () => {
    let guesses = 0;
    const drafter: RequestDrafter = {
      push() {},
      draft: () => {
        guesses++;
        return [9];
      },
    };
    const cost = new DraftCost();
    const speculation = new Speculation(drafter, 4);
    // Until a plain decode step is timed, a draft's cost is unknown: none is sent, however good the guesses.
    speculation.length.rate = 1;
    assert.deepEqual(speculation.propose(4, cost), []);
    assert.equal(guesses, 1);
    cost.observe(1, 1, 0, 0, 0);
    speculation.length.rate = 0;
    assert.deepEqual(speculation.propose(4, cost), []);
    assert.equal(guesses, 2);
    for (let i = 0; i < 40 && speculation.draft.length === 0; i++) {
      speculation.verified(0, 9);
      speculation.propose(4, cost);
    }
    assert.ok(speculation.draft.length > 0);
    assert.equal(speculation.drafted, speculation.draft.length);
  });

  test("one drafting step slowed by something else does not price drafts out", () => {
    // Measured on a loaded machine: a 4-token drafting step took 52 ms against 12.5 ms for a plain one.
    const cost = new DraftCost();
    cost.observe(12.5, 1, 0, 0, 0);
    cost.observe(52, 1, 1, 4, 0);
    assert.ok(new DraftLength(8, 0.75).current(cost) > 0, `costOf(4) ${cost.costOf(4)}`);
    // A cost that is real shows in every step, and prices drafts out within a few.
    for (let i = 0; i < 10; i++) cost.observe(52, 1, 1, 4, 0);
    assert.equal(new DraftLength(8, 0.75).current(cost), 0, `costOf(4) ${cost.costOf(4)}`);
  });

  test("the cost of drafts is learned from steps: a fixed part per drafting item and a part per token", () => {
    fc.assert(
      fc.property(
        fc.double({ min: 0, max: 1.5, noNaN: true }),
        fc.double({ min: 0.05, max: 1, noNaN: true }),
        fc.double({ min: 0.2, max: 50, noNaN: true }),
        (fixed, perToken, ms) => {
          const cost = new DraftCost();
          for (let i = 0; i < 400; i++) {
            const decodes = 1 + (i % 4);
            const drafting = 1 + (i % decodes);
            const tokens = drafting * (1 + (i % 7));
            cost.observe(ms * decodes, decodes, 0, 0, 0);
            cost.observe(ms * (decodes + fixed * drafting + perToken * tokens), decodes, drafting, tokens, 0);
            cost.observe(ms * 100, decodes, drafting, tokens, 64); // reads a prompt: ignored
          }
          assert.ok(Math.abs(cost.fixed - fixed) < 0.02, `fixed ${cost.fixed} vs ${fixed}`);
          assert.ok(Math.abs(cost.perToken - perToken) < 0.02, `perToken ${cost.perToken} vs ${perToken}`);
          // A step slowed down by something else moves the estimates a little, not to "never draft".
          cost.observe(ms * 1000, 1, 1, 4, 0);
          assert.ok(cost.costOf(4) < 4 * (1 + fixed + 4 * perToken) + 2);
        },
      ),
      { numRuns: 50 },
    );
  });
});

describe("planning drafts", () => {
  test("drafts count in the step budget and never pass maxTokens; decodes always get their token", () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            phase: fc.constantFrom("decode", "prefill"),
            speculative: fc.boolean(),
            generated: fc.integer({ min: 1, max: 20 }),
            room: fc.integer({ min: 1, max: 10 }),
            prompt: fc.integer({ min: 1, max: 40 }),
          }),
          { minLength: 1, maxLength: 6 },
        ),
        fc.integer({ min: 7, max: 40 }),
        (requests, maxStepTokens) => {
          const running = requests.map((r, slot) => {
            const speculation = r.speculative
              ? new Speculation({ push() {}, draft: (max) => Array.from({ length: max }, () => 1) }, 8)
              : undefined;
            if (speculation) speculation.length.rate = 1;
            return {
              phase: r.phase,
              slot,
              lastToken: 3,
              generated: r.generated,
              prefilled: 0,
              speculation,
              request: {
                maxTokens: r.generated + r.room,
                sampler: {},
                promptTokens: Array.from({ length: r.prompt }, () => 2),
              },
            } as unknown as RequestState;
          });
          const planned = planStep(running, {
            prefillChunk: 8,
            prefillBudget: 16,
            maxStepTokens,
            draftCost: new DraftCost(),
            minChunk: 1,
          });
          let total = 0;
          for (const { state, item } of planned) {
            total += item.tokens.length + (item.draft?.length ?? 0);
            if (item.draft !== undefined) {
              assert.ok(state.speculation !== undefined);
              assert.ok(item.draft.length <= state.request.maxTokens - state.generated - 1);
            } else assert.ok(state.speculation === undefined || item.sample === undefined);
          }
          assert.ok(total <= maxStepTokens, `${total} > ${maxStepTokens}`);
          const decoding = running.filter((s) => s.phase === "decode");
          assert.equal(planned.filter((p) => p.state.phase === "decode").length, decoding.length);
          // Drafts never hold the oldest prompt back: it reads at least its reserve whenever decodes leave room.
          const oldest = running.find((s) => s.phase === "prefill");
          if (oldest !== undefined && maxStepTokens - decoding.length > 0) {
            const read = planned.find((p) => p.state === oldest)?.item.tokens.length ?? 0;
            const want = Math.min(oldest.request.promptTokens.length, 8, maxStepTokens - decoding.length);
            assert.ok(read >= want, `the oldest prompt read ${read}, fewer than ${want}`);
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  test("speculative streams whose drafts fill the step do not hold a prompt back until they end", async () => {
    // Slot 0 repeats its prompt, so every draft is accepted and its length stays at draftMax; 2 decode
    // tokens + 8 draft tokens fill a 10-token step. The prompt beside it must still be read step after step.
    const loop = Array.from({ length: 400 }, (_, i) => 400 + (i % 4));
    const { runtime, engine } = await scriptedRuntime(
      { slots: 2, maxStepTokens: 10, script: (p) => (p[0] === 400 ? loop : [500, 501]) },
      { drafter: "prompt-lookup", draftMax: 8, prefillChunkSize: 8 },
    );
    const stream = runtime.generate({ prompt: loop.slice(0, 12), maxTokens: 390, ignoreEos: true });
    const reader = stream[Symbol.asyncIterator]();
    for (let i = 0; i < 4; i++) await reader.next();
    const from = engine.steps.length;
    const prompt = runtime.generate({ prompt: Array.from({ length: 40 }, (_, i) => 600 + i), maxTokens: 2 });
    await drain(prompt);
    // 40 prompt tokens at 8 a step: 5 steps and the one that samples its second token, a few for admission.
    assert.ok(engine.steps.length - from <= 10, `the prompt took ${engine.steps.length - from} steps`);
    assert.ok(!stream.finished, "the speculative stream ended first: the test proves nothing");
    stream.cancel();
    await runtime.close();
  });
});

describe("options", () => {
  function refusal(fn: () => unknown): SluiceError {
    try {
      fn();
    } catch (error) {
      assert.ok(error instanceof SluiceError, String(error));
      return error;
    }
    assert.fail("accepted");
  }

  test("a drafter and draftMax are checked; per request speculative is checked and can be refused", async () => {
    for (const options of [{ drafter: "ngram" }, { drafter: {} }, { draftMax: 0 }, { draftMax: 65 }]) {
      await assert.rejects(
        () => scriptedRuntime({}, options as never),
        (e) => e instanceof SluiceError && e.code === "invalid_option",
      );
    }
    const { runtime: off } = await scriptedRuntime({ slots: 1 });
    const noDrafter = refusal(() => off.generate({ prompt: "ab", speculative: true }));
    assert.equal(noDrafter.param, "speculative");
    await off.close();
    const { runtime, engine } = await scriptedRuntime({ slots: 1 }, { drafter: "prompt-lookup" });
    assert.equal(
      refusal(() => runtime.generate({ prompt: "ab", speculative: "yes" as never })).param,
      "speculative",
    );
    const refused = refusal(() => runtime.generate({ prompt: "ab", speculative: true, logprobs: 2 }));
    assert.equal(refused.param, "speculative");
    assert.match(refused.message, /logprobs/);
    // By default a request the verifier cannot serve decodes plainly: its items carry no draft.
    const text = "abcabcabcabcabcabc";
    await drain(runtime.generate({ prompt: text, logprobs: 1, maxTokens: 12 }));
    assert.ok(engine.steps.every((s) => s.items.every((i) => i.draft === undefined)));
    await drain(runtime.generate({ prompt: text, maxTokens: 12, speculative: false }));
    assert.ok(engine.steps.every((s) => s.items.every((i) => i.draft === undefined)));
    const result = await runtime.generate({ prompt: text, maxTokens: 12 }).result;
    assert.equal(result.text, text.slice(0, 12));
    assert.ok(engine.steps.some((s) => s.items.some((i) => (i.draft?.length ?? 0) > 0)));
    assert.ok(runtime.stats.draftTokens > 0 && runtime.stats.draftTokensAccepted > 0);
    assert.equal(
      runtime.stats.draftAcceptanceRate,
      runtime.stats.draftTokensAccepted / runtime.stats.draftTokens,
    );
    await runtime.close();
  });

  test("an engine that does not verify drafts never gets one; asking for speculation there is refused", async () => {
    const { runtime, engine } = await scriptedRuntime(
      { slots: 1, speculative: false },
      { drafter: "prompt-lookup" },
    );
    assert.equal(refusal(() => runtime.generate({ prompt: "ab", speculative: true })).param, "speculative");
    await drain(runtime.generate({ prompt: "abcabcabcabc", maxTokens: 10 }));
    assert.ok(engine.steps.every((s) => s.items.every((i) => i.draft === undefined)));
    await runtime.close();
  });
});

describe("a drafter whose guesses cost time (a draft model)", () => {
  /**
   * A drafter that always guesses right (it knows the script) and, like a draft model, computes its guesses
   * in `prepare`, taking `prepareMs` per call that asks for any. Costs are simulated with timers, 80x apart
   * (the target step 1 ms, drafting 80 ms), so machine load cannot turn the comparison around.
   */
  function oracle(script: readonly number[], prepareMs: number) {
    let prepares = 0;
    const drafter: Drafter = {
      name: "oracle",
      start() {
        const seen: number[] = [];
        return {
          push: (token: number) => void seen.push(token),
          draft: (max: number) => script.slice(seen.length, seen.length + max),
          release() {},
        } satisfies RequestDrafter & { release(): void };
      },
      async prepare(wanted) {
        if (wanted.length === 0) return;
        prepares++;
        if (prepareMs > 0) await new Promise((resolve) => setTimeout(resolve, prepareMs));
      },
    };
    return { drafter, prepares: () => prepares };
  }

  test("its time counts in what drafts cost: a slow one stops drafting, a free one keeps going", async () => {
    const script = Array.from({ length: 700 }, (_, i) => 400 + (i % 7));
    const tokens = 600;
    const drafted: Record<string, number> = {};
    for (const [name, prepareMs] of [
      ["free", 0],
      ["slow", 80],
    ] as const) {
      const { drafter, prepares } = oracle(script, prepareMs);
      const { runtime } = await scriptedRuntime(
        { slots: 1, contextSize: 1024, stepMs: () => 1, script: () => script },
        { drafter, draftMax: 8 },
      );
      await drain(runtime.generate({ prompt: [1, 2, 3], maxTokens: tokens, ignoreEos: true }));
      drafted[name] = runtime.stats.draftTokens / tokens;
      if (name === "slow") {
        // At length 0 its one-token probe comes every PROBE_EVERY steps, not every step.
        const steps = runtime.steps;
        assert.ok(prepares() < steps / 2, `${prepares()} prepares in ${steps} steps`);
      }
      await runtime.close();
    }
    // Right every time, a free drafter settles near draftMax (8 of every 9 tokens drafted: a loaded machine's
    // slow steps lower it); the slow one drafts a small share, mostly while its cost is still being learned.
    const figures = `draft tokens per token: free ${drafted.free}, slow ${drafted.slow}`;
    assert.ok(drafted.free! > 0.4, figures);
    assert.ok(drafted.slow! < drafted.free! / 3, figures);
  });
});
