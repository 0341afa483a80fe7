import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { createEngine } from "../../src/engine/createEngine.ts";
import { BUNDLED_CHAT_MODEL_PATH, BUNDLED_MODEL_PATH } from "../../src/engine/modelPath.ts";
import { ModelDrafter } from "../../src/runtime/ModelDrafter.ts";
import { Runtime } from "../../src/runtime/Runtime.ts";
import type { GenerationRequest } from "../../src/types.ts";
import { assertSpeculativeMatchesPlain, assertSameResult as same } from "../helpers/results.ts";

// Real engines: the bundled model as the target and its chat fine-tune (the same vocabulary) as the draft
// model, one thread each. Every request runs twice, drafted and not, concurrently with others; greedy
// output must be the same token for token, stops included.
const PROMPTS = [
  "Genesis 1\n1 In the beginning",
  "And it came to pass",
  "The LORD is my shepherd",
  "Psalm 119\n1 Blessed",
  "Matthew 5\n3 Blessed are the poor in spirit: for theirs is the kingdom of heaven.\n4 Blessed",
];

let runtime: Runtime;

before(async () => {
  runtime = await Runtime.create({
    slots: 3,
    threads: 1,
    contextSize: 512,
    draftModel: BUNDLED_CHAT_MODEL_PATH,
  });
});
after(() => runtime.close());

test("greedy: output with a draft model is plain output token for token, with stops, three at a time", async () => {
  const plain = await Promise.all(
    PROMPTS.map((prompt) => runtime.generate({ prompt, maxTokens: 64, speculative: false }).result),
  );
  const drafted = runtime.stats.draftTokens;
  const accepted = runtime.stats.draftTokensAccepted;
  const requests: { request: GenerationRequest; what: string }[] = [];
  for (const [i, prompt] of PROMPTS.entries()) {
    const out = plain[i]!;
    requests.push({ request: { prompt, maxTokens: 64 }, what: `#${i}` });
    // A stop string from the middle of the output: it may land inside a run of accepted draft tokens.
    const words = out.text.split(/\s+/).filter((w) => w.length > 2);
    const word = words[Math.floor(words.length / 2)];
    if (word !== undefined) {
      requests.push({ request: { prompt, maxTokens: 64, stop: [word] }, what: `#${i} stop ${word}` });
    }
    requests.push({ request: { prompt, maxTokens: 29, streamInterval: 3 }, what: `#${i} maxTokens 29` });
  }
  await assertSpeculativeMatchesPlain(runtime, requests);
  // The fine-tune agrees with its base model often enough that drafts were sent and accepted.
  assert.ok(runtime.stats.draftTokens - drafted > 0, "drafted");
  assert.ok(runtime.stats.draftTokensAccepted - accepted > 0, "accepted");
});

test("a cancel while drafting frees the slot within the step, nothing computed after", async () => {
  const channel = runtime.generate({ prompt: PROMPTS[0]!, maxTokens: 200, ignoreEos: true });
  const record = runtime.endRecord(channel.id)!;
  let chunks = 0;
  for await (const _chunk of channel) if (++chunks === 3) channel.cancel();
  const result = await channel.result;
  assert.equal(result.reason, "cancelled");
  const { cancel } = await record;
  assert.ok(cancel !== undefined);
  assert.equal(cancel.tokensAfterCancel, 0);
  assert.ok(cancel.stepsToFree <= 1, String(cancel.stepsToFree));
  // The slot serves the next request at once, drafts and all.
  const next = await runtime.generate({ prompt: PROMPTS[1]!, maxTokens: 16 }).result;
  const ref = await runtime.generate({ prompt: PROMPTS[1]!, maxTokens: 16, speculative: false }).result;
  same(next, ref, "after the cancel");
});

test("a ModelDrafter over a draft engine of one's own: the same output, long prompts read in chunks", async () => {
  // A small batch: a prompt longer than it reaches the draft slot over several calls.
  const draftEngine = await createEngine({
    model: BUNDLED_CHAT_MODEL_PATH,
    slots: 2,
    threads: 1,
    contextSize: 512,
    batchSize: 64,
  });
  const drafter = new ModelDrafter(draftEngine);
  const own = await Runtime.create({
    model: BUNDLED_MODEL_PATH,
    slots: 2,
    threads: 1,
    contextSize: 512,
    drafter,
  });
  try {
    const prompts = [PROMPTS[0]!, PROMPTS[4]!.repeat(8)];
    const outs = await Promise.all(prompts.map((prompt) => own.generate({ prompt, maxTokens: 40 }).result));
    const refs = await Promise.all(
      prompts.map((prompt) => own.generate({ prompt, maxTokens: 40, speculative: false }).result),
    );
    for (const [i, out] of outs.entries()) same(out, refs[i]!, `#${i}`);
    assert.ok(drafter.stats.drafted > 0 && drafter.stats.steps > 0);
    assert.ok(drafter.stats.catchUpTokens > 64 * 2, String(drafter.stats.catchUpTokens));
    assert.equal(drafter.stats.failures, 0);
    // How many draft steps there are depends on timing here: the draft model costs as much as the target, so
    // the runtime prices long drafts out (one draft step per draft position is the scripted tests' to show).
  } finally {
    await own.close();
    await draftEngine.close();
  }
});
