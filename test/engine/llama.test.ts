import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { getLlama, type Token } from "node-llama-cpp";
import type { StreamChannel } from "../../src/channel/index.ts";
import { BUNDLED_MODEL_PATH } from "../../src/engine/modelPath.ts";
import type { CancelRecord } from "../../src/runtime/RequestState.ts";
import { Runtime } from "../../src/runtime/Runtime.ts";
import { drain } from "../helpers/scripted.ts";

// Real engine: the bundled model through node-llama-cpp, one thread (CI machines have two cores).
const PROMPTS = [
  "Genesis 1\n1 In the beginning",
  "John 3\n16 For God so loved",
  "Psalms 23\n1 The LORD",
  "Exodus 20\n1 And God spake",
];
const LONG_PROMPT = `${"And the LORD spake unto Moses, saying, ".repeat(40)}`;

let runtime: Runtime;
const cancels = new Map<string, CancelRecord>();

/** Greedy tokens straight from node-llama-cpp, no Sluice involved: the reference. */
async function referenceGreedy(prompt: string, maxTokens: number): Promise<number[]> {
  const llama = await getLlama({ gpu: false, build: "never", skipDownload: true, maxThreads: 1 });
  const model = await llama.loadModel({ modelPath: BUNDLED_MODEL_PATH });
  const context = await model.createContext({ contextSize: 512, threads: 1, flashAttention: false });
  const tokens = [model.tokens.bos!, ...model.tokenize(prompt)] as Token[];
  const out: number[] = [];
  for await (const token of context.getSequence().evaluate(tokens, { temperature: 0, yieldEogToken: true })) {
    out.push(token);
    if (out.length === maxTokens || model.isEogToken(token)) break;
  }
  await llama.dispose();
  return out;
}

function cancelRecord(channel: StreamChannel): CancelRecord {
  const record = cancels.get(channel.id);
  assert.ok(record, "no cancel record: the slot was never freed");
  return record;
}

/** Resolves once the runtime has freed the request's slot (its end record is out). */
function freed(channel: StreamChannel): Promise<void> {
  return new Promise((resolve) => {
    const stop = runtime.observe((e) => {
      if (e.type === "end" && e.record.id === channel.id) {
        stop();
        resolve();
      }
    });
  });
}

