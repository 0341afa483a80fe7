import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import fc from "fast-check";
import type OpenAI from "openai";
import type { ScriptedEngine, ScriptedStep } from "../../src/engine/ScriptedEngine.ts";
import type { Runtime } from "../../src/runtime/Runtime.ts";
import { scriptedRuntime } from "../helpers/scripted.ts";
import {
  cancelsWithinOneStep,
  Ends,
  idle,
  type ModelServer,
  post,
  type Served,
  type SseEvent,
  send,
  serve,
  serveModel,
} from "./client.ts";

const PROMPT = "Genesis 1\n1 In the beginning";

/** The runtime ids of a response's choices: choice 0 has the response's id, choice i `<id>-<i>`. */
const choiceIds = (id: string, n: number) =>
  Array.from({ length: n }, (_, i) => (i === 0 ? id : `${id}-${i}`));

/** Data events of a stream that carry a choice. */
const choiceEvents = (events: SseEvent[]) => events.filter((e) => e !== "[DONE]" && e.choices.length > 0);

/** Per choice index, its finish_reason values in the stream. */
function finishesByIndex(events: SseEvent[]): Map<number, string[]> {
  const finishes = new Map<number, string[]>();
  for (const event of choiceEvents(events)) {
    for (const choice of event.choices) {
      if (choice.finish_reason === null) continue;
      finishes.set(choice.index, [...(finishes.get(choice.index) ?? []), choice.finish_reason]);
    }
  }
  return finishes;
}

