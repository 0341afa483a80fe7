import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import OpenAI from "openai";
import { BUNDLED_CHAT_MODEL_PATH } from "../../src/engine/modelPath.ts";
import { type ModelServer, serveModel } from "./client.ts";

// Functions without parameters, as SDKs declare them (`parameters: {}` or none), on the bundled chat model.
let real: ModelServer;

before(async () => {
  real = await serveModel({ model: BUNDLED_CHAT_MODEL_PATH, contextSize: 1024 });
});
after(() => real.close());

const ask = (parameters: Record<string, unknown> | undefined) =>
  real.client.chat.completions.create({
    model: "m",
    messages: [{ role: "user", content: "Hello." }],
    tools: [{ type: "function", function: { name: "ping", ...(parameters ? { parameters } : {}) } }],
    tool_choice: "required",
    temperature: 0,
    max_completion_tokens: 60,
  });

test("tool_choice required with parameters {} or none ends in a call whose arguments are an object", async () => {
  for (const parameters of [{}, undefined, { properties: {} }]) {
    const response = await ask(parameters);
    const [choice] = response.choices;
    assert.equal(choice?.finish_reason, "tool_calls", JSON.stringify(choice));
    const call = choice!.message
      .tool_calls![0] as OpenAI.Chat.Completions.ChatCompletionMessageFunctionToolCall;
    assert.equal(call.function.name, "ping");
    assert.deepEqual(JSON.parse(call.function.arguments), {});
  }
});

test("parameters that describe something other than an object are a 400 naming the function", async () => {
  await assert.rejects(ask({ type: "string" }), (error: unknown) => {
    assert.ok(error instanceof OpenAI.APIError);
    assert.equal(error.status, 400);
    assert.match(error.message, /function ping .*JSON object/);
    return true;
  });
});
