import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { ScriptedEngine } from "../../src/engine/ScriptedEngine.ts";
import { DraftCost } from "../../src/runtime/DraftCost.ts";
import { planStep } from "../../src/runtime/planStep.ts";
import type { RequestState } from "../../src/runtime/RequestState.ts";
import { Runtime } from "../../src/runtime/Runtime.ts";
import { bundledVocabulary, drain } from "../helpers/scripted.ts";

/**
 * An engine that reads short chunks slowly over a long cache (llama.cpp's CPU flash attention below 64
 * tokens) says so in `info.minPromptChunk`; the runtime then never reads a prompt chunk shorter than that
 * unless it finishes the prompt, and leaves at least that much to read after a cached prefix.
 */
describe("minPromptChunk: no slivers of prompt", () => {
  test("property: every planned chunk finishes its prompt or reads at least the minimum, and leaves no sliver", () => {
    const prefilling = fc.record({ length: fc.integer({ min: 1, max: 600 }), done: fc.nat(600) });
    fc.assert(
      fc.property(
        fc.array(prefilling, { minLength: 1, maxLength: 4 }),
        fc.integer({ min: 0, max: 4 }),
        fc.integer({ min: 1, max: 128 }),
        fc.integer({ min: 1, max: 300 }),
        fc.integer({ min: 1, max: 600 }),
        fc.integer({ min: 16, max: 512 }),
        fc.boolean(),
        (prompts, decoding, min, chunk, budget, maxStepTokens, evenChunks) => {
          const states = [
            ...Array.from({ length: decoding }, (_, slot) => ({
              slot,
              phase: "decode",
              lastToken: 5,
              request: { sampler: {} },
            })),
            ...prompts.map(({ length, done }, i) => ({
              slot: decoding + i,
              phase: "prefill",
              prefilled: Math.min(done, length - 1),
              request: { promptTokens: Array.from({ length }, () => 7), sampler: {} },
            })),
          ] as unknown as RequestState[];
          const chunkSize = Math.max(chunk, min);
          const planned = planStep(states, {
            prefillChunk: chunkSize,
            prefillBudget: Math.max(budget, chunkSize),
            maxStepTokens,
            draftCost: new DraftCost(),
            minChunk: min,
            evenChunks,
          });
          assert.ok(planned.reduce((n, p) => n + p.item.tokens.length, 0) <= maxStepTokens);
          const reads = planned.filter((p) => p.state.phase === "prefill");
          for (const [i, { state, item }] of reads.entries()) {
            const remaining = state.request.promptTokens.length - state.prefilled;
            const tail = remaining - item.tokens.length;
            assert.ok(item.tokens.length > 0 && tail >= 0);
            if (tail > 0 && (item.tokens.length < min || tail < min)) {
              // Only where the step cannot hold two minimum chunks, and only for the step's first prompt.
              assert.equal(i, 0, `a sliver (${item.tokens.length} read, ${tail} left) for a later prompt`);
              assert.ok(
                maxStepTokens - decoding < 2 * min,
                `a sliver with room: ${item.tokens.length}, ${tail}`,
              );
            }
          }
          // The oldest prompt always moves.
          assert.equal(reads[0]?.state, states[decoding], "the oldest prompt got no chunk");
        },
      ),
      { numRuns: 3000 },
    );
  });

  test("property: drafts never cut the oldest prompt's chunk into a sliver", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 300 }),
        fc.integer({ min: 1, max: 4 }),
        fc.integer({ min: 1, max: 96 }),
        fc.integer({ min: 16, max: 600 }),
        (length, decoding, min, maxStepTokens) => {
          // Streams that draft as much as they are let (up to 64): the step is full unless the planner keeps room.
          const speculation = {
            propose: (room: number) => Array.from({ length: Math.min(room, 64) }, () => 1),
          };
          const states = [
            ...Array.from({ length: decoding }, (_, slot) => ({
              slot,
              phase: "decode",
              lastToken: 5,
              generated: 1,
              speculation,
              request: { sampler: {}, maxTokens: 10_000 },
            })),
            {
              slot: decoding,
              phase: "prefill",
              prefilled: 0,
              request: { promptTokens: Array.from({ length }, () => 7), sampler: {} },
            },
          ] as unknown as RequestState[];
          const chunk = Math.max(min, 128);
          const planned = planStep(states, {
            prefillChunk: chunk,
            prefillBudget: chunk,
            maxStepTokens,
            draftCost: new DraftCost(),
            minChunk: min,
          });
          const read = planned.find((p) => p.state.phase === "prefill")?.item.tokens.length ?? 0;
          const tail = length - read;
          const room = maxStepTokens - decoding;
          assert.ok(read > 0, "the prompt read nothing");
          if (tail > 0 && (read < min || tail < min)) {
            // Only when the decodes alone leave no room to read it without a sliver.
            assert.ok(
              room < length && room - min < min,
              `read ${read}, left ${tail} (min ${min}, room ${room})`,
            );
          }
        },
      ),
      { numRuns: 3000 },
    );
  });

  test("a cached prefix leaves at least the minimum to read; prompt chunks are never shorter unless last", async () => {
    const vocabulary = await bundledVocabulary();
    const engine = new ScriptedEngine(vocabulary, {
      slots: 1,
      contextSize: 2048,
      promptCache: true,
      minPromptChunk: 64,
      script: (fed) => [(fed.length % 50) + 300],
    });
    const runtime = await Runtime.create({ engine, prefillChunkSize: "auto" });
    const words = (n: number, from = 0) => Array.from({ length: n }, (_, i) => 400 + ((from + i) % 300));
    const base = words(500);
    await drain(runtime.generate({ prompt: base, maxTokens: 2, ignoreEos: true }));
    const before = engine.steps.length;
    // 20 new tokens after 500 cached: 64 are read (44 of them cached), not 20.
    const channel = runtime.generate({
      prompt: [...base, ...words(20, 1000)],
      maxTokens: 2,
      ignoreEos: true,
    });
    await drain(channel);
    const { usage } = await channel.result;
    assert.equal(usage.cachedTokens, usage.promptTokens - 64);
    const chunks = engine.steps
      .slice(before)
      .flatMap((s) => s.items.filter((i) => i.tokens.length > 1).map((i) => i.tokens.length));
    assert.deepEqual(chunks, [64]);
    // A prompt shorter than the minimum is read whole, with nothing cached to keep.
    const short = runtime.generate({ prompt: words(30, 2000), maxTokens: 2, ignoreEos: true });
    await drain(short);
    assert.equal((await short.result).usage.promptTokens, 30);
    // A long prompt read in chunks: every chunk but the last is at least 64 tokens, and so is the last.
    const at = engine.steps.length;
    await drain(
      runtime.generate({ prompt: words(700, 3000), maxTokens: 2, ignoreEos: true, cachePrompt: false }),
    );
    const reads = engine.steps
      .slice(at)
      .flatMap((s) => s.items.filter((i) => i.tokens.length > 1).map((i) => i.tokens.length));
    assert.equal(
      reads.reduce((a, b) => a + b, 0),
      700,
    );
    assert.ok(
      reads.every((n) => n >= 64),
      `chunks ${reads.join(",")}`,
    );
    await runtime.close();
  });

  test("a prompt that could reuse nothing past the minimum takes an empty slot, not a cache it would throw away", async () => {
    const vocabulary = await bundledVocabulary();
    const engine = new ScriptedEngine(vocabulary, {
      slots: 2,
      contextSize: 2048,
      promptCache: true,
      minPromptChunk: 64,
      script: () => [300],
    });
    const runtime = await Runtime.create({ engine, prefillChunkSize: "auto" });
    const words = (n: number, from = 0) => Array.from({ length: n }, (_, i) => 400 + ((from + i) % 300));
    const conversation = words(100);
    await drain(runtime.generate({ prompt: conversation, maxTokens: 1 }));
    // 55 tokens shared with the cached 100: over half of that cache, but the prompt is 60 tokens long, so the
    // minimum chunk leaves nothing of it to reuse. Placed on that slot it would empty it for nothing.
    const short = runtime.generate({ prompt: [...words(55), ...words(5, 1000)], maxTokens: 1 });
    await drain(short);
    assert.equal((await short.result).usage.cachedTokens, 0);
    assert.ok(
      [0, 1].some((slot) => engine.cachedTokens(slot).length === 100),
      "the conversation's cache was thrown away",
    );
    // The conversation's next turn still finds all of it.
    const next = runtime.generate({ prompt: [...conversation, ...words(100, 2000)], maxTokens: 1 });
    await drain(next);
    assert.equal((await next.result).usage.cachedTokens, 100);
    await runtime.close();
  });
});
