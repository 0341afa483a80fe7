import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type OpenAI from "openai";
import { BUNDLED_CHAT_MODEL_PATH, BUNDLED_MODEL_PATH } from "../../src/engine/modelPath.ts";
import type { Runtime } from "../../src/runtime/Runtime.ts";
import { createChatFormatter } from "../../src/server/chat.ts";
import type { ChatMessage } from "../../src/server/schemas.ts";
import { type ModelServer, type Served, send, serveModel } from "./client.ts";

// Assistant prefill: a trailing assistant message is continued, not answered. Checked against the prompt
// the chat formatter renders for a continuation, sent as token ids to /v1/completions (greedy both ways).
const MESSAGES: ChatMessage[] = [
  { role: "user", content: "How does the Bible begin?" },
  { role: "assistant", content: "In the beginning God" },
];

for (const [model, path] of [
  ["the bundled model (ChatML)", BUNDLED_MODEL_PATH],
  ["the chat model (its own template)", BUNDLED_CHAT_MODEL_PATH],
] as const) {
  describe(`assistant prefill on ${model}`, () => {
    let runtime: Runtime;
    let served: Served;
    let client: OpenAI;

    let real: ModelServer;
    before(async () => {
      real = await serveModel({ model: path });
      ({ runtime, served, client } = real);
    });
    after(() => real.close());

    test("a trailing assistant message is continued: the same text as its continuation prompt", async () => {
      const chat = await client.chat.completions.create({
        model: "m",
        messages: MESSAGES as OpenAI.Chat.Completions.ChatCompletionMessageParam[],
        max_completion_tokens: 12,
        temperature: 0,
      });
      const expected = createChatFormatter(runtime.engine).format(MESSAGES, { continueFinal: true });
      const completion = await send(served.url, "/v1/completions", {
        body: {
          prompt: expected.tokens,
          stop_token_ids: expected.stopTokenIds,
          ...(expected.stop.length > 0 ? { stop: expected.stop } : {}),
          max_tokens: 12,
          temperature: 0,
        },
      });
      assert.equal(chat.usage!.prompt_tokens, expected.tokens.length);
      assert.equal(chat.choices[0]!.message.content, completion.json.choices[0].text);
    });

    test("add_generation_prompt: true or continue_final_message: false opens a new turn instead", async () => {
      const newTurn = createChatFormatter(runtime.engine).format(MESSAGES);
      const continued = createChatFormatter(runtime.engine).format(MESSAGES, { continueFinal: true });
      assert.ok(newTurn.tokens.length > continued.tokens.length);
      for (const fields of [
        { add_generation_prompt: true },
        { continue_final_message: false },
        { continue_final_message: false, add_generation_prompt: true },
      ]) {
        const answer = await send(served.url, "/v1/chat/completions", {
          body: { messages: MESSAGES, max_tokens: 2, temperature: 0, ...fields },
        });
        assert.equal(answer.status, 200, answer.text);
        assert.equal(answer.json.usage.prompt_tokens, newTurn.tokens.length, JSON.stringify(fields));
      }
      const explicit = await send(served.url, "/v1/chat/completions", {
        body: {
          messages: MESSAGES,
          max_tokens: 2,
          temperature: 0,
          continue_final_message: true,
          add_generation_prompt: false,
        },
      });
      assert.equal(explicit.json.usage.prompt_tokens, continued.tokens.length);
    });

    test("refused: continuing a message that is not the assistant's, contradictory fields", async () => {
      const user = [{ role: "user", content: "Speak." }];
      const cases: [Record<string, unknown>, string, RegExp][] = [
        [
          { messages: user, continue_final_message: true },
          "continue_final_message",
          /must be the assistant's; it is the user's/,
        ],
        [{ messages: user, add_generation_prompt: false }, "add_generation_prompt", /continue_final_message/],
        [
          { messages: MESSAGES, continue_final_message: true, add_generation_prompt: true },
          "add_generation_prompt",
          /cannot be true with continue_final_message/,
        ],
      ];
      for (const [body, param, message] of cases) {
        const answer = await send(served.url, "/v1/chat/completions", { body: { max_tokens: 2, ...body } });
        assert.equal(answer.status, 400, JSON.stringify(body));
        assert.equal(answer.json.error.param, param, answer.json.error.message);
        assert.match(answer.json.error.message, message);
      }
    });
  });
}