describe("n > 1 on the real engine: choices, usage, and one cancel for all of them", () => {
  let runtime: Runtime;
  let served: Served;
  let ends: Ends;
  let client: OpenAI;

  let real: ModelServer;
  before(async () => {
    real = await serveModel();
    ({ runtime, served, client } = real);
    ends = new Ends(runtime);
  });
  after(() => real.close());

  test("completions n=3 through the client: three choices indexed 0-2; the prompt counted once", async () => {
    const one = await client.completions.create({
      model: "m",
      prompt: PROMPT,
      max_tokens: 8,
      temperature: 0,
    });
    const three = await client.completions.create({
      model: "m",
      prompt: PROMPT,
      max_tokens: 8,
      temperature: 1,
      seed: 7,
      n: 3,
      best_of: 3,
      ...({ ignore_eos: true } as object),
    });
    assert.deepEqual(
      three.choices.map((c) => c.index),
      [0, 1, 2],
    );
    for (const choice of three.choices) {
      assert.equal(choice.finish_reason, "length");
      assert.ok(choice.text.length > 0);
    }
    assert.equal(three.usage!.prompt_tokens, one.usage!.prompt_tokens, "the prompt counted once");
    assert.equal(three.usage!.completion_tokens, 24, "every choice's tokens counted");
    assert.equal(three.usage!.total_tokens, one.usage!.prompt_tokens + 24);
    // Seeds 7, 8 and 9: sampled choices differ.
    assert.ok(new Set(three.choices.map((c) => c.text)).size > 1, "choices sampled with their own seeds");
  });

  test("streamed chat n=3: a role, deltas and one finish_reason per index, usage over all of them", async () => {
    const stream = await client.chat.completions.create({
      model: "m",
      messages: [{ role: "user", content: "Tell of the flood." }],
      max_completion_tokens: 10,
      temperature: 1,
      n: 3,
      stream: true,
      stream_options: { include_usage: true },
    });
    const roles = new Map<number, number>();
    const texts = new Map<number, string>();
    const finishes = new Map<number, string[]>();
    let usage: OpenAI.CompletionUsage | undefined | null;
    for await (const chunk of stream) {
      if (chunk.usage) usage = chunk.usage;
      for (const choice of chunk.choices) {
        if (choice.delta.role) roles.set(choice.index, (roles.get(choice.index) ?? 0) + 1);
        texts.set(choice.index, (texts.get(choice.index) ?? "") + (choice.delta.content ?? ""));
        if (choice.finish_reason)
          finishes.set(choice.index, [...(finishes.get(choice.index) ?? []), choice.finish_reason]);
      }
    }
    assert.deepEqual([...roles.keys()].sort(), [0, 1, 2]);
    assert.ok([...roles.values()].every((count) => count === 1));
    for (const index of [0, 1, 2]) {
      assert.equal(finishes.get(index)?.length, 1, `choice ${index} has one finish_reason`);
      assert.ok(texts.get(index)!.length > 0);
    }
    assert.ok(usage && usage.completion_tokens >= 3 && usage.completion_tokens <= 30, JSON.stringify(usage));
  });

  test("a client that goes away from an n=3 stream (2 slots: one choice queued) frees all three within one step", async () => {
    const stream = post(
      served.url,
      "/v1/completions",
      { prompt: PROMPT, max_tokens: 400, ignore_eos: true, n: 3, stream: true },
      {
        onEvent: (_, self) => {
          // After a few deltas of the running choices.
          if (choiceEvents(self.events).filter((e) => e.choices[0].text).length === 6) self.destroy();
        },
      },
    );
    const id = String((await stream.head).headers["x-request-id"]);
    const records = await Promise.all(choiceIds(id, 3).map((choice) => ends.of(choice)));
    for (const record of records) {
      assert.equal(record.reason, "cancelled", record.id);
      assert.ok(
        record.cancel && record.cancel.stepsToFree <= 1,
        `${record.id}: ${JSON.stringify(record.cancel)}`,
      );
    }
    assert.ok(
      records.some((r) => r.cancel?.phase === "queued"),
      "the third choice was still waiting for a slot",
    );
    const m = await idle(served.url);
    const { count, withinOne } = cancelsWithinOneStep(m);
    assert.equal(withinOne, count);
  });

  test("DELETE of the request's id cancels every choice; each gets its cancelled finish chunk", async () => {
    let deleted: Promise<number> | undefined;
    const stream = post(
      served.url,
      "/v1/chat/completions",
      {
        messages: [{ role: "user", content: "Speak." }],
        max_tokens: 400,
        ignore_eos: true,
        n: 3,
        stream: true,
      },
      {
        onEvent: (event) => {
          if (deleted || event === "[DONE]" || !event.choices[0]?.delta?.content) return;
          deleted = fetch(`${served.url}/v1/requests/${event.id}`, { method: "DELETE" }).then(
            (r) => r.status,
          );
        },
      },
    );
    await stream.done;
    assert.equal(await deleted, 200);
    const finishes = finishesByIndex(stream.events);
    assert.deepEqual([...finishes.keys()].sort(), [0, 1, 2]);
    for (const [index, reasons] of finishes) assert.deepEqual(reasons, ["cancelled"], `choice ${index}`);
    for (const event of choiceEvents(stream.events)) {
      const [choice] = event.choices;
      if (choice.finish_reason === null) continue;
      assert.equal(event.sluice.reason, "cancelled");
      assert.ok(event.sluice.cancel.stepsToFree <= 1, JSON.stringify(event.sluice.cancel));
    }
    assert.equal(stream.events.at(-1), "[DONE]");
    await idle(served.url);
  });

  test("DELETE after choice 0 has finished still cancels the choices still running", async () => {
    // 2 slots, n = 3: choices 0 and 1 run to max_tokens, then choice 2 gets a slot and runs.
    let deleted: Promise<{ status: number; body: unknown }> | undefined;
    const stream = post(
      served.url,
      "/v1/completions",
      { prompt: PROMPT, max_tokens: 40, ignore_eos: true, n: 3, stream: true },
      {
        onEvent: (event) => {
          if (deleted || event === "[DONE]" || event.choices[0]?.index !== 0) return;
          if (event.choices[0].finish_reason === null) return;
          deleted = fetch(`${served.url}/v1/requests/${event.id}`, { method: "DELETE" }).then(async (r) => ({
            status: r.status,
            body: await r.json(),
          }));
        },
      },
    );
    await stream.done;
    const id = String((await stream.head).headers["x-request-id"]);
    assert.deepEqual(await deleted, { status: 200, body: { id, cancelled: true } });
    const finishes = finishesByIndex(stream.events);
    assert.deepEqual(finishes.get(0), ["length"]);
    assert.deepEqual(finishes.get(2), ["cancelled"], "the choice still running was cancelled");
    assert.equal(finishes.get(1)?.length, 1);
    const record = await ends.of(`${id}-2`);
    assert.equal(record.reason, "cancelled");
    assert.ok(record.cancel && record.cancel.stepsToFree <= 1, JSON.stringify(record.cancel));
    await idle(served.url);
    const again = await fetch(`${served.url}/v1/requests/${id}`, { method: "DELETE" });
    assert.equal(again.status, 404, "nothing left to stop");
  });

  test("the server deadline cancels every choice", async () => {
    const strict = await serve(runtime, { requestTimeoutMs: 1 });
    try {
      const answer = await send(strict.url, "/v1/completions", {
        body: { prompt: PROMPT, max_tokens: 400, ignore_eos: true, n: 2 },
      });
      assert.equal(answer.status, 200);
      assert.deepEqual(
        answer.json.choices.map((c: SseEvent) => c.finish_reason),
        ["cancelled", "cancelled"],
      );
      assert.ok(answer.json.choices.every((c: SseEvent) => c.sluice.reason === "cancelled"));
    } finally {
      await strict.server.close();
    }
    await idle(served.url);
  });

  test("refused: n over 4 per slot, n 0, best_of other than 1 or n", async () => {
    const cases: [Record<string, unknown>, string, RegExp][] = [
      [{ n: 9 }, "n", /at most 8 choices per request \(4 per slot, 2 slots\)/],
      [{ n: 0 }, "n", /n/],
      [{ n: 200 }, "n", /n/],
      [{ n: 2, best_of: 3 }, "best_of", /must be 1 or equal to n \(2\)/],
      [{ best_of: 2 }, "best_of", /must be 1 or equal to n \(1\)/],
    ];
    for (const [extra, param, message] of cases) {
      const answer = await send(served.url, "/v1/completions", {
        body: { prompt: PROMPT, max_tokens: 2, ...extra },
      });
      assert.equal(answer.status, 400, JSON.stringify(extra));
      assert.equal(answer.json.error.param, param, answer.json.error.message);
      assert.match(answer.json.error.message, message);
    }
    const chat = await send(served.url, "/v1/chat/completions", {
      body: { messages: [{ role: "user", content: "x" }], n: 9 },
    });
    assert.equal(chat.status, 400);
    assert.equal(chat.json.error.param, "n");
  });
});

