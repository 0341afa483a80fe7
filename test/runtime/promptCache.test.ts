import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { ScriptedEngine, type ScriptedFault } from "../../src/engine/ScriptedEngine.ts";
import { commonPrefix, pickSlot, type SlotCandidate } from "../../src/runtime/pickSlot.ts";
import { Runtime } from "../../src/runtime/Runtime.ts";
import { bundledVocabulary, drain } from "../helpers/scripted.ts";

/**
 * What a scripted request generates is a function of every token in the slot's cache when it first samples,
 * so a cache that held anything but exactly the prompt (a stale tail, a missed trim, a half-done step) shows
 * up as different output.
 */
function checksumScript(letters: number[]) {
  return (fed: readonly number[]): number[] => {
    let h = 2166136261;
    for (const id of fed) h = Math.imul(h ^ id, 16777619) >>> 0;
    return Array.from({ length: 12 }, (_, i) => letters[(h >>> (i % 24)) % letters.length]!);
  };
}

async function engineWith(options: {
  slots?: number;
  promptCache?: boolean;
  faults?: ScriptedFault[];
}): Promise<ScriptedEngine> {
  const vocabulary = await bundledVocabulary();
  const probe = new ScriptedEngine(vocabulary);
  const letters = [..."abcdefghijklmnop"].map((c) => probe.encode(c)[0]!);
  return new ScriptedEngine(vocabulary, {
    slots: options.slots ?? 2,
    promptCache: options.promptCache ?? true,
    script: checksumScript(letters),
    ...(options.faults ? { faults: options.faults } : {}),
  });
}

/** Prompt tokens the engine was fed for the request that sampled first in `from..` steps on `slot`. */
function fedSince(engine: ScriptedEngine, from: number, slot: number): number {
  let fed = 0;
  for (const step of engine.steps.slice(from)) {
    for (const item of step.items) if (item.slot === slot) fed += item.tokens.length;
  }
  return fed;
}

