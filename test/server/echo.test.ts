import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type OpenAI from "openai";
import type { Runtime } from "../../src/runtime/Runtime.ts";
import { type ModelServer, post, type Served, send, serveModel, textOf } from "./client.ts";

// Real engine, greedy: the echoed text is the prompt followed by exactly what the same request without echo
// generates.
const PROMPT = "Genesis 1\n1 In the beginning";

let runtime: Runtime;
let served: Served;
let client: OpenAI;

describe("echo: completions give the prompt back in front of the text", () => {
  let real: ModelServer;
  before(async () => {
    real = await serveModel();
    ({ runtime, served, client } = real);
  });
  after(() => real.close());

  test("non-streamed, through the client: the prompt, then the completion; usage unchanged", async () => {
    const base = { model: "m", prompt: PROMPT, max_tokens: 10, temperature: 0 };
    const plain = await client.completions.create(base);
    const echoed = await client.completions.create({ ...base, echo: true });
    assert.equal(echoed.choices[0]!.text, PROMPT + plain.choices[0]!.text);
    assert.deepEqual(echoed.usage, plain.usage);
  });

  test("streamed: the prompt is the first delta of every choice", async () => {
    const plain = await send(served.url, "/v1/completions", {
      body: { prompt: PROMPT, max_tokens: 10, temperature: 0 },
    });
    const stream = post(served.url, "/v1/completions", {
      prompt: PROMPT,
      max_tokens: 10,
      temperature: 0,
      echo: true,
      n: 2,
      stream: true,
    });
    await stream.done;
    for (const index of [0, 1]) {
      const events = stream.events.filter((e) => e !== "[DONE]" && e.choices[0]?.index === index);
      assert.equal(events[0].choices[0].text, PROMPT, `choice ${index} opens with the prompt`);
      assert.equal(textOf(events), PROMPT + plain.json.choices[0].text);
    }
  });

  test("a prompt of token ids is echoed as their text", async () => {
    const ids = runtime.engine.tokenize(PROMPT, { special: false });
    const echoed = await send(served.url, "/v1/completions", {
      body: { prompt: ids, max_tokens: 3, temperature: 0, echo: true },
    });
    assert.equal(echoed.status, 200);
    assert.ok(echoed.json.choices[0].text.startsWith(PROMPT), echoed.json.choices[0].text);
  });

  test("suffix stays refused; echo: false is the default", async () => {
    const suffix = await send(served.url, "/v1/completions", { body: { prompt: PROMPT, suffix: "Amen." } });
    assert.equal(suffix.status, 400);
    assert.equal(suffix.json.error.param, "suffix");
    assert.match(suffix.json.error.message, /suffix is not supported/);
    const off = await send(served.url, "/v1/completions", {
      body: { prompt: PROMPT, max_tokens: 2, temperature: 0, echo: false },
    });
    assert.ok(!off.json.choices[0].text.startsWith(PROMPT));
  });
});
