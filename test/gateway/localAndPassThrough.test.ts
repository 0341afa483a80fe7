import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import OpenAI from "openai";
import { type SluiceServer as SluiceChild, startSluiceServer } from "../../bench/llamaServer.ts";
import { BUNDLED_CHAT_MODEL_PATH } from "../../src/engine/modelPath.ts";
import { createGatewayServer, type GatewayServer, UpstreamPool } from "../../src/gateway/index.ts";
import type { RequestRecord } from "../../src/runtime/RequestState.ts";
import { Runtime } from "../../src/runtime/Runtime.ts";
import { VERSE_FUNCTION_TOOLS } from "../helpers/tools.ts";
import { cancelsWithinOneStep, idle, post, scrape, textOf } from "../server/client.ts";

// One gateway over a local engine (a Runtime in this process: the bundled chat model, 2 slots, 1 thread) and
// one real `sluice serve` of the same model. Nothing scripted: the local member, the pass-through of tool
// calls, log-probabilities and n > 1, and cancellation are all checked on real engines.

const TOOLS = [VERSE_FUNCTION_TOOLS[0]!];
const ASK = [{ role: "user" as const, content: "What does John 3:16 say?" }];
const MODEL = "kjv-chat.gguf";

describe("gateway over a local engine and a Sluice upstream", () => {
  let remote: SluiceChild;
  let runtime: Runtime;
  let pool: UpstreamPool;
  let server: GatewayServer;
  let url: string;
  let client: OpenAI;
  let direct: OpenAI;
  before(async () => {
    [remote, runtime] = await Promise.all([
      startSluiceServer({
        model: BUNDLED_CHAT_MODEL_PATH,
        slots: 2,
        threads: 1,
        contextPerSlot: 1024,
        extraArgs: ["--log-level", "silent"],
      }),
      Runtime.create({ model: BUNDLED_CHAT_MODEL_PATH, slots: 2, threads: 1, contextSize: 1024 }),
    ]);
    pool = await UpstreamPool.create({
      upstreams: [remote.url],
      local: runtime,
      routing: "least_outstanding",
      healthIntervalMs: 60_000,
    });
    server = createGatewayServer(pool);
    ({ url } = await server.listen(0));
    client = new OpenAI({ baseURL: `${url}/v1`, apiKey: "none", maxRetries: 0 });
    direct = new OpenAI({ baseURL: `${remote.url}/v1`, apiKey: "none", maxRetries: 0 });
  });
  after(async () => {
    await server?.close();
    await pool?.close();
    await runtime?.close();
    await remote?.stop();
  });

  const requestsOn = () => {
    const byId = new Map(pool.snapshot().map((u) => [u.local ? "local" : "remote", u.requests]));
    return { local: byId.get("local") ?? 0, remote: byId.get("remote") ?? 0 };
  };

  test("requests land on both members; a chat on the local engine is the server's own chat", async () => {
    const before = requestsOn();
    const body = { model: MODEL, messages: ASK, max_tokens: 24, temperature: 0 };
    // Two at once under least outstanding: one each.
    const [a, b] = await Promise.all([
      client.chat.completions.create(body),
      client.chat.completions.create(body),
    ]);
    const after = requestsOn();
    assert.equal(after.local - before.local, 1);
    assert.equal(after.remote - before.remote, 1);
    // Greedy, same model: the local member renders the chat exactly as the Sluice server does.
    const own = await direct.chat.completions.create(body);
    assert.equal(a.choices[0]!.message.content, own.choices[0]!.message.content);
    assert.equal(b.choices[0]!.message.content, own.choices[0]!.message.content);
    assert.ok((own.choices[0]!.message.content ?? "").length > 0);
    // Completions too, streamed with usage.
    const stream = post(url, "/v1/completions", {
      prompt: "Genesis 1\n1 In the beginning",
      max_tokens: 12,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    await stream.done;
    assert.ok(textOf(stream.events).length > 0);
    assert.equal(stream.events.find((e) => e !== "[DONE]" && e.usage)?.usage.completion_tokens, 12);
    // The local engine's figures are in the gateway's /metrics, beside the process's and the pool's.
    const metrics = await (await fetch(`${url}/metrics`)).text();
    assert.match(metrics, /^sluice_slots_total 2$/m);
    assert.match(metrics, /^process_cpu_user_seconds_total /m);
    assert.match(metrics, /sluice_gateway_requests_total\{upstream="local",result="ok"\}/);
  });

  test("a client going away frees the local slot within one step and the remote one", async () => {
    const ends: RequestRecord[] = [];
    let localEnded!: () => void;
    const localEnd = new Promise<void>((resolve) => (localEnded = resolve));
    const off = runtime.observe((event) => {
      if (event.type !== "end") return;
      ends.push(event.record);
      localEnded();
    });
    const remoteBefore = await scrape(remote.url);
    const before = requestsOn();
    const cut = () =>
      post(
        url,
        "/v1/completions",
        { prompt: "Genesis 2\n1 Thus the heavens", max_tokens: 400, ignore_eos: true, stream: true },
        {
          onEvent: (event, s) => {
            if (event !== "[DONE]" && event.choices?.[0]?.text) s.destroy();
          },
        },
      );
    const streams = [cut(), cut()];
    await Promise.all(streams.map((s) => s.done));
    await localEnd;
    off();
    const after = requestsOn();
    assert.equal(after.local - before.local, 1);
    assert.equal(after.remote - before.remote, 1);
    const record = ends[0]!;
    assert.equal(record.reason, "cancelled");
    assert.ok(record.cancel !== undefined && record.cancel.stepsToFree <= 1, JSON.stringify(record.cancel));
    assert.equal(record.cancel.tokensAfterCancel, 0);
    assert.ok(record.completionTokens < 400);
    const m = await idle(remote.url);
    const cancelled = 'sluice_requests_total{reason="cancelled"}';
    assert.equal((m.get(cancelled) ?? 0) - (remoteBefore.get(cancelled) ?? 0), 1);
    const { count, withinOne } = cancelsWithinOneStep(m);
    assert.equal(withinOne, count);
    assert.equal(runtime.load.busySlots, 0);
  });

  test("streamed tool calls pass through: ids, names, argument pieces, finish_reason tool_calls", async () => {
    const body = {
      model: MODEL,
      messages: ASK,
      tools: TOOLS,
      tool_choice: "required" as const,
      max_tokens: 80,
      temperature: 0,
    };
    const before = requestsOn();
    const collect = async (c: OpenAI) => {
      const calls: { id?: string; name?: string; args: string; pieces: number }[] = [];
      let finish: string | null = null;
      for await (const chunk of await c.chat.completions.create({ ...body, stream: true })) {
        const choice = chunk.choices[0];
        if (choice === undefined) continue;
        for (const call of choice.delta.tool_calls ?? []) {
          calls[call.index] ??= { args: "", pieces: 0 };
          const entry = calls[call.index]!;
          if (call.id) entry.id = call.id;
          if (call.function?.name) entry.name = call.function.name;
          if (call.function?.arguments) {
            entry.args += call.function.arguments;
            entry.pieces++;
          }
        }
        if (choice.finish_reason) finish = choice.finish_reason;
      }
      return { calls, finish };
    };
    const through = await collect(client);
    const own = await collect(direct);
    // Tools are the server's protocol layer: the local member leaves them to the remote upstream.
    assert.equal(requestsOn().local, before.local);
    assert.equal(through.finish, "tool_calls");
    assert.equal(through.calls.length, 1);
    assert.match(through.calls[0]!.id ?? "", /^call_/);
    assert.equal(through.calls[0]!.name, "get_verse");
    assert.deepEqual(JSON.parse(through.calls[0]!.args), JSON.parse(own.calls[0]!.args));
    assert.ok(through.calls[0]!.pieces >= 1);
    // Not streamed: the calls assembled.
    const whole = await client.chat.completions.create(body);
    assert.equal(whole.choices[0]!.finish_reason, "tool_calls");
    const call = whole.choices[0]!.message.tool_calls?.[0];
    assert.ok(call !== undefined && call.type === "function");
    assert.equal(call.function.name, "get_verse");
    assert.deepEqual(JSON.parse(call.function.arguments), JSON.parse(own.calls[0]!.args));
  });

  test("logprobs pass through: chat's content entries and the completions' legacy arrays", async () => {
    const chat = await client.chat.completions.create({
      model: MODEL,
      messages: ASK,
      max_tokens: 16,
      temperature: 0,
      logprobs: true,
      top_logprobs: 2,
      stream: true,
    });
    let text = "";
    const entries: { token: string; top_logprobs: unknown[] }[] = [];
    for await (const chunk of chat) {
      text += chunk.choices[0]?.delta.content ?? "";
      entries.push(...(chunk.choices[0]?.logprobs?.content ?? []));
    }
    assert.ok(entries.length > 0);
    assert.equal(entries.map((e) => e.token).join(""), text);
    for (const e of entries) assert.equal(e.top_logprobs.length, 2);
    const completion = await client.completions.create({
      model: MODEL,
      prompt: "Genesis 1\n1 In the beginning",
      max_tokens: 10,
      temperature: 0,
      logprobs: 1,
    });
    const lp = completion.choices[0]!.logprobs!;
    assert.equal(lp.tokens!.length, 10);
    assert.equal(lp.tokens!.join(""), completion.choices[0]!.text);
    assert.equal(lp.token_logprobs!.length, 10);
  });

  test("n > 1: choices by index, each with its own finish; a cancel aborts the one upstream request", async () => {
    const stream = post(url, "/v1/chat/completions", {
      messages: ASK,
      n: 2,
      max_tokens: 12,
      temperature: 0.9,
      seed: 7,
      stream: true,
      // Per-chunk usage is not passed upstream: the usage the gateway reports is the whole request's.
      stream_options: { include_usage: true, continuous_usage_stats: true },
    });
    await stream.done;
    const chunks = stream.events.filter((e) => e !== "[DONE]" && e.choices?.length > 0);
    const finishes = chunks.flatMap((e) =>
      e.choices.filter((c: { finish_reason: unknown }) => c.finish_reason),
    );
    assert.deepEqual(finishes.map((c: { index: number }) => c.index).sort(), [0, 1]);
    for (const f of finishes) assert.equal(f.finish_reason, "length");
    for (const index of [0, 1]) {
      const text = chunks
        .flatMap((e) => e.choices.filter((c: { index: number }) => c.index === index))
        .map((c: { delta: { content?: string } }) => c.delta.content ?? "")
        .join("");
      assert.ok(text.length > 0, `choice ${index} has text`);
    }
    assert.equal(stream.events.find((e) => e !== "[DONE]" && e.usage)?.usage.completion_tokens, 24);
    assert.equal(stream.events.at(-1), "[DONE]");
    // Cut after the first delta: the upstream's one request, both its choices, cancelled.
    const before = await scrape(remote.url);
    const httpBefore =
      before.get('sluice_http_requests_total{route="/v1/chat/completions",status="200"}') ?? 0;
    const cut = post(
      url,
      "/v1/chat/completions",
      { messages: ASK, n: 2, max_tokens: 400, ignore_eos: true, stream: true },
      {
        onEvent: (event, s) => {
          if (event !== "[DONE]" && event.choices?.[0]?.delta?.content) s.destroy();
        },
      },
    );
    await cut.done;
    const m = await idle(remote.url);
    const cancelled = 'sluice_requests_total{reason="cancelled"}';
    assert.equal((m.get(cancelled) ?? 0) - (before.get(cancelled) ?? 0), 2);
    assert.equal(
      (m.get('sluice_http_requests_total{route="/v1/chat/completions",status="200"}') ?? 0) - httpBefore,
      1,
    );
  });
});
