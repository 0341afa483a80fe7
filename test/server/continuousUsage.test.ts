import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { KJV } from "../../bench/corpus.ts";
import { Runtime } from "../../src/runtime/Runtime.ts";
import { post, type Served, type SseEvent, serve, textOf } from "./client.ts";

// Real engine: the bundled model through node-llama-cpp, one thread (CI machines have two cores).
const PROMPT = "Genesis 1\n1 In the beginning";
/** The first verses of Genesis 1, then its heading again: greedy output quotes them, so prompt lookup drafts. */
const REPEAT = `${KJV.split("\n").slice(0, 9).join("\n")}\n\nGenesis 1\n1 In`;
const CONTINUOUS = { include_usage: true, continuous_usage_stats: true };

interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

/** Every event but [DONE], in order. */
function chunksOf(events: SseEvent[]): SseEvent[] {
  assert.equal(events.at(-1), "[DONE]", "the stream ends with [DONE]");
  return events.slice(0, -1);
}

/**
 * Checks one stream of one choice with continuous usage: every chunk before the final usage chunk carries
 * `usage` for the same prompt, counts that never go down and total = prompt + completion; the finish chunk's
 * count is the final usage chunk's. Returns the chunks with choices and the final usage.
 */
function checkContinuous(events: SseEvent[]): { chunks: SseEvent[]; final: Usage } {
  const all = chunksOf(events);
  const last = all.at(-1);
  assert.deepEqual(last.choices, [], "the final usage chunk has no choices");
  const final: Usage = last.usage;
  const chunks = all.slice(0, -1);
  assert.ok(chunks.length > 1, "several chunks");
  let previous = 0;
  for (const chunk of chunks) {
    const usage: Usage = chunk.usage;
    assert.ok(usage !== null && typeof usage === "object", `usage on every chunk: ${JSON.stringify(chunk)}`);
    assert.equal(usage.prompt_tokens, final.prompt_tokens);
    assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens);
    assert.ok(usage.completion_tokens >= previous, `monotonic: ${usage.completion_tokens} after ${previous}`);
    previous = usage.completion_tokens;
  }
  const finish = chunks.at(-1);
  assert.notEqual(finish.choices[0].finish_reason, null, "the finish chunk is the last with choices");
  assert.deepEqual(finish.usage, {
    prompt_tokens: final.prompt_tokens,
    completion_tokens: final.completion_tokens,
    total_tokens: final.total_tokens,
  });
  return { chunks, final };
}

