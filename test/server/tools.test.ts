import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Ajv } from "ajv";
import type OpenAI from "openai";
import { BUNDLED_CHAT_MODEL_PATH } from "../../src/engine/modelPath.ts";
import type { Runtime } from "../../src/runtime/Runtime.ts";
import { VERSE_FUNCTION_TOOLS } from "../helpers/tools.ts";
import {
  cancelsWithinOneStep,
  Ends,
  idle,
  type ModelServer,
  post,
  type Served,
  type SseEvent,
  send,
  serveModel,
} from "./client.ts";

// Tool calls through /v1/chat/completions on the bundled chat model (Hermes <tool_call> tags in its template),
// through the official client, greedy.
type Tool = OpenAI.Chat.Completions.ChatCompletionFunctionTool;
type Message = OpenAI.Chat.Completions.ChatCompletionMessageParam;

const TOOLS: Tool[] = VERSE_FUNCTION_TOOLS;

const QUOTE: Message[] = [{ role: "user", content: "Quote John 3:16." }];
const HELLO: Message[] = [{ role: "user", content: "Hello." }];
const ajv = new Ajv({ strict: false });

/** Every call names an offered function and its arguments parse and validate against its parameters. */
function assertValid(calls: readonly OpenAI.Chat.Completions.ChatCompletionMessageToolCall[]): void {
  assert.ok(calls.length > 0, "no call");
  for (const call of calls) {
    assert.equal(call.type, "function");
    assert.match(call.id, /^call_[0-9a-f]{24}$/);
    const fn = (call as OpenAI.Chat.Completions.ChatCompletionMessageFunctionToolCall).function;
    const tool = TOOLS.find((t) => t.function.name === fn.name);
    assert.ok(tool, `a known function: ${fn.name}`);
    const validate = ajv.compile(tool.function.parameters!);
    assert.ok(validate(JSON.parse(fn.arguments)), `${ajv.errorsText(validate.errors)}: ${fn.arguments}`);
  }
}

function functionOf(call: OpenAI.Chat.Completions.ChatCompletionMessageToolCall) {
  return (call as OpenAI.Chat.Completions.ChatCompletionMessageFunctionToolCall).function;
}

/** A streamed choice put back together from its chunks, checking OpenAI's order on the way. */
interface StreamedChoice {
  content: string;
  calls: { id: string; name: string; arguments: string }[];
  finishes: string[];
}

function collect(
  chunks: readonly OpenAI.Chat.Completions.ChatCompletionChunk[],
): Map<number, StreamedChoice> {
  const choices = new Map<number, StreamedChoice>();
  for (const chunk of chunks) {
    for (const choice of chunk.choices) {
      let out = choices.get(choice.index);
      if (out === undefined) choices.set(choice.index, (out = { content: "", calls: [], finishes: [] }));
      out.content += choice.delta.content ?? "";
      if (choice.finish_reason) out.finishes.push(choice.finish_reason);
      for (const piece of choice.delta.tool_calls ?? []) {
        if (piece.id !== undefined) {
          // The first delta of a call: its index (the next one), id, type and name, no arguments yet.
          assert.equal(piece.index, out.calls.length, "calls are announced in index order");
          assert.equal(piece.type, "function");
          assert.equal(piece.function?.arguments, "");
          out.calls.push({ id: piece.id, name: piece.function!.name!, arguments: "" });
        } else {
          const call = out.calls[piece.index];
          assert.ok(call, `a fragment of call ${piece.index}, announced before`);
          assert.equal(piece.function?.name, undefined, "fragments carry no name");
          call.arguments += piece.function!.arguments!;
        }
      }
    }
  }
  return choices;
}

