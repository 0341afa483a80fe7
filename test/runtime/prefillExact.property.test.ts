import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import type { StreamChannel } from "../../src/channel/index.ts";
import { ScriptedEngine } from "../../src/engine/ScriptedEngine.ts";
import { Runtime } from "../../src/runtime/Runtime.ts";
import { bundledVocabulary } from "../helpers/scripted.ts";

const vocabulary = await bundledVocabulary();

/** Four words that depend on every token a slot holds and on their order: its length and three hashes. */
function digest(tokens: readonly number[]): number[] {
  let a = 0;
  let b = 7;
  let c = 13;
  for (const [i, t] of tokens.entries()) {
    a = (a * 31 + t) % 1_000_003;
    b = (b * 17 + t * (i + 1)) % 1_000_033;
    c = (c + t * t * (i + 3)) % 1_000_037;
  }
  return [tokens.length, a, b, c].map((n) => 400 + (n % 97));
}

/**
 * The scripted engine's script here answers with a digest of what its slot holds when it first samples
 * (prompt cache and the chunks read), so a request's output is its prompt's digest exactly when every prompt
 * token reached the slot once, in order: none read twice, none skipped, none left of another request's cache.
 * Driven over what the planner has to juggle: minimum chunks, small steps, several prompts read at once beside
 * decoding streams, shared prefixes (prompt cache on and off), drafts, and cancels mid-prefill.
 */
test("property: every prompt reaches its slot exactly once, in order, in steps within maxStepTokens", async () => {
  const word = fc.integer({ min: 400, max: 420 });
  const base = fc.array(word, { minLength: 1, maxLength: 300 });
  const request = fc.record({
    base: fc.nat(1),
    // Mostly the whole base, so that prompts share long prefixes.
    keep: fc.oneof(fc.constant(300), fc.constant(300), fc.nat(300)),
    suffix: fc.oneof(fc.array(word, { maxLength: 8 }), fc.array(word, { maxLength: 90 })),
    cachePrompt: fc.oneof(fc.constant(true), fc.constant(true), fc.constant(false)),
    // Cancelled after this many engine steps from its submission; none: runs to the end.
    cancelAfter: fc.option(fc.integer({ min: 0, max: 12 }), { nil: undefined, freq: 3 }),
    // Submitted once every earlier request has ended, so that it finds their prefixes cached.
    waits: fc.oneof(fc.constant(true), fc.constant(true), fc.constant(false)),
    // Few: a slot caches prompt and output, and is chosen for a prompt that covers half of that.
    maxTokens: fc.integer({ min: 1, max: 4 }),
  });
  await fc.assert(
    fc.asyncProperty(
      fc.array(base, { minLength: 2, maxLength: 2 }),
      fc.array(request, { minLength: 1, maxLength: 7 }),
      fc.integer({ min: 1, max: 4 }),
      fc.oneof(fc.constant(1), fc.integer({ min: 1, max: 80 })),
      fc.integer({ min: 2, max: 200 }),
      fc.option(fc.integer({ min: 1, max: 100 }), { nil: undefined }),
      fc.oneof(fc.constant(true), fc.constant(true), fc.constant(false)),
      fc.boolean(),
      async (bases, requests, slots, minPromptChunk, maxStepTokens, fixedChunk, promptCache, lookup) => {
        const engine = new ScriptedEngine(vocabulary, {
          slots,
          contextSize: 1024,
          maxStepTokens,
          minPromptChunk,
          promptCache,
          script: digest,
        });
        const runtime = await Runtime.create({
          engine,
          prefillChunkSize: fixedChunk ?? "auto",
          maxQueue: 64,
          // Drafts take step room beside prompts, and a drafting request's slot is trimmed on release.
          drafter: lookup ? "prompt-lookup" : "off",
        });
        const stepCap = Math.max(slots + 1, maxStepTokens);
        try {
          const runs: { prompt: number[]; channel: StreamChannel; cancelAfter?: number; steps: number }[] =
            [];
          // Cancels counted in engine steps, so they land mid-prefill as often as mid-decode.
          const unsubscribe = runtime.observe((event) => {
            if (event.type !== "step") return;
            for (const run of runs) {
              if (run.cancelAfter === undefined || run.channel.finished) continue;
              if (run.steps++ >= run.cancelAfter) run.channel.cancel();
            }
          });
          for (const r of requests) {
            if (r.waits) await Promise.all(runs.map((run) => run.channel.result));
            const prompt = [...bases[r.base]!.slice(0, r.keep), ...r.suffix];
            if (prompt.length === 0) prompt.push(401);
            const channel = runtime.generate({
              prompt,
              maxTokens: r.maxTokens,
              ignoreEos: true,
              cachePrompt: r.cachePrompt,
            });
            runs.push({ prompt, channel, cancelAfter: r.cancelAfter, steps: 0 });
          }
          const results = await Promise.all(runs.map((r) => r.channel.result));
          unsubscribe();
          for (const [i, result] of results.entries()) {
            const { prompt } = runs[i]!;
            if (result.reason === "cancelled") {
              // Whatever came out before the cancel is still the prompt's beginning.
              assert.deepEqual(
                result.tokenIds,
                digest(prompt).slice(0, result.tokenIds.length),
                `request ${i}`,
              );
              continue;
            }
            assert.equal(result.reason, "length", `request ${i}: ${result.reason}`);
            assert.deepEqual(
              result.tokenIds,
              digest(prompt).slice(0, result.tokenIds.length),
              `request ${i} read its prompt wrong`,
            );
          }
          for (const step of engine.steps) {
            const tokens = step.items.reduce((n, i) => n + i.tokens.length + (i.draft?.length ?? 0), 0);
            assert.ok(tokens <= stepCap, `a step of ${tokens} tokens, over ${stepCap}`);
          }
        } finally {
          await runtime.close();
        }
      },
    ),
    { numRuns: 300 },
  );
});

test("prompts are read in admission order, not slot order: a later prompt on a lower slot does not go first", async () => {
  const engine = new ScriptedEngine(vocabulary, {
    slots: 2,
    contextSize: 4096,
    maxStepTokens: 40,
    script: () => [500, 501, 502],
  });
  const runtime = await Runtime.create({ engine });
  try {
    const words = (n: number, from: number) => Array.from({ length: n }, (_, i) => 400 + ((from + i) % 200));
    // A short stream holds slot 0 while the older prompt is admitted to slot 1; the newer one gets slot 0.
    const stream = runtime.generate({ prompt: words(3, 0), maxTokens: 3, ignoreEos: true });
    const older = runtime.generate({ prompt: words(2000, 50), maxTokens: 1 });
    await stream.result;
    const newer = runtime.generate({ prompt: words(2000, 90), maxTokens: 1 });
    const order: string[] = [];
    await Promise.all([
      older.result.then(() => order.push("older")),
      newer.result.then(() => order.push("newer")),
    ]);
    assert.deepEqual(order, ["older", "newer"]);
  } finally {
    await runtime.close();
  }
});
