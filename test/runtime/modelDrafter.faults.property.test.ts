import assert from "node:assert/strict";
import { test } from "node:test";
import fc from "fast-check";
import { ScriptedEngine } from "../../src/engine/ScriptedEngine.ts";
import { ModelDrafter } from "../../src/runtime/ModelDrafter.ts";
import { Runtime } from "../../src/runtime/Runtime.ts";
import type { GenerationRequest } from "../../src/types.ts";
import { bundledVocabulary } from "../helpers/scripted.ts";

const vocabulary = await bundledVocabulary();
const probe = new ScriptedEngine(vocabulary);
const LETTERS = probe.encode("abcdefghij");

/** The next letter after the last two, by a fixed rule; the draft model breaks it on `wrong` pairs. */
function continuation(context: readonly number[], count: number, wrong?: ReadonlySet<number>): number[] {
  const at = (t: number | undefined) => Math.max(0, t === undefined ? -1 : LETTERS.indexOf(t));
  const out: number[] = [];
  let prev = context.at(-2);
  let last = context.at(-1);
  for (let i = 0; i < count; i++) {
    const pair = 10 * at(prev) + at(last);
    const right = (5 * at(last) + at(prev) + 1) % 10;
    const next = LETTERS[wrong?.has(pair) ? (right + 1) % 10 : right]!;
    out.push(next);
    prev = last;
    last = next;
  }
  return out;
}

/**
 * Whatever the draft engine does (steps and items failing at random, a batch of a few tokens so that prompts
 * reach it in chunks, a context barely larger than the prompts, fewer slots than requests) and whenever
 * requests are cancelled (while drafting or prefilling too), every request that is not cancelled gets the
 * plain runtime's output token for token, and every draft slot comes back: a lone request afterwards finds one.
 */
test("property: draft-engine faults, chunked catch-up, a full draft context and cancels never change output or leak a draft slot", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(
        fc.record({
          text: fc.stringMatching(/^[a-j]{1,40}$/),
          maxTokens: fc.integer({ min: 1, max: 30 }),
          // Cancelled after this many target steps from its submission; none: runs to the end.
          cancelAfter: fc.option(fc.integer({ min: 0, max: 10 }), { nil: undefined, freq: 2 }),
        }),
        { minLength: 1, maxLength: 6 },
      ),
      fc.array(
        fc.record({ step: fc.integer({ min: 1, max: 12 }), slot: fc.option(fc.nat(2), { nil: undefined }) }),
        { maxLength: 4 },
      ),
      fc.uniqueArray(fc.integer({ min: 0, max: 99 }), { maxLength: 30 }),
      fc.integer({ min: 1, max: 3 }),
      fc.integer({ min: 4, max: 64 }),
      fc.integer({ min: 48, max: 96 }),
      async (specs, faults, wrong, draftSlots, draftBatch, draftContext) => {
        const script = (context: readonly number[]) => continuation(context, 400);
        const plain = await Runtime.create({ engine: new ScriptedEngine(vocabulary, { script, slots: 3 }) });
        const drafts = new ScriptedEngine(vocabulary, {
          script: (context) => continuation(context, 400, new Set(wrong)),
          slots: draftSlots,
          maxStepTokens: draftBatch,
          contextSize: draftContext,
          faults,
        });
        const drafter = new ModelDrafter(drafts);
        const target = new ScriptedEngine(vocabulary, { script, slots: 3, contextSize: 128 });
        const runtime = await Runtime.create({ engine: target, drafter });
        try {
          const requests: GenerationRequest[] = specs.map((s) => ({
            prompt: s.text,
            maxTokens: s.maxTokens,
          }));
          const refs = await Promise.all(requests.map((r) => plain.generate(r).result));
          const channels = requests.map((r) => runtime.generate(r));
          const counted = specs.map(() => 0);
          const unsubscribe = runtime.observe((event) => {
            if (event.type !== "step") return;
            for (const [i, spec] of specs.entries()) {
              if (spec.cancelAfter !== undefined && counted[i]!++ >= spec.cancelAfter) channels[i]!.cancel();
            }
          });
          const outs = await Promise.all(channels.map((c) => c.result));
          unsubscribe();
          for (const [i, out] of outs.entries()) {
            if (out.reason === "cancelled") {
              assert.deepEqual(out.tokenIds, refs[i]!.tokenIds.slice(0, out.tokenIds.length), `#${i}`);
              continue;
            }
            assert.deepEqual(out.tokenIds, refs[i]!.tokenIds, `#${i}`);
            assert.equal(out.reason, refs[i]!.reason, `#${i}`);
          }
          // Every draft slot is back in the pool: a lone request is never told none is free.
          const noSlot = drafter.stats.noSlot;
          const last: GenerationRequest = { prompt: "abc", maxTokens: 12 };
          const [lastRef, lastOut] = await Promise.all([
            plain.generate(last).result,
            runtime.generate(last).result,
          ]);
          assert.deepEqual(lastOut.tokenIds, lastRef.tokenIds);
          assert.equal(drafter.stats.noSlot, noSlot, "a draft slot was never given back");
        } finally {
          await Promise.all([plain.close(), runtime.close()]);
        }
      },
    ),
    { numRuns: 120 },
  );
});

test("a request whose tokens fill the draft context gives its draft slot back for one that can draft", async () => {
  const script = (context: readonly number[]) => continuation(context, 400);
  // One draft slot, a draft context of 40 tokens: a 60-token prompt can never draft.
  const drafts = new ScriptedEngine(vocabulary, { script, slots: 1, contextSize: 40 });
  const drafter = new ModelDrafter(drafts);
  const target = new ScriptedEngine(vocabulary, { script, slots: 2, contextSize: 512 });
  const runtime = await Runtime.create({ engine: target, drafter });
  try {
    const long = runtime.generate({ prompt: "abcdefghij".repeat(6), maxTokens: 200 });
    const reader = long[Symbol.asyncIterator]();
    await reader.next();
    await reader.next();
    const short = runtime.generate({ prompt: "abc", maxTokens: 20 });
    await short.result;
    assert.ok(!long.finished, "the long request must still hold on while the short one runs");
    assert.ok(drafter.stats.drafted > 0, `the short request never drafted: ${JSON.stringify(drafter.stats)}`);
    assert.equal(drafter.stats.failures, 0);
    long.cancel();
  } finally {
    await runtime.close();
  }
});
