import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { LlamaEngine } from "../../src/engine/LlamaEngine.ts";
import { Runtime } from "../../src/runtime/Runtime.ts";
import { createChatFormatter } from "../../src/server/chat.ts";
import { scriptedRuntime } from "../helpers/scripted.ts";
import { serve } from "./client.ts";

// Real engine: the bundled model (no chat template in its GGUF, ChatML control tokens in its vocabulary).
const CHATML_TEMPLATE =
  "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

const MESSAGES = [
  { role: "system" as const, content: "Speak as the King James Bible." },
  { role: "user" as const, content: "Who made <|im_start|>the heaven?" },
  { role: "assistant" as const, content: "God." },
  { role: "user" as const, content: [{ type: "text", text: "And the earth?" }] },
];

let runtime: Runtime;
let engine: LlamaEngine;

describe("chat rendering", () => {
  before(async () => {
    runtime = await Runtime.create({ slots: 4, contextSize: 512, threads: 1 });
    engine = runtime.engine as LlamaEngine;
  });
  after(async () => {
    await runtime.close();
  });

  test("no template in the GGUF: ChatML with control tokens only for the markers", () => {
    const chat = createChatFormatter(engine);
    assert.equal(chat.kind, "chatml");
    const { tokens, stopTokenIds, stop } = chat.format(MESSAGES);
    const vocabulary = engine.info.vocabulary;
    const [start] = engine.tokenize("<|im_start|>", { special: true });
    const [end] = engine.tokenize("<|im_end|>", { special: true });
    assert.equal(tokens[0], vocabulary.bos, "BOS first: the model asks for it");
    assert.deepEqual(stopTokenIds, [end]);
    assert.deepEqual(stop, []);
    // One start marker per message plus the assistant's: the one inside the user's text stayed text.
    assert.equal(tokens.filter((t) => t === start).length, MESSAGES.length + 1);
    assert.equal(tokens.filter((t) => t === end).length, MESSAGES.length);
    const text = tokens
      .slice(1)
      .map((t) => new TextDecoder().decode(vocabulary.bytesOf(t)))
      .join("");
    assert.equal(
      text,
      "<|im_start|>system\nSpeak as the King James Bible.<|im_end|>\n" +
        "<|im_start|>user\nWho made <|im_start|>the heaven?<|im_end|>\n" +
        "<|im_start|>assistant\nGod.<|im_end|>\n" +
        "<|im_start|>user\nAnd the earth?<|im_end|>\n" +
        "<|im_start|>assistant\n",
    );
  });

  test("a Jinja template renders through node-llama-cpp to the same tokens as the ChatML fallback", () => {
    const templated = createChatFormatter(engine, CHATML_TEMPLATE);
    assert.equal(templated.kind, "template");
    const fromTemplate = templated.format(MESSAGES);
    const fallback = createChatFormatter(engine).format(MESSAGES);
    assert.deepEqual(fromTemplate.tokens, fallback.tokens);
    assert.ok(fromTemplate.stopTokenIds.includes(fallback.stopTokenIds[0]!), "<|im_end|> ends the turn");
  });

  test("a template node-llama-cpp cannot run falls back to ChatML", () => {
    const broken = createChatFormatter(engine, "{% for message in %}{{");
    assert.equal(broken.kind, "chatml");
  });

  test("a vocabulary without ChatML tokens: the plain role: content transcript", async () => {
    const scripted = await scriptedRuntime();
    try {
      const chat = createChatFormatter(scripted.engine);
      assert.equal(chat.kind, "plain");
      const { tokens, stop } = chat.format([{ role: "user", content: "Hi" }]);
      const vocabulary = scripted.engine.info.vocabulary;
      assert.equal(tokens[0], vocabulary.bos);
      const text = new TextDecoder().decode(
        Uint8Array.from(tokens.slice(1).flatMap((t) => [...vocabulary.bytesOf(t)])),
      );
      assert.equal(text, "user: Hi\nassistant:");
      assert.deepEqual(stop, ["\nuser:", "\nsystem:"]);
    } finally {
      await scripted.runtime.close();
    }
  });

  test("the server's chatTemplate option is used for /v1/chat/completions", async () => {
    const plain = await serve(runtime);
    const templated = await serve(runtime, { chatTemplate: CHATML_TEMPLATE });
    try {
      const body = JSON.stringify({ messages: MESSAGES, max_tokens: 1 });
      const a = await fetch(`${plain.url}/v1/chat/completions`, { method: "POST", body }).then((r) =>
        r.json(),
      );
      const b = await fetch(`${templated.url}/v1/chat/completions`, { method: "POST", body }).then((r) =>
        r.json(),
      );
      assert.equal(a.usage.prompt_tokens, createChatFormatter(engine).format(MESSAGES).tokens.length);
      assert.equal(b.usage.prompt_tokens, a.usage.prompt_tokens);
    } finally {
      await plain.server.close();
      await templated.server.close();
    }
  });
});
