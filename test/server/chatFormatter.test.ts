import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { Engine } from "../../src/engine/Engine.ts";
import { LlamaEngine } from "../../src/engine/LlamaEngine.ts";
import { BUNDLED_CHAT_MODEL_PATH, BUNDLED_MODEL_PATH } from "../../src/engine/modelPath.ts";
import { SluiceError } from "../../src/errors.ts";
import { createChatFormatter, toTurn } from "../../src/server/chat.ts";
import type { ChatMessage } from "../../src/server/schemas.ts";
import { HERMES_TOOL_CALLS } from "../../src/server/toolCalls.ts";
import { scriptedRuntime } from "../helpers/scripted.ts";

const TOOLS = [
  {
    name: "get_verse",
    description: "Gets a verse of the King James Bible.",
    parameters: { type: "object", properties: { book: { type: "string" } } },
    strict: null,
  },
];

/** A tool round trip as OpenAI clients send it. */
const MESSAGES: ChatMessage[] = [
  { role: "developer", content: "Be brief." },
  {
    role: "user",
    content: [
      { type: "text", text: "Quote " },
      { type: "text", text: "Ruth 1:16." },
    ],
  },
  {
    role: "assistant",
    content: null,
    tool_calls: [
      { id: "call_1", type: "function", function: { name: "get_verse", arguments: '{"book": "Ruth"}' } },
    ],
  },
  { role: "tool", content: "Whither thou goest", tool_call_id: "call_1" },
];

const refused = (fn: () => unknown, param: string) =>
  assert.throws(
    fn,
    (e: unknown) => e instanceof SluiceError && e.code === "invalid_request" && e.param === param,
  );

function textOf(engine: Engine, tokens: readonly number[]): string {
  const { vocabulary } = engine.info;
  return new TextDecoder().decode(Uint8Array.from(tokens.flatMap((t) => [...vocabulary.bytesOf(t)])));
}

test("toTurn: OpenAI's message as a template turn", () => {
  assert.deepEqual(MESSAGES.map(toTurn), [
    { role: "system", content: "Be brief." },
    { role: "user", content: "Quote Ruth 1:16." },
    {
      role: "assistant",
      content: "",
      toolCalls: [{ id: "call_1", name: "get_verse", arguments: '{"book": "Ruth"}' }],
    },
    { role: "tool", content: "Whither thou goest", toolCallId: "call_1" },
  ]);
  assert.deepEqual(toTurn({ role: "user", content: "Hi", name: "ruth" }), {
    role: "user",
    content: "Hi",
    name: "ruth",
  });
});

describe("the bundled chat model: its template, with Hermes tool calls", () => {
  let engine: LlamaEngine;
  before(async () => {
    engine = await LlamaEngine.create({
      model: BUNDLED_CHAT_MODEL_PATH,
      slots: 1,
      threads: 1,
      contextSize: 1024,
    });
  });
  after(async () => {
    await engine.close();
  });

  test("toolCalls is the Hermes format; messages and tools render through the template", () => {
    const chat = createChatFormatter(engine);
    assert.equal(chat.kind, "template");
    assert.equal(chat.toolCalls, HERMES_TOOL_CALLS);
    const tools = TOOLS;
    const prompt = chat.format(MESSAGES, { tools });
    assert.deepEqual(prompt, engine.chatTemplate()!.render(MESSAGES.map(toTurn), { tools }));
    const text = textOf(engine, prompt.tokens);
    assert.ok(text.includes('<tools>\n{"name": "get_verse", "description": "Gets a verse'), text);
    assert.ok(text.includes("<tool_response>\nWhither thou goest\n</tool_response>"), text);
  });

  test("continueFinal passes to the template", () => {
    const chat = createChatFormatter(engine);
    const messages: ChatMessage[] = [
      { role: "user", content: "Who made the heaven?" },
      { role: "assistant", content: "In the" },
    ];
    const continued = textOf(engine, chat.format(messages, { continueFinal: true }).tokens);
    assert.ok(continued.endsWith("<|im_start|>assistant\nIn the"), continued);
    assert.ok(
      textOf(engine, chat.format(messages).tokens).endsWith("In the<|im_end|>\n<|im_start|>assistant\n"),
    );
  });

  test("a template that never reads tools has no tool support: tools are refused", () => {
    const chat = createChatFormatter(
      engine,
      "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}<|im_start|>assistant\n",
    );
    assert.equal(chat.kind, "template");
    assert.equal(chat.toolCalls, undefined);
    refused(() => chat.format(MESSAGES, { tools: TOOLS }), "tools");
    assert.ok(chat.format(MESSAGES, { tools: [] }).tokens.length > 0, "no tools is fine");
  });
});

