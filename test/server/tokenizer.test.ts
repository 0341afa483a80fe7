import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Runtime } from "../../src/runtime/Runtime.ts";
import { type Served, send, serve } from "./client.ts";

// llama-server's tokenizer routes, on the bundled model's real vocabulary and tokenizer.

let runtime: Runtime;
let served: Served;

const tokenize = (body: unknown) => send(served.url, "/tokenize", { body });

describe("/tokenize, /detokenize, /apply-template (llama-server's shapes) on the bundled model", () => {
  before(async () => {
    runtime = await Runtime.create({ slots: 1, contextSize: 256, threads: 1 });
    served = await serve(runtime);
  });
  after(async () => {
    await served.server.close();
    await runtime.close();
  });

  test("tokenize: { tokens } as the engine tokenizes; with_pieces gives { id, piece }, bytes when not UTF-8", async () => {
    const content = "In the beginning 🎉 é";
    const { status, json } = await tokenize({ content });
    assert.equal(status, 200);
    assert.deepEqual(json, { tokens: runtime.engine.tokenize(content, { special: true }) });
    const pieces = (await tokenize({ content, with_pieces: true })).json.tokens;
    assert.deepEqual(
      pieces.map((p: { id: number }) => p.id),
      json.tokens,
    );
    assert.ok(pieces.some((p: { piece: unknown }) => typeof p.piece === "string"));
    // The emoji's 4 bytes are 4 byte tokens here: each piece is its byte, as llama-server sends it.
    assert.ok(pieces.some((p: { piece: unknown }) => Array.isArray(p.piece)));
    const bytes = pieces.flatMap((p: { piece: string | number[] }) =>
      typeof p.piece === "string" ? [...Buffer.from(p.piece, "utf8")] : p.piece,
    );
    assert.equal(Buffer.from(bytes).toString("utf8"), content);
  });

  test("tokenize: parse_special (default true) reads control-token text; add_special puts BOS in front", async () => {
    const { vocabulary } = runtime.engine.info;
    const special = (await tokenize({ content: "<|im_start|>user" })).json.tokens;
    assert.ok(vocabulary.isSpecial(special[0]), `${special[0]} is a control token`);
    const text = (await tokenize({ content: "<|im_start|>user", parse_special: false })).json.tokens;
    assert.ok(text.length > special.length);
    assert.ok(!text.some((id: number) => vocabulary.isSpecial(id)));
    assert.equal(runtime.engine.info.addBos, true);
    const withBos = (await tokenize({ content: "<|im_start|>user", add_special: true })).json.tokens;
    assert.deepEqual(withBos, [vocabulary.bos, ...special]);
  });

  test("detokenize: { content }, round-trips tokenize, control tokens as their text", async () => {
    const content = "<|im_start|>user\nIn the beginning 🎉<|im_end|>";
    for (const parse_special of [true, false]) {
      const { tokens } = (await tokenize({ content, parse_special })).json;
      const { status, json } = await send(served.url, "/detokenize", { body: { tokens } });
      assert.equal(status, 200);
      assert.deepEqual(json, { content });
    }
    // Half a character is replaced, not an error.
    const emoji = (await tokenize({ content: "🎉" })).json.tokens;
    assert.equal(
      (await send(served.url, "/detokenize", { body: { tokens: emoji.slice(0, 1) } })).json.content,
      "\ufffd",
    );
  });

  test("apply-template: the chat as /v1/chat/completions renders it, as text without BOS", async () => {
    const messages = [
      { role: "system", content: "Be brief." },
      { role: "user", content: "In the beginning" },
    ];
    const { status, json } = await send(served.url, "/apply-template", { body: { messages } });
    assert.equal(status, 200);
    assert.equal(
      json.prompt,
      "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nIn the beginning<|im_end|>\n<|im_start|>assistant\n",
    );
    // Tokenized back with special tokens, it is the chat route's prompt (after its BOS).
    const tokens = (await tokenize({ content: json.prompt, add_special: true })).json.tokens;
    const chat = await send(served.url, "/v1/chat/completions", { body: { messages, max_tokens: 1 } });
    assert.equal(chat.json.usage.prompt_tokens, tokens.length);
  });

  test("wrong input is a 400 in OpenAI's shape, never a 500", async () => {
    for (const [path, body, param] of [
      ["/tokenize", {}, "content"],
      ["/tokenize", { content: 5 }, "content"],
      ["/tokenize", { content: "x", add_bos: true }, "add_bos"],
      ["/detokenize", { tokens: [1.5] }, "tokens.0"],
      ["/detokenize", { tokens: [-1] }, "tokens.0"],
      ["/detokenize", { tokens: [1, 4096] }, "tokens.1"],
      ["/detokenize", { tokens: "abc" }, "tokens"],
      ["/apply-template", { messages: [] }, "messages"],
      ["/apply-template", { messages: [{ role: "robot", content: "x" }] }, "messages.0.role"],
    ] as const) {
      const { status, json } = await send(served.url, path, { body });
      assert.equal(status, 400, `${path} ${JSON.stringify(body)}`);
      assert.equal(json.error.type, "invalid_request_error");
      assert.equal(json.error.param, param, JSON.stringify(json));
    }
  });
});
