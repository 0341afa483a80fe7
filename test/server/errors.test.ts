import assert from "node:assert/strict";
import { request } from "node:http";
import { after, before, describe, test } from "node:test";
import { Runtime } from "../../src/runtime/Runtime.ts";
import { post, type Served, type SseEvent, serve, textOf } from "./client.ts";

// Real engine: the bundled model through node-llama-cpp, one thread (CI machines have two cores).
const PROMPT = "Genesis 1\n1 In the beginning";
const OK = { model: "kjv-tiny.gguf", prompt: PROMPT, max_tokens: 4 };

let runtime: Runtime;
let served: Served;

type Case = [name: string, path: string, body: unknown, status: number, code: string, message: RegExp];

const chat = (extra: Record<string, unknown>) => ({ messages: [{ role: "user", content: "Hi" }], ...extra });
const TOOL = { type: "function", function: { name: "get_verse", parameters: { type: "object" } } };

const CORPUS: Case[] = [
  ["bad JSON", "/v1/completions", '{"prompt": "a",', 400, "invalid_json", /not valid JSON/],
  ["empty body", "/v1/completions", "", 400, "invalid_json", /empty/],
  ["body is an array", "/v1/completions", "[]", 400, "invalid_request", /expected object/],
  [
    "prompt of the wrong type",
    "/v1/completions",
    { prompt: 5 },
    400,
    "invalid_request",
    /prompt: must be a string/,
  ],
  [
    "max_tokens as a string",
    "/v1/completions",
    { ...OK, max_tokens: "10" },
    400,
    "invalid_request",
    /max_tokens/,
  ],
  [
    "negative max_tokens",
    "/v1/completions",
    { ...OK, max_tokens: -5 },
    400,
    "invalid_request",
    /max_tokens: Too small/,
  ],
  [
    "fractional max_tokens",
    "/v1/completions",
    { ...OK, max_tokens: 1.5 },
    400,
    "invalid_request",
    /max_tokens/,
  ],
  [
    "huge max_tokens",
    "/v1/completions",
    { ...OK, max_tokens: 1e9 },
    400,
    "context_length_exceeded",
    /max_tokens .*exceeds the context/,
  ],
  [
    "unknown model",
    "/v1/completions",
    { ...OK, model: "gpt-4o" },
    404,
    "model_not_found",
    /"gpt-4o" does not exist/,
  ],
  [
    "prompt over the context",
    "/v1/completions",
    { prompt: "In the beginning ".repeat(400) },
    400,
    "context_length_exceeded",
    /The prompt is \d+ tokens; the context holds/,
  ],
  ["empty prompt", "/v1/completions", { prompt: "" }, 400, "invalid_request", /prompt is empty/],
  [
    "token id out of range",
    "/v1/completions",
    { prompt: [1, 99999] },
    400,
    "invalid_request",
    /not a token id/,
  ],
  [
    "batch of prompts",
    "/v1/completions",
    { prompt: ["a", "b"] },
    400,
    "invalid_request",
    /one prompt per request/,
  ],
  ["n = 999", "/v1/completions", { ...OK, n: 999 }, 400, "invalid_request", /n: Too big/],
  [
    "n over 4 per slot",
    "/v1/completions",
    { ...OK, n: 17 },
    400,
    "invalid_request",
    /at most 16 choices per request/,
  ],
  ["logprobs 21", "/v1/completions", { ...OK, logprobs: 21 }, 400, "invalid_request", /logprobs: Too big/],
  [
    "echo with logprobs",
    "/v1/completions",
    { ...OK, echo: true, logprobs: 1 },
    400,
    "invalid_request",
    /echo: cannot be combined with logprobs/,
  ],
  [
    "best_of other than n",
    "/v1/completions",
    { ...OK, best_of: 3 },
    400,
    "invalid_request",
    /best_of: must be 1 or equal to n \(1\)/,
  ],
  ["suffix", "/v1/completions", { ...OK, suffix: "end" }, 400, "invalid_request", /suffix is not supported/],
  [
    "presence_penalty 2.5",
    "/v1/completions",
    { ...OK, presence_penalty: 2.5 },
    400,
    "invalid_request",
    /presence_penalty: Too big/,
  ],
  [
    "unknown field",
    "/v1/completions",
    { ...OK, temprature: 1 },
    400,
    "invalid_request",
    /temprature: not a supported field/,
  ],
  [
    "temperature too high",
    "/v1/completions",
    { ...OK, temperature: 5 },
    400,
    "invalid_request",
    /temperature/,
  ],
  ["top_p 0", "/v1/completions", { ...OK, top_p: 0 }, 400, "invalid_request", /top_p: must be > 0/],
  [
    "17 stop strings",
    "/v1/completions",
    { ...OK, stop: Array.from({ length: 17 }, (_, i) => `s${i}`) },
    400,
    "invalid_request",
    /stop/,
  ],
  ["empty stop string", "/v1/completions", { ...OK, stop: [""] }, 400, "invalid_request", /stop/],
  ["negative seed", "/v1/completions", { ...OK, seed: -1 }, 400, "invalid_request", /seed/],
  [
    "stream as a string",
    "/v1/completions",
    { ...OK, stream: "yes" },
    400,
    "invalid_request",
    /stream: Invalid input: expected boolean/,
  ],
  ["chat without messages", "/v1/chat/completions", { max_tokens: 3 }, 400, "invalid_request", /messages/],
  [
    "chat with no message",
    "/v1/chat/completions",
    { messages: [] },
    400,
    "invalid_request",
    /messages: must hold at least one message/,
  ],
  [
    "chat legacy function role",
    "/v1/chat/completions",
    { messages: [{ role: "function", content: "x" }] },
    400,
    "invalid_request",
    /messages\.0\.role/,
  ],
  [
    "chat image part",
    "/v1/chat/completions",
    { messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: "x" } }] }] },
    400,
    "invalid_request",
    /only .*text.* content parts/,
  ],
  [
    "chat tools with a bad function name",
    "/v1/chat/completions",
    chat({ tools: [{ type: "function", function: { name: "smite them" } }] }),
    400,
    "invalid_request",
    /tools\.0\.function\.name: must be 1-64 letters/,
  ],
  [
    "chat tool_choice naming an unknown function",
    "/v1/chat/completions",
    chat({ tools: [TOOL], tool_choice: { type: "function", function: { name: "smite" } } }),
    400,
    "invalid_request",
    /"smite", which is not in tools \(get_verse\)/,
  ],
  [
    "chat tools to a model whose template has no tool support",
    "/v1/chat/completions",
    chat({ tools: [TOOL] }),
    400,
    "invalid_request",
    /chat template has no tool support/,
  ],
  [
    "chat legacy functions",
    "/v1/chat/completions",
    chat({ functions: [TOOL.function] }),
    400,
    "invalid_request",
    /functions is OpenAI's deprecated form of tools: send tools instead/,
  ],
  [
    "chat json_schema with pattern",
    "/v1/chat/completions",
    chat({
      response_format: {
        type: "json_schema",
        json_schema: {
          name: "s",
          schema: { type: "object", properties: { a: { type: "string", pattern: "^a" } } },
        },
      },
    }),
    400,
    "invalid_request",
    /"pattern" at #\/properties\/a, which the output grammar cannot enforce/,
  ],
  [
    "chat over the context",
    "/v1/chat/completions",
    chat({ max_completion_tokens: 100_000 }),
    400,
    "context_length_exceeded",
    /exceeds the context/,
  ],
];