describe("n > 1 on the scripted engine: seeds, and cancels at random points", () => {
  const SCRIPT = "And God said, Let there be light: and there was light.";
  let runtime: Runtime;
  let engine: ScriptedEngine;
  let served: Served;
  let ends: Ends;
  const seen: ScriptedStep[] = [];

  before(async () => {
    ({ runtime, engine } = await scriptedRuntime(
      { slots: 2, stepMs: 1, script: () => engine.encode(SCRIPT), onStep: (step) => void seen.push(step) },
      { maxQueue: 64 },
    ));
    ends = new Ends(runtime);
    served = await serve(runtime);
  });
  after(async () => {
    await served.server.close();
    await runtime.close();
  });

  test("with a seed, choice i samples with seed + i (wrapping at 2^32)", async () => {
    seen.length = 0;
    const answer = await send(served.url, "/v1/completions", {
      body: { prompt: "p", max_tokens: 3, n: 3, seed: 2 ** 32 - 2, temperature: 1 },
    });
    assert.equal(answer.status, 200);
    const seeds = new Set(
      seen.flatMap((step) => step.items.flatMap((item) => (item.sample ? [item.sample.seed] : []))),
    );
    assert.deepEqual(
      [...seeds].sort((a, b) => a - b),
      [0, 2 ** 32 - 2, 2 ** 32 - 1],
    );
  });

  test("property: random n and cancel points; every choice ends exactly once, a cancel ends all, no slot held", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 6 }),
        fc.constantFrom("delete", "disconnect", "none"),
        fc.integer({ min: 1, max: 40 }),
        fc.boolean(),
        async (n, how, cutAt, chat) => {
          let deleted: Promise<number> | undefined;
          const path = chat ? "/v1/chat/completions" : "/v1/completions";
          // A cancel lands long before any choice could end by itself (400 tokens); without one, they end soon.
          const limits = { n, stream: true, ignore_eos: true, max_tokens: how === "none" ? 12 : 400 };
          const body = chat
            ? { messages: [{ role: "user", content: "x" }], ...limits }
            : { prompt: "p", ...limits };
          const stream = post(served.url, path, body, {
            onEvent: (event, self) => {
              if (self.events.length !== cutAt || how === "none") return;
              if (how === "disconnect") self.destroy();
              else
                deleted = fetch(`${served.url}/v1/requests/${event.id}`, { method: "DELETE" }).then(
                  (r) => r.status,
                );
            },
          });
          await stream.done;
          const id = String((await stream.head).headers["x-request-id"]);
          const records = await Promise.all(choiceIds(id, n).map((choice) => ends.of(choice)));
          const expected = how === "none" ? "length" : "cancelled";
          for (const record of records) {
            assert.equal(record.reason, expected, `${record.id} (${how} at event ${cutAt})`);
            if (record.cancel) assert.ok(record.cancel.stepsToFree <= 1, JSON.stringify(record.cancel));
          }
          if (how === "delete") assert.equal(await deleted, 200);
          if (how !== "disconnect") {
            const finishes = finishesByIndex(stream.events);
            assert.deepEqual(
              [...finishes.keys()].sort(),
              Array.from({ length: n }, (_, i) => i),
            );
            for (const [index, reasons] of finishes) assert.deepEqual(reasons, [expected], `choice ${index}`);
            assert.equal(stream.events.at(-1), "[DONE]");
          }
          await idle(served.url);
        },
      ),
      { numRuns: 30, seed: 42 },
    );
  });
});
