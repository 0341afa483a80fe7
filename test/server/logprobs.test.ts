import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type OpenAI from "openai";
import type { Vocabulary } from "../../src/detok/Vocabulary.ts";
import type { StepItem, StepOutcome } from "../../src/engine/Engine.ts";
import { ScriptedEngine, type ScriptedEngineOptions } from "../../src/engine/ScriptedEngine.ts";
import { Runtime } from "../../src/runtime/Runtime.ts";
import { bundledVocabulary } from "../helpers/scripted.ts";
import { type ModelServer, post, type Served, type SseEvent, send, serve, serveModel } from "./client.ts";

const PROMPT = "Genesis 1\n1 In the beginning";

/**
 * The scripted engine, reporting made-up log-probabilities (the real ones come from the model, below): the
 * sampled token gets -(id % 5 + 1) / 10 and is the most likely; its alternatives are the next ids, each 1
 * less likely than the one before.
 */
class ScoringEngine extends ScriptedEngine {
  constructor(vocabulary: Vocabulary, options: ScriptedEngineOptions) {
    super(vocabulary, options);
    this.info.capabilities.logprobs = true;
  }

  override async step(items: readonly StepItem[]): Promise<StepOutcome[]> {
    const outcomes = await super.step(items);
    return outcomes.map((outcome, i) => {
      const asked = items[i]!.sample?.logprobs;
      if (!outcome.ok || outcome.token === undefined || asked === undefined) return outcome;
      const token = outcome.token;
      const logprob = -((token % 5) + 1) / 10;
      const top = Array.from({ length: asked }, (_, k) => ({ token: token + k, logprob: logprob - k }));
      return { ...outcome, logprob: { token, logprob, top } };
    });
  }
}

/** Every `{ token, logprob, bytes, top_logprobs }` of chat's shape is well formed. */
function checkChatEntry(entry: SseEvent, top: number): void {
  assert.equal(typeof entry.token, "string");
  assert.ok(entry.logprob <= 0, `logprob ${entry.logprob} <= 0`);
  assert.ok(
    Array.isArray(entry.bytes) && entry.bytes.every((b: number) => Number.isInteger(b) && b >= 0 && b < 256),
  );
  assert.equal(entry.top_logprobs.length, top);
  for (let k = 0; k < entry.top_logprobs.length; k++) {
    const alt = entry.top_logprobs[k];
    assert.equal(typeof alt.token, "string");
    assert.ok(Array.isArray(alt.bytes));
    assert.ok(alt.logprob <= 0, `alternative logprob ${alt.logprob} <= 0`);
    if (k > 0)
      assert.ok(alt.logprob <= entry.top_logprobs[k - 1].logprob, "alternatives sorted, likeliest first");
  }
}

const utf8 = (entries: { bytes: number[] }[]) =>
  Buffer.from(entries.flatMap((e) => e.bytes)).toString("utf8");

