import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { LlamaEngine } from "../../src/engine/LlamaEngine.ts";
import { BUNDLED_MODEL_PATH } from "../../src/engine/modelPath.ts";
import { SluiceError } from "../../src/errors.ts";
import { Runtime } from "../../src/runtime/Runtime.ts";
import type { GenerationRequest } from "../../src/types.ts";
import { samplerConfig } from "../helpers/sampler.ts";

// Real engine: the bundled model, one thread. Greedy throughout, so every figure is deterministic.
const PROMPT = "Genesis 1\n1 In the beginning";

let runtime: Runtime;

before(async () => {
  runtime = await Runtime.create({ model: BUNDLED_MODEL_PATH, slots: 2, threads: 1, contextSize: 512 });
});
after(() => runtime.close());

async function run(request: Partial<GenerationRequest>) {
  return runtime.generate({ prompt: PROMPT, temperature: 0, maxTokens: 24, ...request }).result;
}

function refusal(request: Partial<GenerationRequest>): SluiceError {
  try {
    runtime.generate({ prompt: PROMPT, ...request });
  } catch (error) {
    assert.ok(error instanceof SluiceError, String(error));
    return error;
  }
  assert.fail("accepted");
}

describe("penalties and biases", () => {
  test("a repeat, presence or frequency penalty changes greedy output; neutral values do not", async () => {
    const plain = await run({});
    assert.deepEqual(
      (await run({ repeatPenalty: 1, presencePenalty: 0, frequencyPenalty: 0 })).tokenIds,
      plain.tokenIds,
    );
    for (const penalty of [{ repeatPenalty: 1.5 }, { presencePenalty: 1.5 }, { frequencyPenalty: 1.5 }]) {
      const penalised = await run({ ...penalty, maxTokens: 48 });
      assert.notDeepEqual(
        penalised.tokenIds,
        (await run({ maxTokens: 48 })).tokenIds,
        JSON.stringify(penalty),
      );
    }
    // Greedy output of this model loops; a strong frequency penalty makes its tokens more varied.
    const looping = await run({ maxTokens: 64 });
    const varied = await run({ maxTokens: 64, frequencyPenalty: 2 });
    assert.ok(new Set(varied.tokenIds).size > new Set(looping.tokenIds).size);
  });

  test("logitBias -100 bans a token greedy decoding picks; +100 forces one it never would", async () => {
    const plain = await run({});
    const first = plain.tokenIds[0]!;
    const banned = await run({ logitBias: { [first]: -100 } });
    assert.notEqual(banned.tokenIds[0], first);
    assert.ok(!banned.tokenIds.includes(first));
    const forced = await run({ logitBias: { 4094: 100 }, maxTokens: 4, skipSpecialTokens: false });
    assert.deepEqual(forced.tokenIds, [4094, 4094, 4094, 4094]);
  });

  test("minTokens holds off end of generation and stop strings, then lets them end it", async () => {
    const eos = runtime.engine.info.vocabulary.eos!;
    // Force EOS from the first token on: without minTokens it ends at once.
    const now = await run({ logitBias: { [eos]: 100 } });
    assert.equal(now.reason, "eos");
    assert.equal(now.usage.completionTokens, 1);
    const later = await run({ logitBias: { [eos]: 100 }, minTokens: 5 });
    assert.equal(later.reason, "eos");
    assert.equal(later.usage.completionTokens, 6);
    assert.ok(!later.tokenIds.slice(0, 5).includes(eos));
    // A stop string in the first tokens' text does not count before minTokens.
    const plain = await run({ maxTokens: 40 });
    const word = plain.text.trim().split(/\s+/)[0]!;
    assert.equal(
      (await run({ maxTokens: 40, stop: word })).text,
      plain.text.slice(0, plain.text.indexOf(word)),
    );
    const held = await run({ maxTokens: 40, stop: word, minTokens: 3 });
    assert.ok(held.text.startsWith(plain.text.slice(0, plain.text.indexOf(word) + word.length)));
  });

  test("bad values are refused by name", () => {
    assert.equal(refusal({ presencePenalty: 3 }).param, "presencePenalty");
    assert.equal(refusal({ repeatPenalty: 0 }).param, "repeatPenalty");
    assert.equal(refusal({ repeatLastN: -2 }).param, "repeatLastN");
    assert.equal(refusal({ logitBias: { 99999: 1 } }).param, "logitBias");
    assert.equal(refusal({ logitBias: { 5: 101 } }).param, "logitBias");
    assert.equal(refusal({ minTokens: 30, maxTokens: 10 }).param, "minTokens");
    assert.equal(refusal({ logprobs: 21 }).param, "logprobs");
  });
});