describe("stream_options.continuous_usage_stats over a real socket with the bundled model", () => {
  let runtime: Runtime;
  let served: Served;
  before(async () => {
    runtime = await Runtime.create({ slots: 2, contextSize: 512, threads: 1 });
    served = await serve(runtime);
  });
  after(async () => {
    await served.server.close();
    await runtime.close();
  });

  test("completions: usage on every chunk, monotonic, the last equal to the final usage", async () => {
    const stream = post(served.url, "/v1/completions", {
      prompt: PROMPT,
      max_tokens: 16,
      temperature: 0,
      ignore_eos: true,
      stream: true,
      stream_options: CONTINUOUS,
    });
    await stream.done;
    const { chunks, final } = checkContinuous(stream.events);
    assert.equal(final.completion_tokens, 16);
    // Without streaming, the same prompt counts the same.
    const whole = await fetch(`${served.url}/v1/completions`, {
      method: "POST",
      body: JSON.stringify({ prompt: PROMPT, max_tokens: 1 }),
    }).then((r) => r.json());
    assert.equal(final.prompt_tokens, whole.usage.prompt_tokens);
    // One token per step without speculation: each text chunk carries one more.
    const deltas = chunks.slice(0, -1);
    assert.deepEqual(
      deltas.map((chunk) => chunk.usage.completion_tokens),
      deltas.map((_, i) => i + 1),
    );
  });

  test("completions with logprobs: each chunk's count is the log-probability entries streamed so far", async () => {
    const stream = post(served.url, "/v1/completions", {
      prompt: PROMPT,
      max_tokens: 16,
      logprobs: 1,
      ignore_eos: true,
      stream: true,
      stream_options: CONTINUOUS,
    });
    await stream.done;
    const { chunks, final } = checkContinuous(stream.events);
    let entries = 0;
    for (const chunk of chunks) {
      entries += chunk.choices[0].logprobs?.tokens.length ?? 0;
      assert.equal(chunk.usage.completion_tokens, entries);
    }
    assert.equal(final.completion_tokens, 16);
  });

  test("completions with a token-id prompt and echo: the echo counts no completion tokens", async () => {
    const ids = [1, 2, 3, 4, 5].map((i) => i + 100);
    const stream = post(served.url, "/v1/completions", {
      prompt: ids,
      echo: true,
      max_tokens: 6,
      ignore_eos: true,
      stream: true,
      stream_options: CONTINUOUS,
    });
    await stream.done;
    const { chunks, final } = checkContinuous(stream.events);
    assert.equal(final.prompt_tokens, ids.length);
    assert.equal(chunks[0].usage.completion_tokens, 0, "the echoed prompt");
    assert.equal(final.completion_tokens, 6);
  });

  test("chat: the role chunk counts 0, deltas count up, the finish chunk equals the final usage", async () => {
    const stream = post(served.url, "/v1/chat/completions", {
      messages: [{ role: "user", content: "Who created the heaven?" }],
      max_tokens: 12,
      temperature: 0,
      ignore_eos: true,
      stream: true,
      stream_options: CONTINUOUS,
    });
    await stream.done;
    const { chunks, final } = checkContinuous(stream.events);
    assert.equal(chunks[0].choices[0].delta.role, "assistant");
    assert.equal(chunks[0].usage.completion_tokens, 0);
    assert.equal(final.completion_tokens, 12);
    assert.ok(final.prompt_tokens > 5);
  });

  test("n = 2: each chunk counts its own choice (as vLLM does); the final usage sums the choices", async () => {
    const stream = post(served.url, "/v1/completions", {
      prompt: PROMPT,
      n: 2,
      max_tokens: 8,
      temperature: 1,
      seed: 7,
      ignore_eos: true,
      stream: true,
      stream_options: CONTINUOUS,
    });
    await stream.done;
    const all = chunksOf(stream.events);
    const final: Usage = all.at(-1).usage;
    assert.equal(final.completion_tokens, 16);
    const previous = [0, 0];
    const finished = [0, 0];
    for (const chunk of all.slice(0, -1)) {
      const index: number = chunk.choices[0].index;
      const usage: Usage = chunk.usage;
      assert.equal(usage.prompt_tokens, final.prompt_tokens, "the prompt once, not per choice");
      assert.ok(usage.completion_tokens >= previous[index]!);
      assert.ok(usage.completion_tokens <= 8, "a choice's own count");
      previous[index] = usage.completion_tokens;
      if (chunk.choices[0].finish_reason !== null) finished[index] = usage.completion_tokens;
    }
    assert.deepEqual(finished, [8, 8]);
  });

  test("without include_usage it is ignored, as in vLLM: no usage anywhere", async () => {
    const stream = post(served.url, "/v1/chat/completions", {
      messages: [{ role: "user", content: "Who created the heaven?" }],
      max_tokens: 4,
      stream: true,
      stream_options: { continuous_usage_stats: true },
    });
    await stream.done;
    for (const chunk of chunksOf(stream.events)) {
      assert.equal("usage" in chunk, false);
      assert.ok(chunk.choices.length > 0);
    }
  });

  test("continuous_usage_stats false: usage null on chunks, as plain include_usage", async () => {
    const stream = post(served.url, "/v1/completions", {
      prompt: PROMPT,
      max_tokens: 4,
      stream: true,
      stream_options: { include_usage: true, continuous_usage_stats: false },
    });
    await stream.done;
    const all = chunksOf(stream.events);
    for (const chunk of all.slice(0, -1)) assert.equal(chunk.usage, null);
    assert.equal(all.at(-1).usage.completion_tokens, 4);
  });

  test("a continuous_usage_stats that is not a boolean is a 400 naming it, on both routes", async () => {
    for (const [path, body] of [
      ["/v1/completions", { prompt: PROMPT }],
      ["/v1/chat/completions", { messages: [{ role: "user", content: "Hi" }] }],
    ] as const) {
      const response = await fetch(`${served.url}${path}`, {
        method: "POST",
        body: JSON.stringify({
          ...body,
          stream: true,
          stream_options: { include_usage: true, continuous_usage_stats: "yes" },
        }),
      });
      assert.equal(response.status, 400, path);
      const { error } = await response.json();
      assert.equal(error.type, "invalid_request_error");
      assert.equal(error.param, "stream_options.continuous_usage_stats", path);
      assert.match(error.message, /stream_options\.continuous_usage_stats/);
    }
  });
});

describe("continuous usage with prompt-lookup speculation: several tokens per chunk", () => {
  let runtime: Runtime;
  let served: Served;
  before(async () => {
    runtime = await Runtime.create({ slots: 2, contextSize: 512, threads: 1, drafter: "prompt-lookup" });
    served = await serve(runtime);
  });
  after(async () => {
    await served.server.close();
    await runtime.close();
  });

  test("a chunk carries more than one token, and every chunk's count is the tokens streamed so far", async () => {
    const request = { prompt: REPEAT, max_tokens: 64, temperature: 0, ignore_eos: true };
    // The greedy tokens one by one: log-probabilities turn drafting off, and greedy output is the same.
    const reference = await fetch(`${served.url}/v1/completions`, {
      method: "POST",
      body: JSON.stringify({ ...request, logprobs: 0 }),
    }).then((r) => r.json());
    const pieces: string[] = reference.choices[0].logprobs.tokens;
    assert.equal(pieces.length, 64);
    assert.equal(pieces.join(""), reference.choices[0].text);

    const stream = post(served.url, "/v1/completions", {
      ...request,
      stream: true,
      stream_options: CONTINUOUS,
    });
    await stream.done;
    const { chunks, final } = checkContinuous(stream.events);
    assert.equal(final.completion_tokens, 64);
    assert.equal(final.prompt_tokens, reference.usage.prompt_tokens);
    assert.equal(textOf(stream.events), reference.choices[0].text);
    let text = "";
    let previous = 0;
    let most = 0;
    for (const chunk of chunks) {
      text += chunk.choices[0].text;
      const count: number = chunk.usage.completion_tokens;
      // The text so far is exactly the first `count` tokens' (the passage is ASCII: no character is split).
      assert.equal(text, pieces.slice(0, count).join(""), `after ${count} tokens`);
      most = Math.max(most, count - previous);
      previous = count;
    }
    assert.ok(most > 1, `some chunk carries several tokens (most in one: ${most})`);
    assert.ok(chunks.length - 1 < 64, `fewer text chunks (${chunks.length - 1}) than tokens`);
  });
});
