import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { ScriptedEngine, ScriptedStep } from "../../src/engine/ScriptedEngine.ts";
import type { Runtime } from "../../src/runtime/Runtime.ts";
import { scriptedRuntime } from "../helpers/scripted.ts";
import { cancelsWithinOneStep, Ends, idle, post, type Served, serve, textOf } from "./client.ts";

// The scripted engine, for what needs deterministic timing: holding a step while the client acts, a stop
// prefix held back at a known token, a client that stops reading, an engine fault at a chosen moment.
const SCRIPT = "In the beginning God created the heaven and the earth.";

let runtime: Runtime;
let engine: ScriptedEngine;
let served: Served;
let ends: Ends;
/** Awaited inside every engine step while set. */
let onStep: ((step: ScriptedStep) => void | Promise<void>) | undefined;
let script: string = SCRIPT;

const yieldOnce = () => new Promise<void>((resolve) => setImmediate(resolve));

describe("server behaviour that needs deterministic engine timing (scripted engine)", () => {
  before(async () => {
    ({ runtime, engine } = await scriptedRuntime(
      {
        slots: 2,
        contextSize: 40_000,
        onStep: (step) => onStep?.(step),
        script: () => engine.encode(script),
      },
      { maxQueue: 2 },
    ));
    ends = new Ends(runtime);
    served = await serve(runtime);
  });
  after(async () => {
    onStep = undefined;
    await served.server.close();
    await runtime.close();
  });

  test("disconnect while a stop-string prefix is held back: nothing of it leaked, slot freed in one step", async () => {
    script = SCRIPT;
    const prefix = "In the beginning ";
    let id = "";
    onStep = async () => {
      const slot = runtime.snapshot().slots.find((s) => s.requestId === id);
      // 20 tokens = "In the beginning God": "God" may start "God said", so it is held back.
      if (slot?.generated !== 20) return;
      onStep = undefined;
      while (textOf(stream.events) !== prefix) await yieldOnce();
      stream.destroy();
      // Hold this step until the server has seen the disconnect and cancelled.
      while (runtime.snapshot().slots.find((s) => s.requestId === id)?.state !== "freeing") await yieldOnce();
    };
    const stream = post(served.url, "/v1/completions", {
      prompt: "p",
      max_tokens: 100,
      stop: ["God said"],
      stream: true,
    });
    id = String((await stream.head).headers["x-request-id"]);
    const record = await ends.of(id);
    assert.equal(textOf(stream.events), prefix, "the held-back prefix never reached the client");
    assert.equal(record.reason, "cancelled");
    assert.equal(record.cancel?.phase, "decode");
    assert.equal(record.cancel?.stepsToFree, 1, "cancelled during a step: free right after it");
    assert.equal(record.completionTokens, 20);
    const m = await idle(served.url);
    assert.equal(cancelsWithinOneStep(m).withinOne, cancelsWithinOneStep(m).count);
  });

  test("a client that stops reading gets coalesced deltas: nothing lost, bounded buffer, runtime never waits", async () => {
    // Beyond what loopback socket buffers absorb (about 4 MB here) once framed as SSE events.
    script = "And God said, Let there be light: and there was light. ".repeat(660);
    const tokens = engine.encode(script).length;
    let response: import("node:http").ServerResponse | undefined;
    const onRequest = (_: unknown, res: import("node:http").ServerResponse) => {
      response = res;
    };
    served.server.http.on("request", onRequest);
    let maxBuffered = 0;
    const stopWatching = runtime.observe((event) => {
      if (event.type === "step" && response) maxBuffered = Math.max(maxBuffered, response.writableLength);
    });
    const stream = post(served.url, "/v1/completions", {
      prompt: "p",
      max_tokens: tokens,
      ignore_eos: true,
      stream: true,
    });
    const { headers } = await stream.head;
    stream.pause();
    // The whole generation ends while the client reads nothing.
    const record = await ends.of(String(headers["x-request-id"]));
    stopWatching();
    served.server.http.off("request", onRequest);
    assert.equal(record.reason, "length");
    stream.resume();
    await stream.done;
    assert.equal(textOf(stream.events), script, "every byte arrives");
    const deltas = stream.events.filter((e) => e !== "[DONE]" && e.choices[0].finish_reason === null).length;
    process.stdout.write(
      `slow client: ${tokens} tokens arrived as ${deltas} deltas; at most ${maxBuffered} bytes queued\n`,
    );
    assert.ok(deltas < tokens * 0.75, `${deltas} events for ${tokens} tokens: deltas were not coalesced`);
    assert.ok(
      maxBuffered < 64 * 1024,
      `${maxBuffered} bytes queued in the response while the client was stalled`,
    );
    assert.equal(stream.events.at(-2).choices[0].finish_reason, "length");
    assert.equal(stream.events.at(-1), "[DONE]");
  });

  test("keep-alive comments while a long prompt is prefilled, before any data", async () => {
    script = SCRIPT;
    const fast = await serve(runtime, { keepAliveMs: 20 });
    try {
      let commented!: () => void;
      const comment = new Promise<void>((resolve) => {
        commented = resolve;
      });
      onStep = async (step) => {
        // Hold the first prefill chunk until the client has heard a keep-alive.
        if (step.items.some((i) => i.sample === undefined)) {
          onStep = undefined;
          await comment;
        }
      };
      const stream = post(
        fast.url,
        "/v1/completions",
        { prompt: "x".repeat(300), max_tokens: 5, stream: true },
        { onComment: () => commented() },
      );
      await stream.done;
      assert.ok(stream.comments.length >= 1, "no keep-alive comment");
      assert.equal(stream.comments[0]!.trim(), "keep-alive");
      assert.equal(textOf(stream.events), SCRIPT.slice(0, 5));
      assert.equal(stream.events.at(-1), "[DONE]");
    } finally {
      onStep = undefined;
      await fast.server.close();
    }
  });

  test("a full queue answers 429 queue_full; the requests already accepted finish", async () => {
    script = SCRIPT;
    let release!: () => void;
    const gate = new Promise<void>((resolve) => {
      release = resolve;
    });
    let held!: () => void;
    const holding = new Promise<void>((resolve) => {
      held = resolve;
    });
    onStep = async () => {
      onStep = undefined;
      held();
      await gate;
    };
    const body = { prompt: "p", max_tokens: 5 };
    const first = fetch(`${served.url}/v1/completions`, { method: "POST", body: JSON.stringify(body) });
    await holding;
    // The step in flight holds the first in one slot; the other slot takes the next at once (it does not
    // count against the queue) and the two after it wait (maxQueue 2).
    const waiting = [0, 1, 2].map(() => post(served.url, "/v1/completions", { ...body, stream: true }));
    await Promise.all(waiting.map((s) => s.head));
    assert.equal(runtime.load.queued, 3);
    const refused = await fetch(`${served.url}/v1/completions`, {
      method: "POST",
      body: JSON.stringify(body),
    });
    assert.equal(refused.status, 429);
    assert.equal(refused.headers.get("retry-after"), "1");
    const error = (await refused.json()).error;
    assert.equal(error.code, "queue_full");
    assert.equal(error.type, "rate_limit_error");
    assert.match(error.message, /maxQueue 2/);
    release();
    assert.equal((await (await first).json()).choices[0].text, SCRIPT.slice(0, 5));
    for (const s of waiting) {
      await s.done;
      assert.equal(textOf(s.events), SCRIPT.slice(0, 5));
    }
  });

  test("engine error: finish_reason error, usage, then an error event, then [DONE]; non-streaming gets 500", async () => {
    script = SCRIPT;
    onStep = (step) => {
      if (step.items.some((i) => i.sample !== undefined && i.tokens.length === 1)) {
        throw new Error("injected device failure");
      }
    };
    const stream = post(served.url, "/v1/completions", {
      prompt: "p",
      max_tokens: 20,
      stream: true,
      stream_options: { include_usage: true },
    });
    await stream.done;
    const tail = stream.events.slice(-4);
    assert.equal(tail[0].choices[0].finish_reason, "error");
    assert.deepEqual(tail[1].choices, []);
    assert.equal(typeof tail[1].usage.completion_tokens, "number");
    assert.deepEqual(tail[2], {
      error: { message: "injected device failure", type: "server_error", code: "engine_failed" },
    });
    assert.equal(tail[3], "[DONE]");
    const whole = await fetch(`${served.url}/v1/completions`, {
      method: "POST",
      body: JSON.stringify({ prompt: "p", max_tokens: 20 }),
    });
    assert.equal(whole.status, 500);
    const body = await whole.json();
    assert.equal(body.error.code, "engine_failed");
    assert.equal(body.error.message, "injected device failure");
    onStep = undefined;
    // The server keeps serving.
    const ok = await fetch(`${served.url}/v1/completions`, {
      method: "POST",
      body: JSON.stringify({ prompt: "p", max_tokens: 3 }),
    });
    assert.equal((await ok.json()).choices[0].text, "In ");
  });

  test("graceful close: every open stream gets a cancelled final chunk and [DONE]; then nothing listens", async () => {
    script = SCRIPT.repeat(100);
    const closing = await serve(runtime);
    const streams = [0, 1, 2].map(() =>
      post(closing.url, "/v1/completions", { prompt: "p", max_tokens: 5000, ignore_eos: true, stream: true }),
    );
    // Two decoding (slots 2), one queued: all with their headers.
    await Promise.all(streams.map((s) => s.head));
    while (streams.slice(0, 2).some((s) => s.events.length === 0)) await yieldOnce();
    await closing.server.close();
    for (const s of streams) {
      await s.done;
      const finish = s.events.at(-2);
      assert.equal(finish.choices[0].finish_reason, "cancelled");
      assert.ok(finish.sluice.cancel.stepsToFree <= 1, JSON.stringify(finish.sluice.cancel));
      assert.equal(s.events.at(-1), "[DONE]");
    }
    await assert.rejects(fetch(`${closing.url}/health`));
    await idle(served.url);
  });

  test("close({ graceful: false }) cuts every stream at once; the disconnects free the slots", async () => {
    script = SCRIPT.repeat(100);
    const closing = await serve(runtime);
    const streams = [0, 1].map(() =>
      post(closing.url, "/v1/completions", { prompt: "p", max_tokens: 5000, ignore_eos: true, stream: true }),
    );
    while (streams.some((s) => s.events.length === 0)) await yieldOnce();
    await closing.server.close({ graceful: false });
    for (const s of streams) {
      await s.done;
      assert.notEqual(s.events.at(-1), "[DONE]");
      const record = await ends.of(String((await s.head).headers["x-request-id"]));
      assert.equal(record.reason, "cancelled");
      assert.ok((record.cancel?.stepsToFree ?? 9) <= 1, JSON.stringify(record.cancel));
    }
    await idle(served.url);
  });
});
