import assert from "node:assert/strict";
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Runtime } from "../../src/runtime/Runtime.ts";
import { Ends, idle, post, type Served, type SseEvent, scrape, serve, textOf } from "./client.ts";

// Real engine: the bundled model through node-llama-cpp, one thread (CI machines have two cores).
const PROMPT = "Genesis 1\n1 In the beginning";
const MODEL = "kjv-tiny.gguf";

let runtime: Runtime;
let served: Served;
let ends: Ends;

/** The one chunk carrying finish_reason is the last chunk with choices, followed only by usage, error, [DONE]. */
function checkTerminal(events: SseEvent[]): { finish: SseEvent; after: SseEvent[] } {
  const finishes = events.filter((e: SseEvent) => e !== "[DONE]" && e.choices?.[0]?.finish_reason != null);
  assert.equal(finishes.length, 1, "exactly one chunk carries finish_reason");
  const index = events.indexOf(finishes[0]);
  assert.equal(events.at(-1), "[DONE]", "the stream ends with [DONE]");
  return { finish: finishes[0], after: events.slice(index + 1) };
}

describe("SSE streaming over a real socket with the bundled model", () => {
  before(async () => {
    runtime = await Runtime.create({ slots: 4, contextSize: 512, threads: 1 });
    ends = new Ends(runtime);
    served = await serve(runtime);
  });
  after(async () => {
    await served.server.close();
    await runtime.close();
  });

  test("completions: one event per delta with one id, one finish chunk with timings, then [DONE]", async () => {
    const stream = post(served.url, "/v1/completions", {
      model: MODEL,
      prompt: PROMPT,
      max_tokens: 24,
      temperature: 0,
      stream: true,
    });
    const { status, headers } = await stream.head;
    await stream.done;
    assert.equal(status, 200);
    assert.match(String(headers["content-type"]), /^text\/event-stream/);
    const id = headers["x-request-id"];
    assert.match(String(id), /^cmpl-/);
    const { finish, after } = checkTerminal(stream.events);
    assert.deepEqual(after, ["[DONE]"]);
    const chunks = stream.events.filter((e) => e !== "[DONE]");
    for (const chunk of chunks) {
      assert.equal(chunk.id, id);
      assert.equal(chunk.object, "text_completion");
      assert.equal(chunk.model, MODEL);
    }
    const deltas = chunks.filter((c) => c.choices[0].finish_reason === null);
    assert.ok(
      deltas.every((c) => c.choices[0].text.length > 0),
      "no empty deltas",
    );
    assert.ok(["length", "stop"].includes(finish.choices[0].finish_reason));
    assert.equal(typeof finish.timings.firstTokenMs, "number");
    assert.equal(finish.sluice.reason, finish.choices[0].finish_reason === "length" ? "length" : "eos");
    assert.deepEqual(finish.sluice.timings, finish.timings);
    // Greedy: the same request without streaming gives the same text.
    const whole = await fetch(`${served.url}/v1/completions`, {
      method: "POST",
      body: JSON.stringify({ model: MODEL, prompt: PROMPT, max_tokens: 24, temperature: 0 }),
    });
    const body = await whole.json();
    assert.equal(whole.status, 200);
    assert.match(whole.headers.get("x-request-id")!, /^cmpl-/);
    assert.equal(body.object, "text_completion");
    assert.equal(body.choices[0].text, textOf(stream.events));
    assert.ok(body.choices[0].text.length > 10, `short text ${JSON.stringify(body.choices[0].text)}`);
    assert.equal(body.usage.total_tokens, body.usage.prompt_tokens + body.usage.completion_tokens);
  });

  test("stream_options.include_usage: usage null on every chunk, then a usage chunk before [DONE]", async () => {
    const stream = post(served.url, "/v1/completions", {
      prompt: PROMPT,
      max_tokens: 12,
      stream: true,
      ignore_eos: true,
      stream_options: { include_usage: true },
    });
    await stream.done;
    const { finish, after } = checkTerminal(stream.events);
    assert.equal(finish.choices[0].finish_reason, "length");
    assert.equal(after.length, 2);
    const usage = after[0];
    assert.deepEqual(usage.choices, []);
    assert.equal(usage.usage.completion_tokens, 12);
    assert.equal(usage.usage.total_tokens, usage.usage.prompt_tokens + 12);
    for (const chunk of stream.events.slice(0, -2)) assert.equal(chunk.usage, null);
  });

  test("a stop string ends with finish_reason stop; the stop text is not streamed", async () => {
    const greedy = await fetch(`${served.url}/v1/completions`, {
      method: "POST",
      body: JSON.stringify({ prompt: PROMPT, max_tokens: 30, temperature: 0, ignore_eos: true }),
    }).then((r) => r.json());
    const text: string = greedy.choices[0].text;
    const cut = text.indexOf(" ", 8);
    assert.ok(cut > 0, `no second word in ${JSON.stringify(text)}`);
    const stop = text.slice(cut, cut + 4);
    const stream = post(served.url, "/v1/completions", {
      prompt: PROMPT,
      max_tokens: 30,
      temperature: 0,
      stop: [stop],
      stream: true,
    });
    await stream.done;
    const { finish } = checkTerminal(stream.events);
    assert.equal(finish.choices[0].finish_reason, "stop");
    assert.equal(finish.sluice.reason, "stop");
    assert.equal(finish.sluice.stop, stop);
    assert.equal(textOf(stream.events), text.slice(0, text.indexOf(stop)));
  });

  test("chat: role chunk first, content deltas, one finish chunk, [DONE]; ChatML fallback is used", async () => {
    const stream = post(served.url, "/v1/chat/completions", {
      model: MODEL,
      messages: [
        { role: "system", content: "Answer in the words of the King James Bible." },
        { role: "user", content: [{ type: "text", text: "Who created the heaven?" }] },
      ],
      max_completion_tokens: 16,
      stream: true,
    });
    const { headers } = await stream.head;
    await stream.done;
    const [first] = stream.events;
    assert.equal(first.object, "chat.completion.chunk");
    assert.deepEqual(first.choices[0].delta, { role: "assistant", content: "" });
    const { finish } = checkTerminal(stream.events);
    assert.deepEqual(finish.choices[0].delta, {});
    assert.ok(["stop", "length"].includes(finish.choices[0].finish_reason));
    for (const e of stream.events.slice(0, -1)) assert.equal(e.id, headers["x-request-id"]);
    const chat = await fetch(`${served.url}/v1/chat/completions`, {
      method: "POST",
      body: JSON.stringify({ messages: [{ role: "user", content: "Hello" }], max_tokens: 8 }),
    }).then((r) => r.json());
    assert.equal(chat.object, "chat.completion");
    assert.equal(chat.choices[0].message.role, "assistant");
    assert.equal(typeof chat.choices[0].message.content, "string");
    // <|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n plus BOS: more than the bare text's tokens.
    assert.ok(chat.usage.prompt_tokens >= 9, `prompt_tokens ${chat.usage.prompt_tokens}`);
  });

  test("DELETE /v1/requests/:id stops a stream; its final chunk reports the measured cancel latency", async () => {
    let deleted: Promise<Response> | undefined;
    const stream = post(
      served.url,
      "/v1/completions",
      { prompt: PROMPT, max_tokens: 400, ignore_eos: true, stream: true },
      {
        onEvent: (event) => {
          if (deleted === undefined && event.choices?.length && textOf([event]).length > 0) {
            const id = event.id as string;
            if (textOf(stream.events).length > 20)
              deleted = fetch(`${served.url}/v1/requests/${id}`, { method: "DELETE" });
          }
        },
      },
    );
    await stream.done;
    assert.ok(deleted, "never sent the DELETE");
    const answer = await deleted;
    const { headers } = await stream.head;
    assert.equal(answer.status, 200);
    assert.deepEqual(await answer.json(), { id: headers["x-request-id"], cancelled: true });
    const { finish } = checkTerminal(stream.events);
    assert.equal(finish.choices[0].finish_reason, "cancelled");
    const cancel = finish.sluice.cancel;
    assert.ok(cancel, "the final chunk carries the cancel record");
    assert.ok(cancel.stepsToFree <= 1, `freed after ${cancel.stepsToFree} steps`);
    assert.ok(cancel.msToFree >= cancel.msToTerminal, JSON.stringify(cancel));
    const again = await fetch(`${served.url}/v1/requests/${headers["x-request-id"]}`, { method: "DELETE" });
    assert.equal(again.status, 404);
    assert.equal((await again.json()).error.code, "request_not_found");
    await idle(served.url);
  });

  test("server deadline: the request ends cancelled with the cancel record; non-streaming too", async () => {
    const limited = await serve(runtime, { requestTimeoutMs: 60 });
    try {
      const stream = post(limited.url, "/v1/completions", {
        prompt: PROMPT,
        max_tokens: 480,
        ignore_eos: true,
        stream: true,
      });
      await stream.done;
      const { finish } = checkTerminal(stream.events);
      assert.equal(finish.choices[0].finish_reason, "cancelled");
      assert.ok(finish.sluice.cancel.stepsToFree <= 1, JSON.stringify(finish.sluice));
      const whole = await fetch(`${limited.url}/v1/completions`, {
        method: "POST",
        body: JSON.stringify({ prompt: PROMPT, max_tokens: 480, ignore_eos: true }),
      });
      const body = await whole.json();
      assert.equal(body.choices[0].finish_reason, "cancelled");
      assert.ok(body.usage.completion_tokens < 480, JSON.stringify(body.usage));
      assert.ok(body.sluice.cancel.stepsToFree <= 1, JSON.stringify(body.sluice));
    } finally {
      await limited.server.close();
    }
  });

  test("models, model, health, slots", async () => {
    const models = await fetch(`${served.url}/v1/models`).then((r) => r.json());
    assert.equal(models.object, "list");
    assert.equal(models.data[0].id, MODEL);
    assert.equal(models.data[0].object, "model");
    const model = await fetch(`${served.url}/v1/models/${MODEL}`);
    assert.equal(model.status, 200);
    // One model is served: any name stands for it (strictModelName refuses others).
    const other = await fetch(`${served.url}/v1/models/gpt-4`);
    assert.equal(other.status, 200);
    assert.equal((await other.json()).id, "gpt-4");
    const health = await fetch(`${served.url}/health`).then((r) => r.json());
    assert.equal(health.status, "ok");
    assert.equal(health.slots, 4);
    // The bundled model on this machine runs on the CPU; /health and the slot view say so.
    assert.equal(health.backend, "cpu");
    const slots = await fetch(`${served.url}/v1/slots`).then((r) => r.json());
    assert.equal(slots.model, MODEL);
    assert.equal(slots.slotsTotal, 4);
    assert.equal(slots.backend, "cpu");
    assert.equal(slots.slots.length, 4);
    assert.ok(
      slots.slots.every((s: { state: string }) => s.state === "free"),
      JSON.stringify(slots),
    );
    assert.equal(typeof slots.steps, "number");
  });

  test("/v1/slots shows a live request in its slot; its id only to the admin", async () => {
    const admin = await serve(runtime, { adminApiKey: "sk-admin" });
    try {
      let seen: SseEvent;
      let anonymous: SseEvent;
      const stream = post(
        admin.url,
        "/v1/completions",
        { prompt: PROMPT, max_tokens: 200, ignore_eos: true, stream: true },
        {
          onEvent: (event, s) => {
            if (seen !== undefined || event === "[DONE]") return;
            seen = null;
            const view = (headers: Record<string, string>) =>
              fetch(`${admin.url}/v1/slots`, { headers }).then((r) => r.json());
            Promise.all([view({ authorization: "Bearer sk-admin" }), view({})]).then(([a, b]) => {
              [seen, anonymous] = [a, b];
              s.destroy();
            });
          },
        },
      );
      await stream.done;
      const { headers } = await stream.head;
      await ends.of(String(headers["x-request-id"]));
      const slot = seen.slots.find((s: { requestId?: string }) => s.requestId === headers["x-request-id"]);
      assert.ok(slot, "the request is in a slot");
      assert.equal(slot.state, "decode");
      assert.ok(slot.generated >= 1, JSON.stringify(slot));
      const busy = anonymous.slots.filter((s: { state: string }) => s.state === "decode");
      assert.equal(busy.length, 1, "anonymous callers see the slot busy");
      assert.equal(busy[0].requestId, undefined, "but not whose request it is");
    } finally {
      await admin.server.close();
    }
  });

  test("/metrics is Prometheus text with the runtime's counters and histograms", async () => {
    const res = await fetch(`${served.url}/metrics`);
    assert.match(res.headers.get("content-type")!, /^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    for (const name of [
      "sluice_requests_total",
      "sluice_requests_active",
      "sluice_requests_queued",
      "sluice_slots_total",
      "sluice_slots_busy",
      "sluice_tokens_generated_total",
      "sluice_prompt_tokens_total",
      "sluice_time_to_first_token_seconds",
      "sluice_inter_token_latency_seconds",
      "sluice_cancel_latency_seconds",
      "sluice_cancel_latency_steps",
      "sluice_tokens_after_cancel_total",
      "sluice_engine_steps_total",
      "sluice_http_requests_total",
    ]) {
      assert.match(text, new RegExp(`^# TYPE ${name} (counter|gauge|histogram)$`, "m"), name);
    }
    const m = await scrape(served.url);
    assert.equal(m.get("sluice_slots_total"), 4);
    assert.ok(
      m.get('sluice_requests_total{reason="cancelled"}')! >= 2,
      `sluice_requests_total{reason="cancelled"} = ${m.get('sluice_requests_total{reason="cancelled"}')}`,
    );
    assert.ok(
      m.get("sluice_tokens_generated_total")! > 50,
      `sluice_tokens_generated_total = ${m.get("sluice_tokens_generated_total")}`,
    );
    assert.ok(
      m.get("sluice_prompt_tokens_total")! >= 8,
      `sluice_prompt_tokens_total = ${m.get("sluice_prompt_tokens_total")}`,
    );
    assert.ok(
      m.get("sluice_inter_token_latency_seconds_count")! > 20,
      `sluice_inter_token_latency_seconds_count = ${m.get("sluice_inter_token_latency_seconds_count")}`,
    );
    assert.equal(m.get("sluice_tokens_after_cancel_total"), 0);
    assert.ok(
      m.get('sluice_http_requests_total{route="/v1/completions",status="200"}')! >= 4,
      `sluice_http_requests_total{route="/v1/completions",status="200"} = ${m.get('sluice_http_requests_total{route="/v1/completions",status="200"}')}`,
    );
    // Cumulative buckets never decrease and end at the count.
    const buckets = [...m].filter(([k]) => k.startsWith("sluice_time_to_first_token_seconds_bucket"));
    for (let i = 1; i < buckets.length; i++)
      assert.ok(buckets[i]![1] >= buckets[i - 1]![1], "buckets are cumulative");
    assert.equal(buckets.at(-1)![1], m.get("sluice_time_to_first_token_seconds_count"));
  });

  test("the playground: / and /web/* from the web folder, no traversal, fallback page without it", async () => {
    const root = await mkdtemp(join(tmpdir(), "sluice-web-"));
    const page = await serve(runtime, { webRoot: join(root, "missing") });
    try {
      const fallback = await fetch(`${page.url}/`);
      assert.equal(fallback.status, 200);
      assert.match(await fallback.text(), /\/v1\/chat\/completions/);
    } finally {
      await page.server.close();
    }
    await writeFile(join(root, "index.html"), "<!doctype html><title>play</title>");
    await writeFile(join(root, "app.js"), "export {};");
    await writeFile(join(root, "secret.env"), "KEY=1");
    const web = await serve(runtime, { webRoot: root, apiKey: "k" });
    try {
      const index = await fetch(`${web.url}/`);
      assert.equal(index.status, 200);
      assert.match(index.headers.get("content-type")!, /^text\/html/);
      assert.match(await index.text(), /play/);
      const js = await fetch(`${web.url}/web/app.js`);
      assert.match(js.headers.get("content-type")!, /^text\/javascript/);
      assert.equal(await js.text(), "export {};");
      for (const path of [
        "/web/nope.js",
        "/web/secret.env",
        "/web/%2e%2e/%2e%2e/package.json",
        "/web/..%2fx.js",
      ]) {
        assert.equal((await fetch(`${web.url}${path}`)).status, 404, path);
      }
    } finally {
      await web.server.close();
    }
  });
});