async function send(path: string, body: unknown, init: RequestInit = {}): Promise<Response> {
  return fetch(`${served.url}${path}`, {
    method: "POST",
    body: typeof body === "string" ? body : JSON.stringify(body),
    ...init,
  });
}

function assertErrorShape(json: SseEvent, code: string): void {
  assert.equal(typeof json.error, "object");
  assert.equal(json.error.code, code);
  assert.equal(typeof json.error.message, "string");
  assert.equal(typeof json.error.type, "string");
  assert.ok("param" in json.error, "OpenAI's error shape has param");
}

describe("malformed requests get 4xx in OpenAI's error shape; the server keeps serving", () => {
  before(async () => {
    runtime = await Runtime.create({ slots: 4, contextSize: 512, threads: 1 });
    // Strict names: an unknown model is one of the corpus's 404s.
    served = await serve(runtime, { maxBodyBytes: 64 * 1024, strictModelName: true });
  });
  after(async () => {
    await served.server.close();
    await runtime.close();
  });

  test("the corpus, while a stream runs to its end undisturbed", async () => {
    const bystander = post(served.url, "/v1/completions", {
      prompt: PROMPT,
      max_tokens: 200,
      ignore_eos: true,
      stream: true,
    });
    await bystander.head;
    for (const [name, path, body, status, code, message] of CORPUS) {
      const res = await send(path, body);
      const json = await res.json();
      assert.equal(res.status, status, `${name}: ${JSON.stringify(json)}`);
      assertErrorShape(json, code);
      assert.match(json.error.message, message, name);
    }
    await bystander.done;
    assert.equal(bystander.events.at(-2).choices[0].finish_reason, "length");
    assert.ok(textOf(bystander.events).length > 100, "the bystander streamed its text");
    const health = await fetch(`${served.url}/health`);
    assert.equal(health.status, 200);
    const good = await send("/v1/completions", OK);
    assert.equal(good.status, 200);
  });

  test("accepted and ignored: user, metadata, penalties of 0, n = 1, logprobs false", async () => {
    const res = await send("/v1/completions", {
      ...OK,
      user: "someone",
      metadata: { tag: "x" },
      presence_penalty: 0,
      frequency_penalty: 0,
      n: 1,
      echo: false,
      best_of: 1,
    });
    assert.equal(res.status, 200);
    const chatRes = await send("/v1/chat/completions", chat({ logprobs: false, max_tokens: 2 }));
    assert.equal(chatRes.status, 200);
  });

  test("oversized bodies get 413, whether declared or chunked", async () => {
    const big = JSON.stringify({ prompt: "a".repeat(200 * 1024) });
    const declared = await send("/v1/completions", big);
    assert.equal(declared.status, 413);
    assertErrorShape(await declared.json(), "request_too_large");
    const chunked = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = request(`${served.url}/v1/completions`, { method: "POST", agent: false }, (res) => {
        let body = "";
        res.on("data", (c) => {
          body += c;
        });
        res.on("end", () => resolve({ status: res.statusCode!, body }));
      });
      req.on("error", reject);
      // No Content-Length: the limit is found while reading.
      for (let i = 0; i < 20; i++) req.write("a".repeat(8 * 1024));
      req.end();
    });
    assert.equal(chunked.status, 413);
    assert.match(JSON.parse(chunked.body).error.message, /larger than the limit of 65536 bytes/);
    assert.equal((await fetch(`${served.url}/health`)).status, 200);
  });

  test("a client that hangs up halfway through its body costs nothing", async () => {
    const submitted = runtime.stats.submitted;
    await new Promise<void>((resolve) => {
      const req = request(`${served.url}/v1/completions`, {
        method: "POST",
        agent: false,
        headers: { "content-length": "1000" },
      });
      req.on("error", () => resolve());
      req.write('{"prompt": "In the', () => setImmediate(() => req.destroy()));
      req.on("close", () => resolve());
    });
    assert.equal((await send("/v1/completions", OK)).status, 200);
    assert.equal(runtime.stats.submitted, submitted + 1, "only the complete request reached the runtime");
  });

  test("wrong method 405 with Allow; unknown route 404", async () => {
    const get = await fetch(`${served.url}/v1/completions`);
    assert.equal(get.status, 405);
    assert.equal(get.headers.get("allow"), "POST");
    assertErrorShape(await get.json(), "method_not_allowed");
    const missing = await fetch(`${served.url}/v1/embeddings`, { method: "POST", body: "{}" });
    assert.equal(missing.status, 404);
    assertErrorShape(await missing.json(), "not_found");
  });

  test("API key: required on every route but /health and the playground", async () => {
    const keyed = await serve(runtime, { apiKey: "sk-test" });
    try {
      const none = await fetch(`${keyed.url}/v1/models`);
      assert.equal(none.status, 401);
      assert.equal(none.headers.get("www-authenticate"), "Bearer");
      assertErrorShape(await none.json(), "invalid_api_key");
      const wrong = await fetch(`${keyed.url}/v1/completions`, {
        method: "POST",
        body: JSON.stringify(OK),
        headers: { authorization: "Bearer sk-wrong" },
      });
      assert.equal(wrong.status, 401);
      assert.match((await wrong.json()).error.message, /Incorrect API key/);
      for (const path of ["/metrics", "/v1/slots"])
        assert.equal((await fetch(`${keyed.url}${path}`)).status, 401, path);
      const authorized = { authorization: "Bearer sk-test" };
      const right = await fetch(`${keyed.url}/v1/completions`, {
        method: "POST",
        body: JSON.stringify(OK),
        headers: authorized,
      });
      assert.equal(right.status, 200);
      assert.equal((await fetch(`${keyed.url}/metrics`, { headers: authorized })).status, 200);
      assert.equal((await fetch(`${keyed.url}/health`)).status, 200);
      assert.equal((await fetch(`${keyed.url}/`)).status, 200);
    } finally {
      await keyed.server.close();
    }
  });
});