describe("prompt cache: a slot keeps its tokens; the next request reads only what differs", () => {
  test("a shared prefix is reused: only the suffix is read, cached_tokens reports it, output unchanged", async () => {
    const engine = await engineWith({ slots: 1 });
    const runtime = await Runtime.create({ engine });
    const system = "Thou shalt answer in the words of the King James Bible. ".repeat(3);
    const first = await drain(runtime.generate({ prompt: `${system}Who made the heaven?`, maxTokens: 4 }));
    const before = engine.steps.length;
    const channel = runtime.generate({ prompt: `${system}Who made the earth?`, maxTokens: 4 });
    const second = await drain(channel);
    const usage = (await channel.result).usage;
    const prompt2 = engine.tokenize(`${system}Who made the earth?`).length + 1;
    const shared = commonPrefix(
      [0, ...engine.tokenize(`${system}Who made the heaven?`)],
      [0, ...engine.tokenize(`${system}Who made the earth?`)],
    );
    assert.equal(usage.cachedTokens, shared);
    assert.equal(usage.promptTokens, prompt2);
    // Prompt suffix, then one fed-back token per generated token after the first.
    assert.equal(fedSince(engine, before, 0), prompt2 - shared + (second.ids.length - 1));
    await runtime.close();

    const fresh = await Runtime.create({ engine: await engineWith({ slots: 1, promptCache: false }) });
    const a = await drain(fresh.generate({ prompt: `${system}Who made the heaven?`, maxTokens: 4 }));
    const b = await drain(fresh.generate({ prompt: `${system}Who made the earth?`, maxTokens: 4 }));
    assert.deepEqual([a.ids, b.ids], [first.ids, second.ids]);
    assert.equal((await fresh.generate({ prompt: "x", maxTokens: 1 }).result).usage.cachedTokens, 0);
    await fresh.close();
  });

  test("the same prompt again reuses all but its last token, which is read to sample", async () => {
    const engine = await engineWith({ slots: 1 });
    const runtime = await Runtime.create({ engine });
    const prompt = "And God said, Let there be light";
    const a = await drain(runtime.generate({ prompt, maxTokens: 3 }));
    const before = engine.steps.length;
    const channel = runtime.generate({ prompt, maxTokens: 3 });
    const b = await drain(channel);
    const { usage } = await channel.result;
    assert.equal(usage.cachedTokens, usage.promptTokens - 1);
    assert.deepEqual(b.ids, a.ids);
    const firstItem = engine.steps[before]!.items[0]!;
    assert.equal(firstItem.tokens.length, 1);
    assert.ok(firstItem.sample, "the one re-read prompt token samples");
    await runtime.close();
  });

  test("opt out per request and per runtime: the whole prompt is read on an emptied slot", async () => {
    for (const where of ["request", "runtime"] as const) {
      const engine = await engineWith({ slots: 1 });
      const runtime = await Runtime.create({ engine, promptCache: where !== "runtime" });
      const prompt = "In the beginning God created";
      await drain(runtime.generate({ prompt, maxTokens: 2 }));
      const before = engine.steps.length;
      const channel = runtime.generate({ prompt, maxTokens: 2, cachePrompt: where !== "request" });
      await drain(channel);
      const { usage } = await channel.result;
      assert.equal(usage.cachedTokens, 0, where);
      assert.equal(fedSince(engine, before, 0), usage.promptTokens + 1, where);
      await runtime.close();
    }
  });

  test("a request goes to the slot that holds its prefix, not the first free one", async () => {
    const engine = await engineWith({ slots: 3 });
    const runtime = await Runtime.create({ engine });
    const prompts = ["Genesis 1 In the beginning", "Exodus 20 And God spake", "Psalms 23 The LORD is"];
    // Three at once: they land on slots 0, 1, 2.
    await Promise.all(prompts.map((prompt) => drain(runtime.generate({ prompt, maxTokens: 2 }))));
    const slotOf = new Map<string, number>();
    for (const [i, prompt] of prompts.entries()) {
      const tokens = [engine.info.vocabulary.bos!, ...engine.tokenize(prompt)];
      const slot = [0, 1, 2].find((s) => commonPrefix(engine.cachedTokens(s), tokens) === tokens.length);
      assert.notEqual(slot, undefined, `prompt ${i} cached somewhere`);
      slotOf.set(prompt, slot!);
    }
    const before = engine.steps.length;
    const channel = runtime.generate({ prompt: `${prompts[2]} my shepherd`, maxTokens: 2 });
    await drain(channel);
    assert.equal(engine.steps[before]!.items[0]!.slot, slotOf.get(prompts[2]!));
    assert.ok((await channel.result).usage.cachedTokens >= prompts[2]!.length);
    assert.equal(runtime.stats.promptCacheHits, 1);
    assert.equal(runtime.stats.promptCacheLookups, 4);
    await runtime.close();
  });

  test("after any mix of requests, cancels and faults, every output equals the uncached run's", async () => {
    const prefixes = ["Genesis 1 ", "Genesis 1 In the ", "Exodus ", ""];
    const request = fc.record({
      prefix: fc.constantFrom(...prefixes),
      suffix: fc.string({ unit: fc.constantFrom(..."abcdefgh "), minLength: 1, maxLength: 12 }),
      maxTokens: fc.integer({ min: 1, max: 6 }),
      cancelAfter: fc.option(fc.integer({ min: 0, max: 3 }), { nil: undefined }),
      cachePrompt: fc.boolean(),
    });
    await fc.assert(
      fc.asyncProperty(
        fc.array(request, { minLength: 2, maxLength: 10 }),
        fc.integer({ min: 1, max: 3 }),
        fc.option(fc.integer({ min: 2, max: 30 }), { nil: undefined }),
        async (requests, slots, faultStep) => {
          const run = async (promptCache: boolean) => {
            // A fault on slot 0 at a fixed step: the step it hits differs between the runs, so only the
            // request it hits is compared by its reason, and the requests after it by their output.
            const faults = faultStep === undefined ? [] : [{ step: faultStep, slot: 0 }];
            const engine = await engineWith({ slots, promptCache, faults });
            const runtime = await Runtime.create({ engine });
            const outputs: { ids: number[]; reason: string; cached: number; prompt: number }[] = [];
            // One at a time: which slot a request gets must not change what it generates.
            for (const r of requests) {
              const channel = runtime.generate({
                prompt: `${r.prefix}${r.suffix}`,
                maxTokens: r.maxTokens,
                cachePrompt: r.cachePrompt,
              });
              if (r.cancelAfter !== undefined) {
                for (let i = 0; i < r.cancelAfter; i++) if ((await channel.waitPop()) === undefined) break;
                channel.cancel();
              }
              const result = await channel.result;
              outputs.push({
                ids: result.tokenIds,
                reason: result.reason,
                cached: result.usage.cachedTokens,
                prompt: result.usage.promptTokens,
              });
            }
            await runtime.close();
            return outputs;
          };
          const cached = await run(true);
          const plain = await run(false);
          for (let i = 0; i < requests.length; i++) {
            const [c, p] = [cached[i]!, plain[i]!];
            assert.ok(c.cached < c.prompt, "the last prompt token is always read");
            if (!requests[i]!.cachePrompt) assert.equal(c.cached, 0);
            if (c.reason === "error" || p.reason === "error" || requests[i]!.cancelAfter !== undefined)
              continue;
            assert.deepEqual(c.ids, p.ids, `request ${i} differs with the cache`);
          }
        },
      ),
      { numRuns: 150 },
    );
  });
});

