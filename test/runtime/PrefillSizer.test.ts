import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { PrefillSizer } from "../../src/runtime/PrefillSizer.ts";

const bounds = { min: 8, max: 512, initial: 32 };

/** Feeds the sizer steps from a linear cost model, the way the runtime would. */
function train(sizer: PrefillSizer, baseMs: number, perTokenMs: number, steps = 20): void {
  for (let i = 0; i < steps; i++) {
    sizer.observe(baseMs, 0);
    const chunk = sizer.chunk(true);
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

  test("a fast model gets large chunks, a slow one small chunks", () => {
    const tiny = new PrefillSizer(bounds);
    train(tiny, 1.3, 0.13); // the bundled model on one core
    assert.equal(tiny.targetMs, 50);
    assert.ok(tiny.chunk(true) >= 350 && tiny.chunk(true) <= 380, `tiny chunk ${tiny.chunk(true)}`);
    const edge = new PrefillSizer(bounds);
    train(edge, 35, 5); // a 0.5B-class model on two cores
    assert.ok(Math.abs(edge.targetMs - 105) < 1, `edge target ${edge.targetMs}`);
    assert.equal(edge.chunk(true), 14);
    // Only prompts in flight: the solo budget (500 ms by default), nobody but a cancel waits.
    assert.equal(edge.chunk(false), Math.floor(500 / 5));
    assert.equal(tiny.chunk(false), 512, "a small model reads a lone prompt in whole batches");
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
        (base, perToken) => {
          const sizer = new PrefillSizer(bounds);
          train(sizer, base, perToken, 40);
          const chunk = sizer.chunk(true);
          assert.ok(chunk >= bounds.min && chunk <= bounds.max, `chunk ${chunk} out of bounds`);
          const step = base + perToken * chunk;
          if (chunk > bounds.min)
            assert.ok(step <= sizer.targetMs * 1.05, `step ${step} over target ${sizer.targetMs}`);
          if (chunk < bounds.max) {
            assert.ok(
              base + perToken * (chunk + 1) > sizer.targetMs * 0.95,
              `chunk ${chunk} leaves room under the target`,
            );
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