describe("grammars", () => {
  test("json: the output is a JSON object", async () => {
    const result = await run({ grammar: { type: "json" }, maxTokens: 200, temperature: 0.8, seed: 7 });
    if (result.reason === "eos") assert.equal(typeof JSON.parse(result.text), "object");
    else assert.match(result.text, /^\s*\{/);
  });

  test("json_schema: output validates; unsupported keywords are refused by name", async () => {
    const schema = {
      type: "object",
      properties: {
        book: { enum: ["Genesis", "Exodus"] },
        chapter: { type: "integer" },
        ok: { type: "boolean" },
      },
      required: ["book", "chapter", "ok"],
      additionalProperties: false,
    };
    const result = await run({ grammar: { type: "json_schema", schema }, maxTokens: 160 });
    assert.equal(result.reason, "eos", result.text);
    const value = JSON.parse(result.text);
    assert.ok(["Genesis", "Exodus"].includes(value.book));
    assert.ok(Number.isInteger(value.chapter), result.text);
    assert.equal(typeof value.ok, "boolean");
    const refused = refusal({
      grammar: { type: "json_schema", schema: { type: "string", pattern: "^a+$" } },
    });
    assert.equal(refused.code, "invalid_request");
    assert.match(refused.message, /"pattern" at #/);
  });

  test("gbnf: output matches; a grammar that does not parse is refused", async () => {
    const result = await run({ grammar: { type: "gbnf", grammar: 'root ::= ("Amen" | "Selah") "."' } });
    assert.equal(result.reason, "eos");
    assert.match(result.text, /^(Amen|Selah)\.$/);
    assert.equal(refusal({ grammar: { type: "gbnf", grammar: "root ::= undefined-rule" } }).param, "grammar");
  });

  test("a lazy grammar applies from its trigger on", async () => {
    const plain = await run({ maxTokens: 40 });
    // A word greedy decoding writes anyway: from it on, the grammar decides.
    const word = plain.text.trim().split(/\s+/)[1]!;
    const result = await run({
      maxTokens: 40,
      grammar: { type: "gbnf", grammar: `root ::= ${JSON.stringify(word)} " Amen."`, trigger: word },
    });
    assert.equal(result.reason, "eos", result.text);
    assert.ok(result.text.endsWith(`${word} Amen.`), result.text);
    assert.equal(result.text, `${plain.text.slice(0, plain.text.indexOf(word))}${word} Amen.`);
  });
});

describe("logprobs", () => {
  test("one entry per token, aligned with every chunk, sorted, greedy picks the top one", async () => {
    const channel = runtime.generate({ prompt: PROMPT, temperature: 0, maxTokens: 20, logprobs: 3 });
    for await (const chunk of channel) {
      assert.equal(chunk.logprobs?.length, chunk.tokenIds.length);
      assert.deepEqual(
        chunk.logprobs!.map((entry) => entry.token),
        chunk.tokenIds,
      );
    }
    const result = await channel.result;
    assert.equal(result.logprobs!.length, result.tokenIds.length);
    for (const entry of result.logprobs!) {
      assert.equal(entry.top.length, 3);
      assert.ok(entry.logprob <= 0);
      assert.equal(entry.top[0]!.token, entry.token);
      assert.equal(entry.top[0]!.logprob, entry.logprob);
      for (let i = 1; i < entry.top.length; i++)
        assert.ok(entry.top[i]!.logprob <= entry.top[i - 1]!.logprob);
    }
    // Asking for scores does not change what is generated.
    assert.deepEqual(result.tokenIds, (await run({ maxTokens: 20 })).tokenIds);
    const bare = await run({ maxTokens: 5, logprobs: 0 });
    assert.ok(bare.logprobs!.every((e) => e.top.length === 0 && e.logprob <= 0));
    assert.equal((await run({ maxTokens: 5 })).logprobs, undefined);
  });
});

describe("a sampling that finds no token", () => {
  test("ends that request with an error, and the engine goes on serving the others", async () => {
    // Out of the runtime's reach (it refuses minTokens with a grammar): a finished grammar allows only the end
    // of generation, which the ban forbids. llama.cpp's sampler then fails; node-llama-cpp alone would lose
    // that failure (an unhandled rejection, and a step that never resolves).
    const engine = await LlamaEngine.create({
      model: BUNDLED_MODEL_PATH,
      slots: 2,
      threads: 1,
      contextSize: 256,
    });
    try {
      const { vocabulary } = engine.info;
      const base = samplerConfig();
      const stuck = samplerConfig({
        grammar: { gbnf: engine.grammarText({ type: "gbnf", grammar: 'root ::= "A"' }) },
        suppress: { tokens: vocabulary.eogIds, count: 100 },
      });
      const prompt = [vocabulary.bos!, ...engine.tokenize("Genesis 1", { special: false })];
      let stuckTokens = prompt;
      let plainTokens = prompt;
      let failure: unknown;
      for (let step = 0; step < 4 && failure === undefined; step++) {
        const [a, b] = await engine.step([
          { slot: 0, tokens: stuckTokens, sample: stuck },
          { slot: 1, tokens: plainTokens, sample: base },
        ]);
        assert.ok(b?.ok && b.token !== undefined, "the other slot's item must succeed");
        plainTokens = [b.token];
        if (a?.ok) stuckTokens = [a.token!];
        else failure = a?.error;
      }
      assert.ok(failure instanceof SluiceError, String(failure));
      assert.equal(failure.code, "engine_error");
      assert.match(failure.message, /no token to pick/);
      await engine.releaseSlot(0);
      assert.equal(await engine.trimSlot(0, 0), 0);
      // The failed slot serves again.
      const [again] = await engine.step([{ slot: 0, tokens: prompt, sample: base }]);
      assert.ok(again?.ok && again.token !== undefined);
    } finally {
      await engine.close();
    }
  });
});