describe("pickSlot: longest shared prefix, a real share of the slot's cache, else empty or least recent", () => {
  const c = (slot: number, cached: number[], lastUsed: number): SlotCandidate => ({ slot, cached, lastUsed });
  test("examples", () => {
    const prompt = [1, 2, 3, 4, 5];
    const hit = true;
    const miss = false;
    assert.deepEqual(pickSlot([c(0, [9], 1), c(1, [1, 2, 3, 7], 5)], prompt), { slot: 1, reuse: 3, hit });
    // A BOS-only match against a long cache is a miss: the empty slot is taken instead.
    assert.deepEqual(pickSlot([c(0, [1, 8, 8, 8, 8, 8], 1), c(1, [], 0)], prompt), {
      slot: 1,
      reuse: 0,
      hit: miss,
    });
    // With no empty slot, the miss takes the least recently used and reuses its BOS: reuse, not a hit.
    assert.deepEqual(pickSlot([c(0, [1, 8, 8, 8, 8, 8], 1), c(1, [1, 9, 9, 9, 9], 3)], prompt), {
      slot: 0,
      reuse: 1,
      hit: miss,
    });
    // Misses go to the least recently used; a full match still leaves the last token to read.
    assert.deepEqual(pickSlot([c(0, [7, 7], 4), c(1, [8, 8], 2)], prompt), { slot: 1, reuse: 0, hit: miss });
    assert.deepEqual(pickSlot([c(0, [1, 2, 3, 4, 5, 6], 1)], prompt), { slot: 0, reuse: 4, hit });
    assert.deepEqual(pickSlot([c(0, [1, 2, 3], 9), c(1, [], 0)], prompt, false), {
      slot: 1,
      reuse: 0,
      hit: miss,
    });
  });

  test("reuse is a common prefix of the chosen cache, leaving the minimum to read; never worse than a miss", () => {
    const tokens = fc.array(fc.integer({ min: 0, max: 3 }), { maxLength: 8 });
    fc.assert(
      fc.property(
        fc.array(fc.tuple(tokens, fc.nat(20)), { minLength: 1, maxLength: 5 }),
        fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 1, maxLength: 8 }),
        fc.integer({ min: 1, max: 6 }),
        (slots, prompt, minRead) => {
          const free = slots.map(([cached, lastUsed], slot) => c(slot, cached, lastUsed));
          const { slot, reuse, hit } = pickSlot(free, prompt, true, minRead);
          const chosen = free.find((f) => f.slot === slot)!;
          // The last minRead tokens (the engine's minimum chunk; at least the last one) are always read.
          const reusable = prompt.length - minRead;
          assert.ok(reuse <= Math.max(0, reusable) && reuse >= 0);
          assert.ok(reuse <= commonPrefix(chosen.cached, prompt));
          // A match counts when what of it can be reused covers at least half of what the slot holds; the best
          // such one wins.
          const usable = (f: SlotCandidate) => {
            const m = Math.min(commonPrefix(f.cached, prompt), reusable);
            return m > 0 && m >= 0.5 * f.cached.length ? m : 0;
          };
          const best = Math.max(...free.map(usable));
          assert.equal(hit, best > 0, "a hit exactly when a slot was chosen for its cache");
          assert.equal(
            reuse,
            best === 0 ? Math.max(0, Math.min(commonPrefix(chosen.cached, prompt), reusable)) : best,
          );
          if (best > 0) return;
          // Otherwise by age, an empty slot first.
          const oldest = Math.min(...free.map((f) => (f.cached.length === 0 ? -1 : f.lastUsed)));
          assert.equal(chosen.cached.length === 0 ? -1 : chosen.lastUsed, oldest);
        },
      ),
      { numRuns: 2000 },
    );
  });
});
