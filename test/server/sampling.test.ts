import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type OpenAI from "openai";
import type { Runtime } from "../../src/runtime/Runtime.ts";
import { type ModelServer, type Served, send, serveModel } from "./client.ts";

// Real engine: the bundled model, greedy unless said otherwise, so that a change in the output can only come
// from the field under test.
const PROMPT = "Genesis 1\n1 In the beginning";

let runtime: Runtime;
let served: Served;
let client: OpenAI;

/** The greedy continuation's token ids, straight from the runtime. */
async function greedyIds(maxTokens: number): Promise<number[]> {
  const result = await runtime.generate({ prompt: PROMPT, maxTokens }).result;
  return result.tokenIds;
}

/** The chosen tokens' bytes, per token (from logprobs), to tell which ids were generated. */
async function generatedBytes(body: Record<string, unknown>): Promise<{ text: string; bytes: string[] }> {
  const answer = await send(served.url, "/v1/chat/completions", {
    body: { messages: [{ role: "user", content: "x" }], ...body, logprobs: true },
  });
  assert.equal(answer.status, 200, answer.text);
  const content = answer.json.choices[0].logprobs.content as { bytes: number[] }[];
  return {
    text: answer.json.choices[0].message.content,
    bytes: content.map((e) => Buffer.from(e.bytes).toString("hex")),
  };
}

const hex = (id: number) => Buffer.from(runtime.engine.info.vocabulary.bytesOf(id)).toString("hex");

