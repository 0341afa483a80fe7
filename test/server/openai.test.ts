import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import OpenAI from "openai";
import { Runtime } from "../../src/runtime/Runtime.ts";
import { cancelsWithinOneStep, Ends, idle, type Served, serve } from "./client.ts";

// Real engine: the bundled model through node-llama-cpp, one thread (CI machines have two cores).
const PROMPT = "Genesis 1\n1 In the beginning";
const MODEL = "kjv-tiny.gguf";

let runtime: Runtime;
let served: Served;
let ends: Ends;
let client: OpenAI;

describe("the official openai client (v6) against the server", () => {
  before(async () => {
    runtime = await Runtime.create({ slots: 4, contextSize: 512, threads: 1 });
    ends = new Ends(runtime);
    served = await serve(runtime, { apiKey: "sk-local", strictModelName: true });
    client = new OpenAI({ baseURL: `${served.url}/v1`, apiKey: "sk-local", maxRetries: 0 });
  });
  after(async () => {
    await served.server.close();
    await runtime.close();
  });

  test("models.list and a non-streaming completion and chat", async () => {
    const models = await client.models.list();
    assert.deepEqual(
      models.data.map((m) => m.id),
      [MODEL],
    );
    const completion = await client.completions.create({
      model: MODEL,
      prompt: PROMPT,
      max_tokens: 12,
      temperature: 0,
    });
    assert.equal(completion.object, "text_completion");
    assert.ok(completion.choices[0]!.text.length > 0, "some text");
    assert.equal(completion.usage?.completion_tokens, 12);
    const chat = await client.chat.completions.create({
      model: MODEL,
      messages: [{ role: "user", content: "Who made the earth?" }],
      max_completion_tokens: 8,
    });
    assert.equal(chat.choices[0]!.message.role, "assistant");
    assert.equal(typeof chat.choices[0]!.message.content, "string");
  });

  test("streaming completion: text deltas, one finish_reason, the same id as the header", async () => {
    const { data: stream, response } = await client.completions
      .create({ model: MODEL, prompt: PROMPT, max_tokens: 20, temperature: 0, stream: true })
      .withResponse();
    const id = response.headers.get("x-request-id");
    let text = "";
    const reasons: (string | null)[] = [];
    for await (const chunk of stream) {
      assert.equal(chunk.id, id);
      text += chunk.choices[0]?.text ?? "";
      reasons.push(chunk.choices[0]?.finish_reason ?? null);
    }
    assert.equal(reasons.filter((r) => r !== null).length, 1);
    assert.ok(["length", "stop"].includes(reasons.at(-1)!), `ends with ${reasons.at(-1)}`);
    const whole = await client.completions.create({
      model: MODEL,
      prompt: PROMPT,
      max_tokens: 20,
      temperature: 0,
    });
    assert.equal(text, whole.choices[0]!.text);
  });

  test("streaming chat with include_usage: role, content, finish, usage", async () => {
    const stream = await client.chat.completions.create({
      model: MODEL,
      messages: [
        { role: "system", content: "Speak as the King James Bible." },
        { role: "user", content: "Tell of the flood." },
      ],
      max_tokens: 16,
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    assert.equal(chunks[0]!.choices[0]!.delta.role, "assistant");
    const finishes = chunks.filter((c) => c.choices[0]?.finish_reason);
    assert.equal(finishes.length, 1);
    const usage = chunks.at(-1)!.usage;
    assert.ok(usage, "a usage chunk ends the stream");
    assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens);
    const content = chunks.map((c) => c.choices[0]?.delta.content ?? "").join("");
    assert.ok(content.length > 0, "some content");
  });

  test("aborting the client's stream cancels the generation; the slot is free within one step", async () => {
    for (const how of ["AbortSignal", "stream.controller.abort()"] as const) {
      const controller = new AbortController();
      const { data: stream, response } = await client.completions
        .create({ model: MODEL, prompt: PROMPT, max_tokens: 400, stream: true, ignore_eos: true } as never, {
          signal: controller.signal,
        })
        .withResponse();
      const id = response.headers.get("x-request-id")!;
      let chunks = 0;
      for await (const _ of stream as unknown as AsyncIterable<unknown>) {
        if (++chunks === 5) {
          if (how === "AbortSignal") controller.abort();
          else (stream as unknown as { controller: AbortController }).controller.abort();
        }
      }
      const record = await ends.of(id);
      assert.equal(record.reason, "cancelled", how);
      assert.ok(record.cancel && record.cancel.stepsToFree <= 1, `${how}: ${JSON.stringify(record.cancel)}`);
      assert.ok(record.completionTokens < 400, `${how}: ${record.completionTokens} tokens`);
      process.stdout.write(
        `openai client ${how}: slot freed after ${record.cancel.stepsToFree} step, ${record.cancel.msToFree.toFixed(2)} ms\n`,
      );
    }
    const m = await idle(served.url, { authorization: "Bearer sk-local" });
    const { count, withinOne } = cancelsWithinOneStep(m);
    assert.equal(count, 2);
    assert.equal(withinOne, 2);
  });

  test("errors surface as the client's typed errors", async () => {
    await assert.rejects(
      client.completions.create({ model: "gpt-4o", prompt: "x" }),
      (e: unknown) =>
        e instanceof OpenAI.NotFoundError && (e as { code?: string }).code === "model_not_found",
    );
    await assert.rejects(
      client.completions.create({ model: MODEL, prompt: PROMPT, max_tokens: 100_000 }),
      (e: unknown) =>
        e instanceof OpenAI.BadRequestError && (e as { code?: string }).code === "context_length_exceeded",
    );
    const anonymous = new OpenAI({ baseURL: `${served.url}/v1`, apiKey: "wrong", maxRetries: 0 });
    await assert.rejects(anonymous.models.list(), (e: unknown) => e instanceof OpenAI.AuthenticationError);
  });
});