describe("fallbacks: no tool support, tool turns as text, continueFinal", () => {
  let engine: LlamaEngine;
  before(async () => {
    engine = await LlamaEngine.create({ model: BUNDLED_MODEL_PATH, slots: 1, threads: 1, contextSize: 512 });
  });
  after(async () => {
    await engine.close();
  });

  test("ChatML: tool calls in Hermes tags and tool results as text; tools refused", () => {
    const chat = createChatFormatter(engine);
    assert.equal(chat.kind, "chatml");
    assert.equal(chat.toolCalls, undefined);
    const prompt = chat.format(MESSAGES);
    assert.equal(
      textOf(engine, prompt.tokens.slice(1)),
      "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nQuote Ruth 1:16.<|im_end|>\n" +
        '<|im_start|>assistant\n<tool_call>\n{"name": "get_verse", "arguments": {"book": "Ruth"}}\n</tool_call><|im_end|>\n' +
        "<|im_start|>tool\nWhither thou goest<|im_end|>\n<|im_start|>assistant\n",
    );
    const [start] = engine.tokenize("<|im_start|>", { special: true });
    assert.equal(prompt.tokens.filter((t) => t === start).length, 5);
    refused(() => chat.format(MESSAGES, { tools: TOOLS }), "tools");
  });

  test("ChatML continueFinal: the open assistant turn and its text, no end marker", () => {
    const chat = createChatFormatter(engine);
    const question: ChatMessage = { role: "user", content: "Who made the heaven?" };
    const open = chat.format([question]).tokens;
    const continued = chat.format([question, { role: "assistant", content: "In the" }], {
      continueFinal: true,
    });
    assert.deepEqual(continued.tokens.slice(0, open.length), open);
    assert.equal(textOf(engine, continued.tokens.slice(open.length)), "In the");
    const calling = MESSAGES[2]!;
    refused(() => chat.format([question, calling], { continueFinal: true }), "messages");
  });

  test("plain: continueFinal writes the assistant's text after its name; tool turns are lines", async () => {
    const scripted = await scriptedRuntime();
    try {
      const chat = createChatFormatter(scripted.engine);
      assert.equal(chat.kind, "plain");
      assert.equal(chat.toolCalls, undefined);
      const vocabulary = scripted.engine.info.vocabulary;
      const text = (tokens: number[]) =>
        new TextDecoder().decode(Uint8Array.from(tokens.slice(1).flatMap((t) => [...vocabulary.bytesOf(t)])));
      const messages: ChatMessage[] = [
        { role: "user", content: "Hi" },
        { role: "assistant", content: "In the" },
      ];
      assert.equal(
        text(chat.format(messages, { continueFinal: true }).tokens),
        "user: Hi\nassistant: In the",
      );
      assert.equal(text(chat.format(messages).tokens), "user: Hi\nassistant: In the\nassistant:");
      assert.equal(
        text(chat.format(MESSAGES.slice(2)).tokens),
        'assistant: <tool_call>\n{"name": "get_verse", "arguments": {"book": "Ruth"}}\n</tool_call>\n' +
          "tool: Whither thou goest\nassistant:",
      );
      refused(() => chat.format(MESSAGES, { tools: TOOLS }), "tools");
    } finally {
      await scripted.runtime.close();
    }
  });
});