describe("logprobs on the scripted engine: per delta, partial characters, shapes", () => {
  // Accents and a check mark: the scripted engine makes one token per byte, so these characters span
  // several tokens, and a token in the middle of one has no text of its own.
  const SCRIPT = "Hé said: ✓ «amen»";
  let script = SCRIPT;
  let runtime: Runtime;
  let served: Served;

  before(async () => {
    const vocabulary = await bundledVocabulary();
    let engine!: ScoringEngine;
    // One step per ms, so the server reads each token's chunk on its own (nothing coalesces).
    engine = new ScoringEngine(vocabulary, { slots: 2, stepMs: 1, script: () => engine.encode(script) });
    runtime = await Runtime.create({ engine });
    served = await serve(runtime);
  });
  after(async () => {
    await served.server.close();
    await runtime.close();
  });

  test("streamed chat: each text delta carries its tokens; their bytes make the text, however it is split", async () => {
    const stream = post(served.url, "/v1/chat/completions", {
      messages: [{ role: "user", content: "x" }],
      stream: true,
      logprobs: true,
      top_logprobs: 2,
    });
    await stream.done;
    const chunks = stream.events.filter((e) => e !== "[DONE]" && e.choices.length > 0);
    const deltas = chunks.filter(
      (e) => typeof e.choices[0].delta.content === "string" && e.choices[0].delta.content !== "",
    );
    assert.ok(deltas.length > 3, "several deltas");
    assert.ok(deltas.length < Buffer.byteLength(SCRIPT), "fewer deltas than tokens: some tokens had no text");
    const entries: SseEvent[] = [];
    for (const event of deltas) {
      const content = event.choices[0].logprobs?.content;
      assert.ok(
        Array.isArray(content) && content.length > 0,
        "a text delta carries the log-probabilities of its tokens",
      );
      // The text of one delta is exactly what its tokens' bytes complete, plus what earlier ones left open.
      entries.push(...content);
      for (const entry of content) checkChatEntry(entry, 2);
    }
    const finish = chunks.at(-1);
    assert.equal(finish.choices[0].finish_reason, "stop");
    entries.push(...(finish.choices[0].logprobs?.content ?? []));
    const text = deltas.map((e) => e.choices[0].delta.content).join("");
    assert.equal(text, SCRIPT);
    assert.equal(utf8(entries), SCRIPT, "the chosen tokens' bytes concatenate to the text");
    assert.equal(
      entries.length,
      Buffer.byteLength(SCRIPT),
      "one entry per token, the end-of-text token left out",
    );
    // A token inside a character has no text of its own: its token string shows U+FFFD, its bytes are exact.
    assert.ok(entries.some((e) => e.token.includes("\uFFFD") && e.bytes.length === 1));
  });

  test("non-streamed chat and completions carry the whole list; without logprobs every logprobs is null", async () => {
    const chat = await send(served.url, "/v1/chat/completions", {
      body: { messages: [{ role: "user", content: "x" }], logprobs: true },
    });
    assert.equal(chat.status, 200);
    const content = chat.json.choices[0].logprobs.content;
    for (const entry of content) checkChatEntry(entry, 0);
    assert.equal(utf8(content), chat.json.choices[0].message.content);
    assert.equal(chat.json.choices[0].logprobs.refusal, null);

    const completion = await send(served.url, "/v1/completions", { body: { prompt: "abc", logprobs: 3 } });
    assert.equal(completion.status, 200);
    const legacy = completion.json.choices[0].logprobs;
    assert.deepEqual(Object.keys(legacy).sort(), ["text_offset", "token_logprobs", "tokens", "top_logprobs"]);
    assert.equal(legacy.tokens.length, Buffer.byteLength(SCRIPT));
    assert.equal(legacy.token_logprobs.length, legacy.tokens.length);
    assert.ok(legacy.top_logprobs.every((top: Record<string, number>) => Object.keys(top).length <= 3));

    const plain = post(served.url, "/v1/chat/completions", {
      messages: [{ role: "user", content: "x" }],
      stream: true,
    });
    await plain.done;
    const events = plain.events.filter((e) => e !== "[DONE]" && e.choices.length > 0);
    assert.ok(events.length > 2);
    assert.ok(
      events.every((e) => e.choices[0].logprobs === null),
      "no logprobs unless asked",
    );
    const none = await send(served.url, "/v1/completions", { body: { prompt: "abc" } });
    assert.equal(none.json.choices[0].logprobs, null);
  });

  test("streamed completions: the legacy shape per delta, text offsets running on across deltas", async () => {
    script = "In the beginning";
    const stream = post(served.url, "/v1/completions", { prompt: "x", stream: true, logprobs: 1 });
    await stream.done;
    script = SCRIPT;
    const chunks = stream.events.filter((e) => e !== "[DONE]" && e.choices.length > 0);
    const tokens: string[] = [];
    const offsets: number[] = [];
    let text = "";
    for (const event of chunks) {
      const [choice] = event.choices;
      text += choice.text;
      if (choice.logprobs === null) continue;
      tokens.push(...choice.logprobs.tokens);
      offsets.push(...choice.logprobs.text_offset);
      assert.equal(choice.logprobs.tokens.length, choice.logprobs.token_logprobs.length);
      assert.equal(choice.logprobs.tokens.length, choice.logprobs.top_logprobs.length);
    }
    // ASCII from the scripted engine: one token per character, offsets 0, 1, 2, ...
    assert.equal(text, "In the beginning");
    assert.equal(tokens.join(""), text);
    assert.deepEqual(
      offsets,
      tokens.map((_, i) => i),
    );
  });

  test("refused: top_logprobs over 20 or without logprobs, completions logprobs over 20, echo with logprobs", async () => {
    const cases: [string, unknown, string][] = [
      [
        "/v1/chat/completions",
        { messages: [{ role: "user", content: "x" }], logprobs: true, top_logprobs: 21 },
        "top_logprobs",
      ],
      [
        "/v1/chat/completions",
        { messages: [{ role: "user", content: "x" }], top_logprobs: 2 },
        "top_logprobs",
      ],
      ["/v1/chat/completions", { messages: [{ role: "user", content: "x" }], logprobs: 3 }, "logprobs"],
      ["/v1/completions", { prompt: "x", logprobs: 21 }, "logprobs"],
      ["/v1/completions", { prompt: "x", logprobs: true }, "logprobs"],
      ["/v1/completions", { prompt: "x", logprobs: 1, echo: true }, "echo"],
    ];
    for (const [path, body, param] of cases) {
      const answer = await send(served.url, path, { body });
      assert.equal(answer.status, 400, JSON.stringify(body));
      assert.equal(answer.json.error.param, param, answer.json.error.message);
      assert.equal(answer.json.error.code, "invalid_request");
    }
  });
});

