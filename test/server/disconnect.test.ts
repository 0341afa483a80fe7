import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { RequestRecord } from "../../src/runtime/RequestState.ts";
import { Runtime } from "../../src/runtime/Runtime.ts";
import {
  cancelsWithinOneStep,
  Ends,
  idle,
  post,
  random,
  type Served,
  type SseEvent,
  type SseStream,
  serve,
  textOf,
} from "./client.ts";

// Real engine: the bundled model through node-llama-cpp, one thread (CI machines have two cores).
const PROMPT = "Genesis 1\n1 In the beginning";
const LONG_PROMPT = "And the LORD spake unto Moses, saying, ".repeat(30);

let runtime: Runtime;
let served: Served;
let ends: Ends;
/** Every cancel record seen, for the summary. */
const measured: { point: string; steps: number; ms: number }[] = [];

async function cancelRecordOf(
  stream: SseStream,
  point: string,
): Promise<NonNullable<RequestRecord["cancel"]>> {
  const { headers } = await stream.head;
  const record = await ends.of(String(headers["x-request-id"]));
  assert.equal(record.reason, "cancelled", `${point}: the disconnect cancelled the request`);
  const cancel = record.cancel;
  assert.ok(cancel, `${point}: no cancel record`);
  measured.push({ point, steps: cancel.stepsToFree, ms: cancel.msToFree });
  assert.ok(cancel.stepsToFree <= 1, `${point}: slot freed after ${cancel.stepsToFree} steps`);
  assert.equal(cancel.tokensAfterCancel, 0);
  return cancel;
}

/** From /metrics: nothing holds a slot, and every cancel so far freed its slot within one step. */
async function assertSlotsFreed(): Promise<void> {
  const m = await idle(served.url);
  const { count, withinOne } = cancelsWithinOneStep(m);
  assert.ok(count > 0, "no cancel was recorded");
  assert.equal(withinOne, count, `${count - withinOne} cancels took more than one step`);
  assert.equal(m.get("sluice_tokens_after_cancel_total"), 0);
  assert.equal(m.get("sluice_http_streams_open"), 0);
}

function stream(body: Record<string, unknown>, onEvent?: (event: unknown, s: SseStream) => void): SseStream {
  return post(served.url, "/v1/completions", { stream: true, ...body }, onEvent ? { onEvent } : {});
}