describe("sampler parity over HTTP: penalties, logit_bias, stop_token_ids, min_tokens", () => {
  let real: ModelServer;
  before(async () => {
    real = await serveModel();
    ({ runtime, served, client } = real);
  });
  after(() => real.close());

  test("each penalty changes the greedy output; 0 (or 1 for repeat_penalty) changes nothing", async () => {
    const base = { model: "m", prompt: PROMPT, max_tokens: 32, temperature: 0 };
    const plain = (await client.completions.create(base)).choices[0]!.text;
    const neutral = await client.completions.create({
      ...base,
      presence_penalty: 0,
      frequency_penalty: 0,
      // llama-server's names: not in the client's types, sent as they are.
      ...({ repeat_penalty: 1, repeat_last_n: 64 } as object),
    });
    assert.equal(neutral.choices[0]!.text, plain);
    const variants: Record<string, unknown>[] = [
      { presence_penalty: 1.5 },
      { frequency_penalty: 1.5 },
      { repeat_penalty: 1.5, repeat_last_n: -1 },
    ];
    for (const variant of variants) {
      const text = (await client.completions.create({ ...base, ...variant })).choices[0]!.text;
      assert.notEqual(text, plain, `${JSON.stringify(variant)} changes the output`);
    }
    // repeat_last_n 0 turns the penalties off.
    const off = await client.completions.create({
      ...base,
      ...({ repeat_penalty: 1.5, repeat_last_n: 0 } as object),
    });
    assert.equal(off.choices[0]!.text, plain);
  });

  test("logit_bias: -100 bans tokens, +100 forces one (even when sampling at temperature 1)", async () => {
    const ids = await greedyIds(6);
    const banned = [...new Set(ids)];
    const free = await generatedBytes({ max_tokens: 6, temperature: 0 });
    const ban = await generatedBytes({
      max_tokens: 6,
      temperature: 0,
      logit_bias: Object.fromEntries(banned.map((id) => [String(id), -100])),
    });
    const bannedHex = new Set(banned.map(hex));
    assert.ok(ban.bytes.length > 0);
    for (const bytes of ban.bytes)
      assert.ok(!bannedHex.has(bytes), `a banned token (${bytes}) was generated`);
    assert.notDeepEqual(ban.bytes, free.bytes);

    // A plain word token: " LORD" is one token of the bundled vocabulary.
    const [lord] = runtime.engine.tokenize(" LORD", { special: false });
    assert.equal(runtime.engine.tokenize(" LORD", { special: false }).length, 1);
    const forced = await client.completions.create({
      model: "m",
      prompt: PROMPT,
      max_tokens: 5,
      temperature: 1,
      seed: 3,
      logit_bias: { [String(lord)]: 100 },
    });
    assert.equal(forced.choices[0]!.text, " LORD".repeat(5));
  });

  test("min_tokens holds off the end of the text; stop_token_ids end it at a chosen token", async () => {
    const eos = runtime.engine.info.vocabulary.eos!;
    // +100 on the end-of-text token: the model ends at once, unless min_tokens holds it off.
    const body = { prompt: PROMPT, max_tokens: 20, temperature: 0, logit_bias: { [String(eos)]: 100 } };
    const early = await send(served.url, "/v1/completions", { body });
    assert.equal(early.json.choices[0].finish_reason, "stop");
    assert.ok(
      early.json.usage.completion_tokens <= 1,
      `ended at once: ${early.json.usage.completion_tokens}`,
    );
    const held = await send(served.url, "/v1/completions", { body: { ...body, min_tokens: 7 } });
    assert.equal(held.json.choices[0].finish_reason, "stop");
    assert.equal(held.json.sluice.reason, "eos");
    assert.ok(
      held.json.usage.completion_tokens >= 7,
      `held off: ${held.json.usage.completion_tokens} tokens`,
    );
    assert.ok(held.json.choices[0].text.length > 0);

    const ids = await greedyIds(12);
    // The first token that does not appear before its position: generation must end exactly there.
    const at = ids.findIndex((id, i) => i >= 3 && !ids.slice(0, i).includes(id));
    assert.ok(at > 0);
    const stopped = await send(served.url, "/v1/completions", {
      body: { prompt: PROMPT, max_tokens: 12, temperature: 0, stop_token_ids: [ids[at]] },
    });
    assert.equal(stopped.json.choices[0].finish_reason, "stop");
    assert.equal(stopped.json.sluice.stop, ids[at]);
    assert.equal(stopped.json.usage.completion_tokens, at + 1);
    // min_tokens applies to stop tokens too.
    const late = await send(served.url, "/v1/completions", {
      body: { prompt: PROMPT, max_tokens: 12, temperature: 0, stop_token_ids: [ids[at]], min_tokens: at + 2 },
    });
    assert.ok(late.json.usage.completion_tokens >= at + 2);
  });

  test("chat takes the same fields, through the client", async () => {
    const chat = await client.chat.completions.create({
      model: "m",
      messages: [{ role: "user", content: "Who made the earth?" }],
      max_completion_tokens: 12,
      temperature: 0,
      presence_penalty: -0.5,
      frequency_penalty: 0.5,
      logit_bias: { "0": -100 },
      ...({ stop_token_ids: [1], min_tokens: 2, repeat_penalty: 1.1 } as object),
    });
    assert.equal(chat.choices.length, 1);
    assert.ok(["stop", "length"].includes(chat.choices[0]!.finish_reason));
  });

  test("bad values get a 400 naming the field", async () => {
    const cases: [Record<string, unknown>, string, RegExp][] = [
      [{ presence_penalty: 2.5 }, "presence_penalty", /presence_penalty/],
      [{ frequency_penalty: -3 }, "frequency_penalty", /frequency_penalty/],
      [{ repeat_penalty: 0 }, "repeat_penalty", /must be > 0/],
      [{ repeat_penalty: 11 }, "repeat_penalty", /repeat_penalty/],
      [{ repeat_last_n: -2 }, "repeat_last_n", /-1/],
      [{ logit_bias: { abc: 1 } }, "logit_bias.abc", /token ids/],
      [{ logit_bias: { "5": 101 } }, "logit_bias.5", /logit_bias/],
      [{ logit_bias: { "99999": 1 } }, "logit_bias", /logit_bias must map token ids in \[0, 4096\)/],
      [{ stop_token_ids: [-1] }, "stop_token_ids.0", /stop_token_ids/],
      [{ stop_token_ids: [99999] }, "stop_token_ids", /stop_token_ids must be/],
      [{ min_tokens: -1 }, "min_tokens", /min_tokens/],
      [
        { min_tokens: 9, max_tokens: 4 },
        "min_tokens",
        /min_tokens must be an integer in \[0, max_tokens = 4\]/,
      ],
    ];
    for (const [extra, param, message] of cases) {
      const answer = await send(served.url, "/v1/completions", {
        body: { prompt: PROMPT, max_tokens: 4, ...extra },
      });
      assert.equal(answer.status, 400, JSON.stringify(extra));
      assert.equal(answer.json.error.code, "invalid_request");
      assert.equal(answer.json.error.param, param, `${JSON.stringify(extra)}: ${answer.json.error.message}`);
      assert.match(answer.json.error.message, message);
    }
  });
});