describe("runtime on node-llama-cpp with the bundled model", () => {
  before(async () => {
    runtime = await Runtime.create({ slots: 4, contextSize: 512, threads: 1, prefillChunkSize: 32 });
    runtime.observe((e) => {
      if (e.type === "end" && e.record.cancel) cancels.set(e.record.id, e.record.cancel);
    });
  });
  after(async () => {
    await runtime.close();
  });

  test("greedy output equals node-llama-cpp's own greedy loop, and is deterministic", async () => {
    const reference = await referenceGreedy(PROMPTS[0]!, 40);
    const first = await drain(runtime.generate({ prompt: PROMPTS[0]!, maxTokens: 40, temperature: 0 }));
    const second = await drain(runtime.generate({ prompt: PROMPTS[0]!, maxTokens: 40, temperature: 0 }));
    assert.deepEqual(first.ids, reference);
    assert.deepEqual(second.ids, first.ids);
  });

  test("stream text = result text = the detokenized token ids", async () => {
    const channel = runtime.generate({ prompt: PROMPTS[1]!, maxTokens: 60, temperature: 0.9, seed: 7 });
    const { text, ids } = await drain(channel);
    const result = await channel.result;
    assert.equal(result.text, text);
    assert.deepEqual(result.tokenIds, ids);
    const vocabulary = runtime.engine.info.vocabulary;
    const bytes = ids.filter((id) => !vocabulary.isSpecial(id)).flatMap((id) => [...vocabulary.bytesOf(id)]);
    assert.equal(text, new TextDecoder().decode(Uint8Array.from(bytes)));
    assert.ok(text.length > 40, `only ${text.length} characters`);
  });

  test("a fixed seed reproduces a sampled generation", async () => {
    const a = await drain(
      runtime.generate({ prompt: PROMPTS[2]!, maxTokens: 30, temperature: 0.8, seed: 1234 }),
    );
    const b = await drain(
      runtime.generate({ prompt: PROMPTS[2]!, maxTokens: 30, temperature: 0.8, seed: 1234 }),
    );
    assert.deepEqual(a.ids, b.ids);
  });

  test("8 concurrent generations over 4 slots all finish, each equal to its solo greedy output", async () => {
    const solo: number[][] = [];
    for (const prompt of PROMPTS)
      solo.push((await drain(runtime.generate({ prompt, maxTokens: 24, temperature: 0 }))).ids);
    const channels = [...PROMPTS, ...PROMPTS].map((prompt) =>
      runtime.generate({ prompt, maxTokens: 24, temperature: 0 }),
    );
    const results = await Promise.all(channels.map(drain));
    results.forEach((r, i) => {
      assert.ok(r.terminal.reason === "length" || r.terminal.reason === "eos");
      assert.deepEqual(r.ids, solo[i % PROMPTS.length], `request ${i} differs from its solo run`);
    });
  });

  test("cancel before admission: terminal cancelled, never reaches the engine", async () => {
    const running = PROMPTS.map((prompt) => runtime.generate({ prompt, maxTokens: 50, ignoreEos: true }));
    const queued = runtime.generate({ prompt: PROMPTS[0]!, maxTokens: 50 });
    const isFreed = freed(queued);
    queued.cancel();
    const { terminal, ids } = await drain(queued);
    await isFreed;
    assert.equal(terminal.reason, "cancelled");
    assert.equal(ids.length, 0);
    assert.equal(cancelRecord(queued).phase, "queued");
    for (const channel of running) channel.cancel();
    await Promise.all(running.map(drain));
  });

  test("cancel during prefill of a long prompt: slot free within one prefill chunk", async () => {
    for (const when of ["between steps", "step in flight"] as const) {
      const channel = runtime.generate({ prompt: LONG_PROMPT, maxTokens: 20 });
      const isFreed = freed(channel);
      let prefillSteps = 0;
      const stop = runtime.observe((e) => {
        if (e.type !== "step" || !e.items.some((i) => i.sample === undefined && i.tokens.length === 32))
          return;
        prefillSteps++;
        if (prefillSteps !== 2) return;
        stop();
        if (when === "between steps") channel.cancel();
        else setImmediate(() => channel.cancel());
      });
      const { terminal, ids } = await drain(channel);
      await isFreed;
      assert.equal(terminal.reason, "cancelled");
      assert.equal(ids.length, 0);
      const record = cancelRecord(channel);
      assert.equal(record.phase, "prefill");
      assert.ok(record.stepsToFree <= 1, `${when}: freed after ${record.stepsToFree} steps`);
      assert.equal(record.tokensAfterCancel, 0);
    }
    assert.equal(runtime.stats.tokensAfterCancel, 0);
  });

  test("cancel mid-decode: one terminal chunk with what was generated; slot free within one step", async () => {
    const channel = runtime.generate({ prompt: PROMPTS[3]!, maxTokens: 200, ignoreEos: true });
    const isFreed = freed(channel);
    const chunks = [];
    for await (const chunk of channel) {
      chunks.push(chunk);
      if (chunks.length === 5) channel.cancel();
    }
    await isFreed;
    assert.equal(chunks.filter((c) => c.finished).length, 1);
    assert.equal(chunks.at(-1)!.reason, "cancelled");
    const result = await channel.result;
    assert.ok(
      result.usage.completionTokens >= 5 && result.usage.completionTokens <= 6,
      `${result.usage.completionTokens} tokens`,
    );
    const record = cancelRecord(channel);
    assert.equal(record.phase, "decode");
    assert.ok(record.stepsToFree <= 1, `freed after ${record.stepsToFree} steps`);
  });

  test("break out of for-await cancels; the freed slot serves a queued request with clean state", async () => {
    const reference = (await drain(runtime.generate({ prompt: PROMPTS[1]!, maxTokens: 20, temperature: 0 })))
      .ids;
    const busy = [0, 1, 2].map((i) =>
      runtime.generate({ prompt: PROMPTS[i]!, maxTokens: 60, ignoreEos: true }),
    );
    const breaker = runtime.generate({ prompt: PROMPTS[3]!, maxTokens: 200, ignoreEos: true });
    const waiting = runtime.generate({ prompt: PROMPTS[1]!, maxTokens: 20, temperature: 0 });
    let n = 0;
    for await (const _ of breaker) if (++n === 3) break;
    assert.equal((await breaker.result).reason, "cancelled");
    const reused = await drain(waiting);
    assert.deepEqual(reused.ids, reference, "a reused slot must not leak the previous request's KV state");
    for (const c of busy) c.cancel();
    await Promise.all(busy.map(drain));
    assert.equal(runtime.stats.tokensAfterCancel, 0);
  });
});
