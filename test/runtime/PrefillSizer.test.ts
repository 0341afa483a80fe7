import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { PREFILL_STEPS, PrefillSizer } from "../../src/runtime/PrefillSizer.ts";

const bounds = { min: 8, max: 512, initial: 32 };

/** Feeds the sizer steps from a linear cost model, the way the runtime would. */
function train(sizer: PrefillSizer, baseMs: number, perTokenMs: number, steps = 20, prompt = 0): void {
  for (let i = 0; i < steps; i++) {
    sizer.observe(baseMs, 0);
    const chunk = sizer.chunk(true, prompt);
    sizer.observe(baseMs + perTokenMs * chunk, chunk);
  }
}

describe("PrefillSizer", () => {
  test("uses the initial chunk until it has measured a prompt step (8x it when nobody waits)", () => {
    const sizer = new PrefillSizer(bounds);
    assert.equal(sizer.chunk(true), 32);
    assert.equal(sizer.chunk(false), 256);
    sizer.observe(2, 0);
    assert.equal(sizer.chunk(true), 32);
  });

  test("beside decoding streams a prompt is read in about six steps, within [3 decode steps, 1 s]", () => {
    const tiny = new PrefillSizer(bounds);
    train(tiny, 1.3, 0.13); // the bundled model on one core
    // 448 tokens at 0.13 ms: a sixth of 58 ms is 9.7 ms a step, 64 tokens after the 1.3 ms decode.
    assert.ok(Math.abs(tiny.targetMs(448) - (0.13 * 448) / PREFILL_STEPS) < 0.01);
    assert.equal(tiny.chunk(true, 448), Math.floor((0.13 * 448) / PREFILL_STEPS / 0.13 - 1.3 / 0.13));
    // A short prompt: the floor of three decode steps (3.9 ms), not slivers.
    assert.ok(Math.abs(tiny.targetMs(20) - 3.9) < 1e-9);
    assert.ok([19, 20].includes(tiny.chunk(true, 20)), `chunk ${tiny.chunk(true, 20)}`);
    const edge = new PrefillSizer(bounds);
    train(edge, 35, 5); // a 0.5B-class model on two cores
    // 256 tokens at 5 ms: 213 ms a step, 35 of it the decode: 35 tokens, 8 steps with the remainder.
    assert.equal(edge.chunk(true, 256), Math.floor((5 * 256) / PREFILL_STEPS / 5 - 35 / 5));
    // 4,000 tokens would be 3.3 s a step: the 1 s cap.
    assert.equal(edge.targetMs(4000), 1000);
    assert.equal(edge.chunk(true, 4000), Math.floor((1000 - 35) / 5));
    // Only prompts in flight: the solo budget (500 ms by default), nobody but a cancel waits.
    assert.equal(edge.chunk(false, 256), Math.floor(500 / 5));
    assert.equal(tiny.chunk(false, 448), 512, "a small model reads a lone prompt in whole batches");
  });

  test("an explicit target is honoured", () => {
    const sizer = new PrefillSizer({ ...bounds, targetStepMs: 20 });
    train(sizer, 2, 0.5);
    assert.equal(sizer.chunk(true), 36);
  });

  test("property: a converged chunk keeps the modelled step within the target or at the bounds", () => {
    fc.assert(
      fc.property(
        fc.double({ min: 0.1, max: 200, noNaN: true }),
        fc.double({ min: 0.001, max: 50, noNaN: true }),
        fc.integer({ min: 1, max: 8192 }),
        (base, perToken, prompt) => {
          const sizer = new PrefillSizer(bounds);
          train(sizer, base, perToken, 40, prompt);
          const chunk = sizer.chunk(true, prompt);
          const target = sizer.targetMs(prompt);
          assert.ok(chunk >= bounds.min && chunk <= bounds.max, `chunk ${chunk} out of bounds`);
          assert.ok(target <= 1000 + 1e-9, `target ${target} over the 1 s cap`);
          assert.ok(target >= Math.min(1000, 3 * base) - 1e-9, `target ${target} under 3 decode steps`);
          const step = base + perToken * chunk;
          if (chunk > bounds.min) assert.ok(step <= target * 1.05, `step ${step} over target ${target}`);
          if (chunk < bounds.max) {
            assert.ok(
              base + perToken * (chunk + 1) > target * 0.95,
              `chunk ${chunk} leaves room under the target`,
            );
          }
          // Unless a bound or the cap decides, the prompt takes about PREFILL_STEPS steps.
          const share = (perToken * prompt) / PREFILL_STEPS;
          if (chunk > bounds.min && chunk < bounds.max && share > 3 * base && share < 1000 && prompt > 100) {
            const steps = Math.ceil(prompt / chunk);
            assert.ok(steps >= PREFILL_STEPS && steps <= 3 * PREFILL_STEPS, `${steps} steps for ${prompt}`);
          }
        },
      ),
      { numRuns: 500 },
    );
  });

  test("ignores nonsense timings and prompts too short to tell the per-token cost", () => {
    const sizer = new PrefillSizer(bounds);
    sizer.observe(0.1, 1);
    sizer.observe(3, 7);
    sizer.observe(Number.NaN, 10);
    sizer.observe(-1, 10);
    assert.equal(sizer.chunk(true), 32);
  });
});