describe("logprobs on the real engine, through the official openai client", () => {
  let client: OpenAI;

  let real: ModelServer;
  before(async () => {
    real = await serveModel();
    ({ client } = real);
  });
  after(() => real.close());

  test("chat, greedy: one entry per token, the chosen token the likeliest, sorted, <= 0, bytes make the text", async () => {
    const chat = await client.chat.completions.create({
      model: "m",
      messages: [{ role: "user", content: "Who made the heaven and the earth?" }],
      max_completion_tokens: 16,
      temperature: 0,
      logprobs: true,
      top_logprobs: 5,
    });
    const [choice] = chat.choices;
    const content = choice!.logprobs!.content!;
    // One entry per generated token, but for an end-of-turn token (not text: left out).
    const tokens = chat.usage!.completion_tokens;
    assert.ok(
      content.length === tokens || content.length === tokens - 1,
      `${content.length} entries, ${tokens} tokens`,
    );
    for (const entry of content) {
      checkChatEntry(entry, 5);
      // Greedy: the sampled token is the most likely one.
      assert.equal(entry.token, entry.top_logprobs[0]!.token);
      assert.ok(Math.abs(entry.logprob - entry.top_logprobs[0]!.logprob) < 1e-9);
    }
    assert.equal(utf8(content as { bytes: number[] }[]), choice!.message.content);
  });

  test("streamed chat: the deltas' entries add up to the same list as the whole response", async () => {
    const body = {
      model: "m",
      messages: [{ role: "user" as const, content: "Tell of Noah." }],
      max_completion_tokens: 20,
      temperature: 0,
      logprobs: true,
      top_logprobs: 2,
    };
    const whole = await client.chat.completions.create(body);
    const stream = await client.chat.completions.create({ ...body, stream: true });
    const entries: OpenAI.Chat.Completions.ChatCompletionTokenLogprob[] = [];
    let text = "";
    for await (const chunk of stream) {
      const [choice] = chunk.choices;
      if (choice === undefined) continue;
      text += choice.delta.content ?? "";
      entries.push(...(choice.logprobs?.content ?? []));
    }
    assert.equal(text, whole.choices[0]!.message.content);
    assert.deepEqual(
      entries.map((e) => [e.token, e.bytes]),
      whole.choices[0]!.logprobs!.content!.map((e) => [e.token, e.bytes]),
    );
    for (let i = 0; i < entries.length; i++) {
      // The second request reads the prompt from the cache: the same tokens, within float noise.
      assert.ok(Math.abs(entries[i]!.logprob - whole.choices[0]!.logprobs!.content![i]!.logprob) < 1e-3);
    }
  });

  test("completions: the legacy shape, tokens making the text, offsets into it, alternatives by text", async () => {
    const completion = await client.completions.create({
      model: "m",
      prompt: PROMPT,
      max_tokens: 12,
      temperature: 0,
      logprobs: 3,
    });
    const [choice] = completion.choices;
    const logprobs = choice!.logprobs!;
    assert.equal(logprobs.tokens!.length, 12);
    assert.equal(logprobs.tokens!.join(""), choice!.text);
    let offset = 0;
    for (let i = 0; i < 12; i++) {
      assert.equal(logprobs.text_offset![i], offset);
      offset += logprobs.tokens![i]!.length;
      const top = logprobs.top_logprobs![i]!;
      const values = Object.values(top);
      assert.ok(values.length >= 1 && values.length <= 3);
      assert.ok(logprobs.token_logprobs![i]! <= 0);
      // Greedy: the chosen token is the likeliest alternative.
      assert.equal(top[logprobs.tokens![i]!], Math.max(...values));
      assert.equal(top[logprobs.tokens![i]!], logprobs.token_logprobs![i]);
    }
    const plain = await client.completions.create({
      model: "m",
      prompt: PROMPT,
      max_tokens: 12,
      temperature: 0,
    });
    assert.equal(plain.choices[0]!.logprobs, null);
    assert.equal(plain.choices[0]!.text, choice!.text, "asking for logprobs does not change the output");
  });
});
