import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { DraftCost } from "../../src/runtime/DraftCost.ts";
import { evenChunk, planStep } from "../../src/runtime/planStep.ts";
import type { RequestState } from "../../src/runtime/RequestState.ts";

/**
 * Time-sized prompt chunks are a ceiling (`evenChunks`): a prompt is spread over the fewest steps the ceiling
 * allows, in chunks of equal size, so no step pays its fixed cost for a short tail and the longest step is as
 * short as it can be.
 */
describe("evenChunks", () => {
  /** Reads one prompt step by step beside `decoding` streams, the ceiling fixed; returns the chunk sizes. */
  function read(length: number, ceiling: number, decoding: number, evenChunks: boolean): number[] {
    const prompt = {
      slot: decoding,
      phase: "prefill",
      prefilled: 0,
      request: { promptTokens: Array.from({ length }, () => 7), sampler: {} },
    };
    const streams = Array.from({ length: decoding }, (_, slot) => ({
      slot,
      phase: "decode",
      lastToken: 5,
      request: { sampler: {} },
    }));
    const states = [...streams, prompt] as unknown as RequestState[];
    const chunks: number[] = [];
    while (prompt.prefilled < length) {
      const planned = planStep(states, {
        prefillChunk: ceiling,
        prefillBudget: ceiling,
        maxStepTokens: 4096,
        draftCost: new DraftCost(),
        minChunk: 1,
        evenChunks,
      });
      const read = planned.find((p) => p.state === states[decoding]!)!.item.tokens.length;
      chunks.push(read);
      prompt.prefilled += read;
    }
    return chunks;
  }

  test("property: the fewest chunks the ceiling allows, none above it, their sizes within one token", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 2000 }),
        fc.integer({ min: 1, max: 512 }),
        fc.integer({ min: 0, max: 3 }),
        (length, ceiling, decoding) => {
          const chunks = read(length, ceiling, decoding, true);
          assert.equal(chunks.length, Math.ceil(length / ceiling));
          assert.ok(Math.max(...chunks) <= ceiling);
          assert.ok(Math.max(...chunks) - Math.min(...chunks) <= 1, `uneven: ${chunks.join(", ")}`);
        },
      ),
      { numRuns: 2000 },
    );
  });

  test("325 tokens under a ceiling of 49: seven chunks of 46-47, not a 31-token tail; without it, exact chunks", () => {
    assert.deepEqual(read(325, 49, 1, true), [47, 47, 47, 46, 46, 46, 46]);
    assert.deepEqual(read(325, 49, 1, false), [49, 49, 49, 49, 49, 49, 31]);
    assert.equal(evenChunk(40, 49), 40);
    assert.equal(evenChunk(98, 49), 49);
    assert.equal(evenChunk(99, 49), 33);
  });
});