describe("client disconnect = cancel, with the bundled model over real sockets", () => {
  before(async () => {
    // A lone prompt may take a 500 ms step by default (a whole prompt of this model in one): a small solo
    // budget makes a long prompt take several steps, so a disconnect can land between two of them.
    runtime = await Runtime.create({ slots: 4, contextSize: 512, threads: 1, soloPrefillStepMs: 5 });
    ends = new Ends(runtime);
    served = await serve(runtime);
  });
  after(async () => {
    await served.server.close();
    await runtime.close();
    const steps = measured.map((m) => m.steps);
    const ms = measured.map((m) => m.ms);
    process.stdout.write(
      `cancel latency over ${measured.length} disconnects: at most ${Math.max(...steps)} step; ` +
        `${Math.min(...ms).toFixed(2)}-${Math.max(...ms).toFixed(2)} ms to free the slot (` +
        `${measured.map((m) => `${m.point} ${m.steps}/${m.ms.toFixed(1)}ms`).join(", ")})\n`,
    );
  });

  test("while queued: the request never reaches a slot; mid-stream: freed within one step", async () => {
    const running: SseStream[] = [];
    const decoding = Array.from({ length: 4 }, () => {
      let resolve!: () => void;
      const first = new Promise<void>((r) => {
        resolve = r;
      });
      running.push(stream({ prompt: PROMPT, max_tokens: 400, ignore_eos: true }, () => resolve()));
      return first;
    });
    await Promise.all(decoding);
    const queued = stream({ prompt: PROMPT, max_tokens: 20 });
    await queued.head;
    assert.equal(runtime.load.queued, 1, "the fifth request waits for a slot");
    queued.destroy();
    const cancel = await cancelRecordOf(queued, "queued");
    assert.equal(cancel.phase, "queued");
    assert.equal(cancel.stepsToFree, 0);
    for (const s of running) s.destroy();
    for (const s of running) assert.equal((await cancelRecordOf(s, "decode")).phase, "decode");
    await assertSlotsFreed();
  });

  test("during prefill of a long prompt: freed within one prefill chunk, no token generated", async () => {
    let stop: (() => void) | undefined;
    const long = stream({ prompt: LONG_PROMPT, max_tokens: 20 });
    let prefilledAtCut = -1;
    stop = runtime.observe((event) => {
      if (event.type !== "step") return;
      const slot = runtime.snapshot().slots.find((s) => s.state === "prefill" && (s.promptTokens ?? 0) > 200);
      if (slot === undefined || (slot.prefilled ?? 0) === 0) return;
      stop?.();
      stop = undefined;
      prefilledAtCut = slot.prefilled!;
      long.destroy();
    });
    const cancel = await cancelRecordOf(long, "prefill");
    assert.ok(prefilledAtCut > 0, "cut after a prefill chunk");
    assert.equal(cancel.phase, "prefill");
    const { headers } = await long.head;
    assert.equal((await ends.of(String(headers["x-request-id"]))).completionTokens, 0);
    assert.equal(textOf(long.events), "");
    await assertSlotsFreed();
  });

  test("mid-stream after some tokens: the tokens were streamed, then the slot freed within one step", async () => {
    const s = stream({ prompt: PROMPT, max_tokens: 300, ignore_eos: true }, (_, self) => {
      if (self.events.length === 10) self.destroy();
    });
    const cancel = await cancelRecordOf(s, "decode");
    assert.equal(cancel.phase, "decode");
    assert.equal(s.events.length, 10);
    await assertSlotsFreed();
  });

  test("non-streaming request: a client that hangs up while it waits cancels too", async () => {
    const s = post(served.url, "/v1/completions", { prompt: PROMPT, max_tokens: 400, ignore_eos: true });
    let id: string | undefined;
    const stop = runtime.observe((event) => {
      if (event.type !== "step") return;
      const slot = runtime.snapshot().slots.find((x) => (x.generated ?? 0) >= 5);
      if (slot === undefined) return;
      stop();
      // No header arrives before a non-streaming body: the slot view names the request.
      id = slot.requestId;
      s.destroy();
    });
    await s.done;
    assert.ok(id, "the request reached decode");
    const record = await ends.of(id);
    assert.equal(record.reason, "cancelled");
    assert.ok(record.cancel && record.cancel.stepsToFree <= 1, JSON.stringify(record.cancel));
    assert.ok(record.completionTokens < 400, `${record.completionTokens} tokens`);
    measured.push({ point: "non-stream", steps: record.cancel.stepsToFree, ms: record.cancel.msToFree });
    await assertSlotsFreed();
  });

  test("32 concurrent streams, half disconnect at random points: the rest finish, no slot is held", async () => {
    const rng = random(20240611);
    const streams: { s: SseStream; cutAt: number | undefined }[] = [];
    for (let i = 0; i < 32; i++) {
      // Cut points: 0 = as soon as the headers arrive (likely still queued), k = after k events.
      const cutAt = i % 2 === 1 ? undefined : i % 8 === 0 ? 0 : 1 + Math.floor(rng() * 24);
      const s = stream({ prompt: PROMPT, max_tokens: 30, ignore_eos: true }, (_, self) => {
        if (cutAt !== undefined && self.events.length === cutAt) self.destroy();
      });
      if (cutAt === 0) void s.head.then(() => s.destroy());
      streams.push({ s, cutAt });
    }
    await Promise.all(streams.map(({ s }) => s.done));
    let cancelled = 0;
    for (const { s, cutAt } of streams) {
      const { headers } = await s.head;
      const record = await ends.of(String(headers["x-request-id"]));
      if (cutAt === undefined) {
        assert.equal(record.reason, "length");
        const finishes = s.events.filter(
          (e: SseEvent) => e !== "[DONE]" && e.choices[0].finish_reason !== null,
        );
        assert.equal(finishes.length, 1);
        assert.equal(finishes[0].choices[0].finish_reason, "length");
        assert.equal(s.events.at(-1), "[DONE]");
        continue;
      }
      assert.equal(record.reason, "cancelled", `stream cut at ${cutAt} was cancelled`);
      cancelled++;
      await cancelRecordOf(s, `random(${cutAt})`);
    }
    assert.equal(cancelled, 16);
    await assertSlotsFreed();
  });
});