describe("tool calls through /v1/chat/completions on the chat model", () => {
  let runtime: Runtime;
  let served: Served;
  let client: OpenAI;
  let ends: Ends;

  let real: ModelServer;
  before(async () => {
    real = await serveModel({ model: BUNDLED_CHAT_MODEL_PATH, contextSize: 1024 });
    ({ runtime, served, client } = real);
    ends = new Ends(runtime);
  });
  after(() => real.close());

  const create = (body: Partial<OpenAI.Chat.Completions.ChatCompletionCreateParamsNonStreaming>) =>
    client.chat.completions.create({
      model: "m",
      messages: QUOTE,
      tools: TOOLS,
      temperature: 0,
      max_completion_tokens: 120,
      ...body,
    });
  const streamed = async (body: Partial<OpenAI.Chat.Completions.ChatCompletionCreateParamsStreaming>) => {
    const stream = await client.chat.completions.create({
      model: "m",
      messages: QUOTE,
      tools: TOOLS,
      temperature: 0,
      max_completion_tokens: 120,
      ...body,
      stream: true,
    });
    const chunks: OpenAI.Chat.Completions.ChatCompletionChunk[] = [];
    for await (const chunk of stream) chunks.push(chunk);
    return chunks;
  };

  test("a verse asked for with tools offered: a get_verse call, arguments valid, content null, tool_calls", async () => {
    const answer = await create({});
    const [choice] = answer.choices;
    assert.equal(choice!.finish_reason, "tool_calls");
    assert.equal(choice!.message.content, null);
    const calls = choice!.message.tool_calls!;
    assert.equal(calls.length, 1, JSON.stringify(calls));
    assert.equal(functionOf(calls[0]!).name, "get_verse");
    assertValid(calls);
  });

  test("streamed: id and name first, then argument fragments that add up to the non-streamed call", async () => {
    const whole = await create({});
    const chunks = await streamed({});
    const choice = collect(chunks).get(0)!;
    assert.equal(choice.content, "", "no content outside the call");
    assert.deepEqual(choice.finishes, ["tool_calls"]);
    assert.equal(choice.calls.length, 1);
    const [call] = choice.calls;
    assert.match(call!.id, /^call_[0-9a-f]{24}$/);
    assert.equal(call!.name, "get_verse");
    const expected = functionOf(whole.choices[0]!.message.tool_calls![0]!);
    assert.deepEqual(JSON.parse(call!.arguments), JSON.parse(expected.arguments));
    assert.ok(
      chunks.filter((c) => c.choices[0]?.delta.tool_calls).length > 2,
      "the arguments came in several fragments",
    );
    // The client's own stream helper reads the same message.
    const final = await client.chat.completions
      .stream({ model: "m", messages: QUOTE, tools: TOOLS, temperature: 0, max_completion_tokens: 120 })
      .finalChatCompletion();
    assert.equal(final.choices[0]!.finish_reason, "tool_calls");
    assert.deepEqual(
      JSON.parse(functionOf(final.choices[0]!.message.tool_calls![0]!).arguments),
      JSON.parse(expected.arguments),
    );
  });

  test("Hello. with tools offered: plain content, no call", async () => {
    const answer = await create({ messages: HELLO });
    const [choice] = answer.choices;
    assert.equal(choice!.finish_reason, "stop");
    assert.equal(choice!.message.tool_calls, undefined);
    assert.ok(choice!.message.content && choice!.message.content.length > 0);
    const chunks = await streamed({ messages: HELLO });
    const out = collect(chunks).get(0)!;
    assert.equal(out.content, choice!.message.content);
    assert.deepEqual(out.calls, []);
    assert.deepEqual(out.finishes, ["stop"]);
  });

  test('tool_choice "required" and a named function force a call; not parallel: exactly one', async () => {
    const required = await create({ messages: HELLO, tool_choice: "required", parallel_tool_calls: false });
    assert.equal(required.choices[0]!.finish_reason, "tool_calls");
    assert.equal(required.choices[0]!.message.tool_calls!.length, 1);
    assertValid(required.choices[0]!.message.tool_calls!);
    const named = await create({ tool_choice: { type: "function", function: { name: "count_verses" } } });
    const calls = named.choices[0]!.message.tool_calls!;
    assert.deepEqual(
      calls.map((call) => functionOf(call).name),
      calls.map(() => "count_verses"),
    );
    assertValid(calls);
    const streamedOne = collect(
      await streamed({ messages: HELLO, tool_choice: "required", parallel_tool_calls: false }),
    ).get(0)!;
    assert.equal(streamedOne.calls.length, 1);
    assert.deepEqual(streamedOne.finishes, ["tool_calls"]);
  });

  test("a round trip: the call and its result rendered through the template, then an answer in content", async () => {
    const first = await create({});
    const call = first.choices[0]!.message.tool_calls![0]!;
    const messages: Message[] = [
      ...QUOTE,
      { role: "assistant", content: null, tool_calls: [call] },
      {
        role: "tool",
        tool_call_id: call.id,
        content: "For God so loved the world, that he gave his only begotten Son.",
      },
    ];
    const answer = await create({ messages });
    const [choice] = answer.choices;
    assert.equal(choice!.finish_reason, "stop");
    assert.equal(choice!.message.tool_calls, undefined);
    assert.ok(choice!.message.content && choice!.message.content.length > 0);
    // The prompt is /apply-template's for the same fields: the call and the tool's answer in it.
    const template = await send(served.url, "/apply-template", {
      body: { messages, tools: TOOLS },
    });
    assert.equal(template.status, 200, template.text);
    const prompt: string = template.json.prompt;
    assert.match(prompt, /<tool_call>\n\{"name": "get_verse", "arguments": \{/);
    assert.match(prompt, /<tool_response>\nFor God so loved the world/);
    assert.match(prompt, /"name": "count_verses"/, "the tools are listed");
    const tokens = await send(served.url, "/tokenize", {
      body: { content: prompt, add_special: true, parse_special: true },
    });
    assert.equal(answer.usage!.prompt_tokens, tokens.json.tokens.length);
  });

  test('tool_choice "none": the tools are rendered, nothing is parsed or constrained: content, stop', async () => {
    const auto = await create({ max_completion_tokens: 1 });
    const none = await create({ tool_choice: "none" });
    const [choice] = none.choices;
    assert.equal(none.usage!.prompt_tokens, auto.usage!.prompt_tokens, "the same prompt, tools included");
    assert.equal(choice!.message.tool_calls, undefined);
    assert.equal(choice!.finish_reason, "stop");
    // This model still writes a call; it stays text, as llama-server leaves it.
    assert.ok(choice!.message.content && choice!.message.content.length > 0);
    const noTools = await create({ tools: undefined, max_completion_tokens: 1 });
    assert.ok(noTools.usage!.prompt_tokens < none.usage!.prompt_tokens);
  });

  test("n = 2 with tools: a parser per choice, each call with its own id, streamed and not", async () => {
    const answer = await create({ n: 2 });
    assert.equal(answer.choices.length, 2);
    for (const choice of answer.choices) {
      assert.equal(choice.finish_reason, "tool_calls");
      assertValid(choice.message.tool_calls!);
    }
    const ids = answer.choices.flatMap((c) => c.message.tool_calls!.map((call) => call.id));
    assert.equal(new Set(ids).size, ids.length, "ids are unique across choices");
    const choices = collect(await streamed({ n: 2 }));
    assert.deepEqual([...choices.keys()].sort(), [0, 1]);
    for (const [index, choice] of choices) {
      assert.deepEqual(choice.finishes, ["tool_calls"], `choice ${index}`);
      assert.equal(choice.calls.length, 1);
      // Greedy: both choices write the same call.
      assert.deepEqual(
        JSON.parse(choice.calls[0]!.arguments),
        JSON.parse(functionOf(answer.choices[0]!.message.tool_calls![0]!).arguments),
      );
    }
    assert.notEqual(choices.get(0)!.calls[0]!.id, choices.get(1)!.calls[0]!.id);
  });

  test("logprobs with tools: every generated token is listed, streamed the same as whole", async () => {
    const whole = await create({ logprobs: true, top_logprobs: 2 });
    const entries = whole.choices[0]!.logprobs!.content!;
    const text = Buffer.from(entries.flatMap((entry) => entry.bytes!)).toString("utf8");
    const args = functionOf(whole.choices[0]!.message.tool_calls![0]!).arguments;
    assert.ok(text.startsWith("<tool_call>"), text);
    assert.ok(text.includes(args), "the call's tokens are listed");
    assert.ok(entries.every((entry) => entry.top_logprobs.length === 2));
    const chunks = await streamed({ logprobs: true, top_logprobs: 2 });
    const streamedEntries = chunks.flatMap((chunk) => chunk.choices[0]?.logprobs?.content ?? []);
    assert.deepEqual(
      streamedEntries.map((entry) => entry.token),
      entries.map((entry) => entry.token),
    );
    // A slot's cached prompt prefix changes the float sums a little, not the tokens.
    streamedEntries.forEach((entry, i) => {
      assert.ok(
        Math.abs(entry.logprob - entries[i]!.logprob) < 0.01,
        `${entry.logprob} vs ${entries[i]!.logprob}`,
      );
    });
  });

  test("DELETE in the middle of a call: one cancelled finish chunk, the slot free within one step", async () => {
    let deleted: Promise<number> | undefined;
    const stream = post(
      served.url,
      "/v1/chat/completions",
      { messages: QUOTE, tools: TOOLS, temperature: 0, max_tokens: 120, stream: true },
      {
        onEvent: (event: SseEvent) => {
          if (deleted || event === "[DONE]" || !event.choices[0]?.delta?.tool_calls) return;
          deleted = fetch(`${served.url}/v1/requests/${event.id}`, { method: "DELETE" }).then(
            (r) => r.status,
          );
        },
      },
    );
    await stream.done;
    assert.equal(await deleted, 200);
    const events = stream.events.filter((e: SseEvent) => e !== "[DONE]" && e.choices.length > 0);
    const finishes = events.filter((e: SseEvent) => e.choices[0].finish_reason !== null);
    assert.equal(finishes.length, 1);
    assert.equal(finishes[0].choices[0].finish_reason, "cancelled");
    assert.equal(stream.events.at(-1), "[DONE]");
    const id = String((await stream.head).headers["x-request-id"]);
    const record = await ends.of(id);
    assert.equal(record.reason, "cancelled");
    assert.ok(record.cancel && record.cancel.stepsToFree <= 1, JSON.stringify(record.cancel));
    const m = await idle(served.url);
    const { count, withinOne } = cancelsWithinOneStep(m);
    assert.equal(withinOne, count);
  });

  test("a client that goes away in the middle of a call frees the slot within one step", async () => {
    const stream = post(
      served.url,
      "/v1/chat/completions",
      { messages: QUOTE, tools: TOOLS, temperature: 0, max_tokens: 120, stream: true },
      {
        onEvent: (event: SseEvent, self) => {
          if (event !== "[DONE]" && event.choices[0]?.delta?.tool_calls) self.destroy();
        },
      },
    );
    const id = String((await stream.head).headers["x-request-id"]);
    const record = await ends.of(id);
    assert.equal(record.reason, "cancelled");
    assert.ok(record.cancel && record.cancel.stepsToFree <= 1, JSON.stringify(record.cancel));
    await idle(served.url);
  });

  test("refusals: a named function not in tools, tool_choice without tools, two constraints, legacy fields, a schema the grammar cannot enforce", async () => {
    const cases: [Record<string, unknown>, string, RegExp][] = [
      [
        { tools: TOOLS, tool_choice: { type: "function", function: { name: "smite" } } },
        "tool_choice.function.name",
        /"smite", which is not in tools \(get_verse, count_verses\)/,
      ],
      [{ tool_choice: "required" }, "tool_choice", /needs tools/],
      [{ tools: TOOLS, response_format: { type: "json_object" } }, "response_format", /combined with tools/],
      [{ tools: [TOOLS[0], TOOLS[0]] }, "tools.1.function.name", /offered twice/],
      [
        { tools: [{ type: "function", function: { name: "get verse" } }] },
        "tools.0.function.name",
        /letters/,
      ],
      [{ tool_choice: "sometimes" }, "tool_choice", /"none", "auto", "required" or \{"type": "function"/],
      [{ functions: [TOOLS[0]!.function] }, "functions", /deprecated form of tools: send tools/],
      [{ function_call: "auto" }, "function_call", /send tool_choice/],
      [
        {
          tools: [
            {
              type: "function",
              function: {
                name: "find",
                parameters: { type: "object", properties: { q: { type: "string", pattern: "^a" } } },
              },
            },
          ],
        },
        "tools",
        /function find: .*"pattern"/,
      ],
    ];
    for (const [extra, param, message] of cases) {
      const answer = await send(served.url, "/v1/chat/completions", {
        body: { messages: QUOTE, max_tokens: 4, ...extra },
      });
      assert.equal(answer.status, 400, `${JSON.stringify(extra)}: ${answer.text}`);
      assert.equal(answer.json.error.param, param, answer.json.error.message);
      assert.match(answer.json.error.message, message);
    }
    // With tool_choice none, a response_format is the only constraint.
    const json = await send(served.url, "/v1/chat/completions", {
      body: {
        messages: QUOTE,
        tools: TOOLS,
        tool_choice: "none",
        response_format: { type: "json_object" },
        max_tokens: 30,
        temperature: 0,
      },
    });
    assert.equal(json.status, 200, json.text);
  });

  test("/apply-template takes tools and the continuation fields, as the chat route renders them", async () => {
    const prefill: Message[] = [...QUOTE, { role: "assistant", content: "For God" }];
    const cases: [Record<string, unknown>, (prompt: string) => void][] = [
      [{ messages: QUOTE }, (p) => assert.doesNotMatch(p, /get_verse/)],
      [{ messages: QUOTE, tools: TOOLS }, (p) => assert.match(p, /<tools>[\s\S]*get_verse[\s\S]*<\/tools>/)],
      [{ messages: prefill }, (p) => assert.match(p, /For God$/)],
      [
        { messages: prefill, add_generation_prompt: true },
        (p) => assert.match(p, /For God<\|im_end\|>\n<\|im_start\|>assistant\n$/),
      ],
    ];
    for (const [body, check] of cases) {
      const template = await send(served.url, "/apply-template", { body });
      assert.equal(template.status, 200, template.text);
      check(template.json.prompt);
      const { messages, ...fields } = body;
      const chat = await send(served.url, "/v1/chat/completions", {
        body: { messages, ...fields, max_tokens: 1, temperature: 0 },
      });
      const tokens = await send(served.url, "/tokenize", {
        body: { content: template.json.prompt, add_special: true },
      });
      assert.equal(chat.json.usage.prompt_tokens, tokens.json.tokens.length, JSON.stringify(body));
    }
    const refused = await send(served.url, "/apply-template", {
      body: { messages: QUOTE, continue_final_message: true },
    });
    assert.equal(refused.status, 400);
    assert.equal(refused.json.error.param, "continue_final_message");
  });
});
