import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { BUNDLED_CHAT_MODEL_PATH } from "../../src/engine/modelPath.ts";
import { Runtime } from "../../src/runtime/Runtime.ts";
import { drain } from "../helpers/scripted.ts";

// Real engine, one thread: the prompt cache must never change what greedy decoding produces.
const SYSTEM =
  "And the LORD spake unto Moses, saying, Speak unto the children of Israel, and say unto them, ";
const PROMPTS = [
  `${SYSTEM}When ye be come into the land`,
  `${SYSTEM}Ye shall keep my sabbaths`,
  `${SYSTEM}When ye be come into the land which I give you`,
  "Genesis 1\n1 In the beginning",
  `${SYSTEM}Ye shall keep my sabbaths`,
];

describe("prompt cache on node-llama-cpp with the bundled model", () => {
  let cached: Runtime;
  let plain: Runtime;
  before(async () => {
    cached = await Runtime.create({ slots: 2, contextSize: 512, threads: 1 });
    plain = await Runtime.create({ slots: 2, contextSize: 512, threads: 1, promptCache: false });
  });
  after(async () => {
    await cached.close();
    await plain.close();
  });

  test("greedy outputs are identical with and without the cache; shared prefixes are reused", async () => {
    const systemTokens = cached.engine.tokenize(SYSTEM, { special: false }).length;
    const reused: number[] = [];
    for (const prompt of PROMPTS) {
      // Short answers: a slot is picked for its cache only when the shared prefix is half of what it holds.
      const a = cached.generate({ prompt, maxTokens: 8, temperature: 0 });
      const b = plain.generate({ prompt, maxTokens: 8, temperature: 0 });
      const [x, y] = [await drain(a), await drain(b)];
      assert.deepEqual(x.ids, y.ids, `differs with the cache: ${JSON.stringify(prompt.slice(-30))}`);
      const usage = (await a.result).usage;
      assert.ok(usage.cachedTokens < usage.promptTokens);
      assert.equal((await b.result).usage.cachedTokens, 0);
      reused.push(usage.cachedTokens);
    }
    // Prompts 2, 3 and 5 share at least the long beginning of an earlier one (BOS included).
    for (const i of [1, 2, 4]) assert.ok(reused[i]! >= systemTokens, `prompt ${i} reused ${reused}`);
    assert.ok(cached.stats.promptCacheHits >= 3);
  });

  test("after a cancel mid-decode, the same slot serves the same prompt exactly as a fresh one", async () => {
    const prompt = `${SYSTEM}Ye shall not steal`;
    const fresh = await drain(plain.generate({ prompt, maxTokens: 20, temperature: 0 }));
    const victim = cached.generate({ prompt, maxTokens: 200, temperature: 0, ignoreEos: true });
    let seen = 0;
    for await (const chunk of victim) if (++seen === 5 || chunk.finished) break;
    assert.equal((await victim.result).reason, "cancelled");
    const again = cached.generate({ prompt, maxTokens: 20, temperature: 0 });
    const out = await drain(again);
    assert.deepEqual(out.ids, fresh.ids);
    assert.equal((await again.result).usage.cachedTokens, (await again.result).usage.promptTokens - 1);
  });

  test("a prompt that extends a slot's prompt and its generated text reuses both", async () => {
    const prompt = "Psalms 23\n1 The LORD";
    const first = await cached.generate({ prompt, maxTokens: 12, temperature: 0 }).result;
    // The next turn: the first prompt, what was generated, and a new line.
    const turn = [
      ...promptIds(prompt),
      ...first.tokenIds,
      ...cached.engine.tokenize("\n", { special: false }),
    ];
    const next = await cached.generate({ prompt: turn, maxTokens: 12, temperature: 0 }).result;
    // Everything but the last generated token (sampled, never fed back) and the new line is in the cache.
    assert.equal(next.usage.cachedTokens, next.usage.promptTokens - 2);
    const reference = await plain.generate({ prompt: turn, maxTokens: 12, temperature: 0 }).result;
    assert.deepEqual(next.tokenIds, reference.tokenIds);
  });

  function promptIds(text: string): number[] {
    const bos = cached.engine.info.vocabulary.bos!;
    return [bos, ...cached.engine.tokenize(text, { special: false })];
  }
});

describe("prompt cache through the real chat template (the bundled chat model)", () => {
  test("each turn's rendered prompt extends the last; the next turn reuses the last prompt and its answer", async () => {
    const runtime = await Runtime.create({
      model: BUNDLED_CHAT_MODEL_PATH,
      slots: 1,
      contextSize: 1024,
      threads: 1,
    });
    try {
      const template = runtime.engine.chatTemplate();
      assert.ok(template, "the chat model's GGUF carries a template that runs");
      const turns: { role: "system" | "user" | "assistant"; content: string }[] = [
        { role: "system", content: "Thou art a helpful assistant." },
      ];
      let previous: number[] = [];
      for (const question of ["Who made the heaven?", "And the earth?", "What was on the first day?"]) {
        turns.push({ role: "user", content: question });
        const rendered = template.render(turns);
        assert.deepEqual(
          rendered.tokens.slice(0, previous.length),
          previous,
          "a turn's prompt extends the last",
        );
        const result = await runtime.generate({
          prompt: rendered.tokens,
          stopTokenIds: rendered.stopTokenIds,
          stop: rendered.stop,
          maxTokens: 24,
        }).result;
        if (previous.length > 0) {
          // At least the whole previous prompt comes from the cache.
          assert.ok(
            result.usage.cachedTokens >= previous.length,
            `${result.usage.cachedTokens} < ${previous.length}`,
          );
        }
        turns.push({ role: "assistant", content: result.text });
        previous = rendered.tokens;
      }
    } finally {
      await runtime.close();
    }
  });
});
