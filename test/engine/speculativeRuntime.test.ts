import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Runtime } from "../../src/runtime/Runtime.ts";
import type { GenerationRequest } from "../../src/types.ts";
import { assertSpeculativeMatchesPlain, assertSameResult as same } from "../helpers/results.ts";

// Real engine: the bundled model, one thread, prompt lookup on. Every request runs twice, speculative and
// not, concurrently with others; greedy output must be the same token for token, stops included.
const PASSAGE =
  "1 In the beginning God created the heaven and the earth.\n2 And the earth was without form, and void; " +
  "and darkness was upon the face of the deep. And the Spirit of God moved upon the face of the waters.\n" +
  "3 And God said, Let there be light: and there was light.\n";
const PROMPTS = [
  "Genesis 1\n1 In the beginning",
  `${PASSAGE}\n${PASSAGE.slice(0, 60)}`,
  "And it came to pass",
  `${PASSAGE}Again: ${PASSAGE.slice(0, 25)}`,
  "The LORD is my shepherd",
  `${PASSAGE.repeat(2)}1 In`,
  "Psalm 119\n1 Blessed",
  "Matthew 5\n3 Blessed are the poor in spirit: for theirs is the kingdom of heaven.\n4 Blessed",
];

let runtime: Runtime;

before(async () => {
  runtime = await Runtime.create({ slots: 4, threads: 1, contextSize: 1024, drafter: "prompt-lookup" });
});
after(() => runtime.close());

test("greedy: speculative output is plain output token for token, with stops, four at a time", async () => {
  const plain = await Promise.all(
    PROMPTS.map((prompt) => runtime.generate({ prompt, maxTokens: 96, speculative: false }).result),
  );
  const drafted = runtime.stats.draftTokens;
  const requests: { request: GenerationRequest; what: string }[] = [];
  for (const [i, prompt] of PROMPTS.entries()) {
    const out = plain[i]!;
    requests.push({ request: { prompt, maxTokens: 96 }, what: `#${i}` });
    // Stops that land inside runs of accepted tokens: a word from the middle of the output, the token id at
    // two thirds, and a maxTokens that cuts a run.
    const words = out.text.split(/\s+/).filter((w) => w.length > 2);
    const word = words[Math.floor(words.length / 2)];
    if (word !== undefined)
      requests.push({ request: { prompt, maxTokens: 96, stop: [word] }, what: `#${i} stop ${word}` });
    const token = out.tokenIds[Math.floor((out.tokenIds.length * 2) / 3)]!;
    requests.push({
      request: { prompt, maxTokens: 96, stopTokenIds: [token] },
      what: `#${i} stop token ${token}`,
    });
    requests.push({ request: { prompt, maxTokens: 37, streamInterval: 3 }, what: `#${i} maxTokens 37` });
  }
  await assertSpeculativeMatchesPlain(runtime, requests);
  // Prompt lookup found drafts on these prompts, and most were right.
  const sent = runtime.stats.draftTokens - drafted;
  assert.ok(sent > 50, `${sent} draft tokens`);
  assert.ok(runtime.stats.draftAcceptanceRate > 0.3, String(runtime.stats.draftAcceptanceRate));
});

test("after a speculative request the slot's cache serves the next one: same output, prompt reused", async () => {
  const prompt = PROMPTS[1]!;
  const first = await runtime.generate({ prompt, maxTokens: 80, stop: ["light"] }).result;
  const again = await runtime.generate({ prompt, maxTokens: 80, stop: ["light"] }).result;
  same(again, first, "again");
  assert.ok(again.usage.cachedTokens > 0);
  const longer = await runtime.generate({ prompt: prompt + first.text, maxTokens: 40 }).result;
  const fresh = await runtime.generate({ prompt: prompt + first.text, maxTokens: 40, cachePrompt: false })
    .result;
  same(longer, fresh, "continued");
});

test("a cancel during speculative decoding frees the slot within the step, nothing computed after", async () => {
  const channel = runtime.generate({ prompt: PROMPTS[5]!, maxTokens: 200, ignoreEos: true });
  const record = runtime.endRecord(channel.id)!;
  let chunks = 0;
  for await (const _chunk of channel) if (++chunks === 3) channel.cancel();
  const result = await channel.result;
  assert.equal(result.reason, "cancelled");
  const { cancel } = await record;
  assert.ok(cancel !== undefined);
  assert.equal(cancel.tokensAfterCancel, 0);
  assert.ok(cancel.stepsToFree <= 1);
  assert.equal(runtime.stats.tokensAfterCancel, 0);
});
