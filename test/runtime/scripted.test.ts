import assert from "node:assert/strict";
import { describe, test } from "node:test";
import type { StepItem } from "../../src/engine/Engine.ts";
import { SluiceError } from "../../src/errors.ts";
import { evenChunk } from "../../src/runtime/planStep.ts";
import type { CancelRecord } from "../../src/runtime/RequestState.ts";
import { bundledVocabulary, drain, scriptedRuntime, slotsOf } from "../helpers/scripted.ts";

const SCRIPT_TEXT = "In the beginning God created the heaven and the earth.";

describe("runtime on the scripted engine: natural finishes", () => {
  test("eos: stream text, result text and the script agree; one terminal chunk", async () => {
    const { runtime, engine } = await scriptedRuntime({ script: () => [...ids(SCRIPT_TEXT)] });
    function ids(text: string) {
      return engine.encode(text);
    }
    const channel = runtime.generate({ prompt: "Genesis", maxTokens: 100 });
    const { text, ids: streamed, terminal } = await drain(channel);
    const result = await channel.result;
    assert.equal(terminal.reason, "eos");
    assert.equal(text, SCRIPT_TEXT);
    assert.equal(result.text, text);
    assert.deepEqual(result.tokenIds, streamed);
    // The EOS token is a generated token (in ids and usage) but a control token (not in text).
    assert.equal(streamed.at(-1), engine.info.vocabulary.eos);
    assert.equal(result.usage.completionTokens, streamed.length);
    assert.equal(result.usage.promptTokens, 1 + "Genesis".length);
    await runtime.close();
  });

  test("length: stops at maxTokens exactly", async () => {
    const { runtime, engine } = await scriptedRuntime({ script: () => engine.encode(SCRIPT_TEXT) });
    const { text, ids, terminal } = await drain(runtime.generate({ prompt: "x", maxTokens: 7 }));
    assert.equal(terminal.reason, "length");
    assert.equal(ids.length, 7);
    assert.equal(text, SCRIPT_TEXT.slice(0, 7));
    await runtime.close();
  });

  test("stop string: text before the match, ids through the completing token, stop reported", async () => {
    const { runtime, engine } = await scriptedRuntime({ script: () => engine.encode(SCRIPT_TEXT) });
    const channel = runtime.generate({ prompt: "x", maxTokens: 100, stop: ["God cr"], streamInterval: 3 });
    const { text, ids, terminal } = await drain(channel);
    assert.equal(terminal.reason, "stop");
    assert.equal(terminal.stop, "God cr");
    assert.equal(text, "In the beginning ");
    assert.equal(ids.length, "In the beginning God cr".length);
    await runtime.close();
  });

  test("stop token id ends the generation with that id reported", async () => {
    const { runtime, engine } = await scriptedRuntime({ script: () => engine.encode(SCRIPT_TEXT) });
    const comma = engine.encode("G")[0]!;
    const { text, terminal } = await drain(runtime.generate({ prompt: "x", stopTokenIds: [comma] }));
    assert.equal(terminal.reason, "stop");
    assert.equal(terminal.stop, comma);
    assert.equal(text, "In the beginning ");
    await runtime.close();
  });

  test("special-token policy is per request, even for requests sharing every step", async () => {
    const vocabulary = await bundledVocabulary();
    const [think, endThink] = [4094, 4095];
    assert.equal(vocabulary.tokenString(think), "<think>");
    const { runtime, engine } = await scriptedRuntime({
      slots: 2,
      script: () => [think, ...engine.encode("hmm"), endThink, ...engine.encode("Amen.")],
    });
    const hidden = runtime.generate({ prompt: "a", maxTokens: 20 });
    const shown = runtime.generate({ prompt: "b", maxTokens: 20, skipSpecialTokens: false });
    const [h, s] = await Promise.all([drain(hidden), drain(shown)]);
    assert.ok(
      engine.steps.some((step) => step.items.length === 2),
      "the two requests never shared a step",
    );
    assert.equal(h.text, "hmmAmen.");
    assert.equal(s.text, "<think>hmm</think>Amen.<|endoftext|>");
    assert.deepEqual(h.ids, s.ids, "token ids keep special tokens whatever the text policy");
    // A kept control token is never split across chunks.
    assert.ok(
      s.chunks.some((c) => c.text.includes("</think>")),
      "</think> was cut across chunks",
    );
    await runtime.close();
  });

  test("a token-id prompt ending mid-character: the completing bytes emit the whole character", async () => {
    const { runtime, engine } = await scriptedRuntime({ script: () => engine.encode("€ and more").slice(1) });
    const euro = engine.encode("€");
    const { text } = await drain(
      runtime.generate({ prompt: [...engine.encode("price "), euro[0]!], maxTokens: 5 }),
    );
    assert.ok(text.isWellFormed(), "stream text must be well-formed");
    assert.ok(!text.includes("\uFFFD"), `leaked a replacement character: ${JSON.stringify(text)}`);
    await runtime.close();
  });
});

describe("runtime on the scripted engine: a consumer that never reads", () => {
  test("20,000 unread tokens: the chunks read at the end carry every token and character", async () => {
    const text = "And God said, Let there be light: and there was light. ".repeat(400);
    const { runtime, engine } = await scriptedRuntime({
      contextSize: 32_768,
      script: () => engine.encode(text).slice(0, 20_000),
    });
    const channel = runtime.generate({ prompt: "p", maxTokens: 20_000 });
    const result = await channel.result;
    const chunks = [];
    for (let chunk = channel.tryPop(); chunk !== undefined; chunk = channel.tryPop()) chunks.push(chunk);
    assert.equal(result.reason, "length");
    assert.ok(chunks.length <= 2, `a lagging consumer gets merged deltas, got ${chunks.length} chunks`);
    assert.equal(chunks.at(-1)?.finished, true);
    assert.equal(chunks.flatMap((c) => c.tokenIds).length, 20_000);
    assert.equal(chunks.map((c) => c.text).join(""), text.slice(0, 20_000));
    assert.equal(result.text, text.slice(0, 20_000));
    await runtime.close();
  });
});

describe("runtime on the scripted engine: cancellation", () => {
  test("cancel while queued: terminal cancelled chunk, never reaches the engine", async () => {
    const { runtime, engine } = await scriptedRuntime({ slots: 1, script: () => engine.encode(SCRIPT_TEXT) });
    const first = runtime.generate({ prompt: "aaaa", maxTokens: 30 });
    const second = runtime.generate({ prompt: "zzzz", maxTokens: 30 });
    second.cancel();
    const { terminal, ids } = await drain(second);
    assert.equal(terminal.reason, "cancelled");
    assert.equal(ids.length, 0);
    await drain(first);
    const z = engine.encode("z")[0]!;
    assert.ok(
      engine.steps.every((s) => s.items.every((i) => !i.tokens.includes(z))),
      "queued request reached the engine",
    );
    await runtime.close();
  });

  test("cancel during prefill: freed within one prefill chunk, no step touches the slot after", async () => {
    let cancelAtStep = 3;
    let channel: ReturnType<typeof runtime.generate> | undefined;
    const { runtime, engine } = await scriptedRuntime(
      {
        slots: 1,
        contextSize: 1024,
        onStep: ({ step }) => {
          if (step === cancelAtStep) channel!.cancel();
        },
      },
      { prefillChunkSize: 16 },
    );
    const records: CancelRecord[] = [];
    runtime.observe((e) => {
      if (e.type === "end" && e.record.cancel) records.push(e.record.cancel);
    });
    channel = runtime.generate({ prompt: "x".repeat(400), maxTokens: 10 });
    const { terminal, ids } = await drain(channel);
    assert.equal(terminal.reason, "cancelled");
    assert.equal(ids.length, 0);
    const after = runtime.generate({ prompt: "ok", maxTokens: 3 });
    await drain(after);
    // Steps 1-3 prefilled 16 tokens each; the cancelled request appears in no later step.
    assert.deepEqual(
      engine.steps.slice(0, 3).map((s) => s.items[0]!.tokens.length),
      [16, 16, 16],
    );
    const x = engine.encode("x")[0]!;
    assert.ok(
      engine.steps.slice(cancelAtStep).every((s) => s.items.every((i) => !i.tokens.includes(x))),
      "the cancelled request was in a step after the cancel",
    );
    assert.equal(records.length, 1);
    assert.equal(records[0]!.phase, "prefill");
    assert.equal(records[0]!.stepsToFree, 1, "cancelled during step 3: freed right after it");
    assert.equal(runtime.stats.tokensAfterCancel, 0);
    cancelAtStep = -1;
    await runtime.close();
  });

  test("cancel mid-decode: terminal carries the unemitted tokens; slot reused by the queued request", async () => {
    let channel: ReturnType<typeof runtime.generate> | undefined;
    const { runtime, engine } = await scriptedRuntime({
      slots: 1,
      script: () => engine.encode(SCRIPT_TEXT),
      onStep: ({ step }) => {
        if (step === 10) channel!.cancel();
      },
    });
    const records: number[] = [];
    runtime.observe((e) => {
      if (e.type === "end" && e.record.cancel) records.push(e.record.cancel.stepsToFree);
    });
    // Interval 4 and a stop prefix hold back text: the terminal chunk must still carry all of it.
    channel = runtime.generate({ prompt: "p", maxTokens: 50, streamInterval: 4, stop: ["beginning!"] });
    const queued = runtime.generate({ prompt: "q", maxTokens: 5 });
    const { terminal, text, ids } = await drain(channel);
    assert.equal(terminal.reason, "cancelled");
    // Steps 1..9 each produced one token (step 1 = prompt + first token); step 10's token is dropped.
    assert.equal(ids.length, 9);
    assert.equal(text, SCRIPT_TEXT.slice(0, 9));
    const second = await drain(queued);
    assert.equal(second.terminal.reason, "length");
    assert.deepEqual(records, [1]);
    await runtime.close();
  });

  test("break out of for-await cancels and frees the slot for the next request", async () => {
    const { runtime, engine } = await scriptedRuntime({ slots: 1, script: () => engine.encode(SCRIPT_TEXT) });
    const channel = runtime.generate({ prompt: "p", maxTokens: 50 });
    let seen = 0;
    for await (const chunk of channel) {
      seen += chunk.tokenIds.length;
      if (seen >= 3) break;
    }
    const result = await channel.result;
    assert.equal(result.reason, "cancelled");
    assert.ok(result.tokenIds.length >= 3 && result.tokenIds.length <= 4, `${result.tokenIds.length} tokens`);
    const next = await drain(runtime.generate({ prompt: "p", maxTokens: 4 }));
    assert.equal(next.terminal.reason, "length");
    await runtime.close();
  });

  test("cancel racing a natural finish inside the same step: exactly one terminal chunk", async () => {
    for (const cancelFirst of [true, false]) {
      let channel: ReturnType<typeof runtime.generate> | undefined;
      const { runtime, engine } = await scriptedRuntime({
        slots: 1,
        script: () => engine.encode("abc"),
        onStep: ({ step }) => {
          // Step 4 samples EOS. Cancel while it is in flight (cancel first) or right after it (finish first).
          if (step === 4 && cancelFirst) channel!.cancel();
        },
      });
      channel = runtime.generate({ prompt: "p", maxTokens: 10 });
      const chunks = [];
      for await (const chunk of channel) {
        chunks.push(chunk);
        if (chunk.finished && !cancelFirst) channel.cancel();
      }
      assert.equal(chunks.filter((c) => c.finished).length, 1);
      assert.equal(chunks.at(-1)!.reason, cancelFirst ? "cancelled" : "eos");
      assert.equal(chunks.map((c) => c.text).join(""), "abc");
      await runtime.close();
    }
  });

  test("an AbortSignal cancels; an already-aborted one finishes cancelled at once", async () => {
    const { runtime, engine } = await scriptedRuntime({ script: () => engine.encode(SCRIPT_TEXT) });
    const abortedChannel = runtime.generate({ prompt: "zz", signal: AbortSignal.abort() });
    assert.equal(abortedChannel.cancelled, true);
    const aborted = await drain(abortedChannel);
    assert.equal(aborted.terminal.reason, "cancelled");
    const z = engine.encode("z")[0]!;
    assert.ok(
      engine.steps.every((s) => s.items.every((i) => !i.tokens.includes(z))),
      "an aborted request reached the engine",
    );
    const controller = new AbortController();
    const channel = runtime.generate({ prompt: "p", maxTokens: 50, signal: controller.signal });
    const chunks = [];
    for await (const chunk of channel) {
      chunks.push(chunk);
      if (chunks.length === 2) controller.abort();
    }
    assert.equal(chunks.at(-1)!.reason, "cancelled");
    assert.ok(chunks.length <= 4, `${chunks.length} chunks after the abort`);
    await runtime.close();
  });

  test("runtime.cancel(id) stops a request by id", async () => {
    const { runtime, engine } = await scriptedRuntime({ script: () => engine.encode(SCRIPT_TEXT) });
    const channel = runtime.generate({ prompt: "p", id: "req-1", maxTokens: 50 });
    assert.equal(runtime.cancel("req-1"), true);
    assert.equal(runtime.cancel("nope"), false);
    assert.equal((await drain(channel)).terminal.reason, "cancelled");
    await runtime.close();
  });
});

describe("runtime on the scripted engine: scheduling", () => {
  test("a long prefill never starves a decoding slot: it is in every step", async () => {
    const { runtime, engine } = await scriptedRuntime(
      { slots: 2, contextSize: 2048, script: () => engine.encode(SCRIPT_TEXT) },
      { prefillChunkSize: 32 },
    );
    const decoding = runtime.generate({ prompt: "d", maxTokens: 40, ignoreEos: true });
    // Let the first request reach decode before the long prompt arrives.
    await decoding.waitPop();
    const long = runtime.generate({ prompt: "L".repeat(1000), maxTokens: 2 });
    await Promise.all([drain(decoding), drain(long)]);
    const withLong = engine.steps.filter((s) => s.items.some((i) => i.tokens.length > 1));
    assert.ok(withLong.length >= 1000 / 32, `prefill in ${withLong.length} chunks`);
    const decodingSlot = engine.steps[0]!.items[0]!.slot;
    for (const step of withLong.slice(0, -1))
      assert.ok(slotsOf(step).includes(decodingSlot), `step ${step.step} starved the decoding slot`);
    await runtime.close();
  });

  test("automatic prefill chunks keep a slow engine's steps near the target", async () => {
    // 2 ms per prompt token: a 40 ms target allows about 20 prompt tokens per step while a stream decodes,
    // and 80 within the 160 ms solo budget for a prompt read alone. Timers never fire early by more than a
    // millisecond, so a loaded machine can only make the measured cost higher and chunks smaller: the upper
    // bounds below cannot be met by luck.
    const promptCost = (items: readonly StepItem[]) =>
      items.reduce((ms, i) => ms + (i.tokens.length > 1 ? 2 * i.tokens.length : 0), 0);
    for (const withStream of [true, false]) {
      const { runtime, engine } = await scriptedRuntime(
        {
          slots: 2,
          contextSize: 2048,
          stepMs: promptCost,
          script: () => engine.encode(SCRIPT_TEXT.repeat(3)),
        },
        { targetStepMs: 40, soloPrefillStepMs: 160 },
      );
      const stream = withStream
        ? runtime.generate({ prompt: engine.encode("d"), maxTokens: 150, ignoreEos: true })
        : undefined;
      if (stream) await stream.waitPop();
      await drain(runtime.generate({ prompt: "L".repeat(300), maxTokens: 2 }));
      stream?.cancel();
      const chunks = engine.steps.flatMap((s) => s.items.map((i) => i.tokens.length)).filter((n) => n > 1);
      // 40 ms at 2 ms a token while a stream decodes; the 160 ms solo budget otherwise.
      const bound = withStream ? 24 : 84;
      // The initial size is a ceiling: the 301 tokens spread evenly under it (38 chunks of 7-8, or 5 of 60-61).
      assert.equal(
        chunks[0],
        evenChunk(301, withStream ? 8 : 64),
        "the first chunk is the initial size's even share",
      );
      // The last chunk is whatever remains of the prompt.
      assert.ok(
        chunks.slice(1, -1).every((n) => n >= 8 && n <= bound),
        `${withStream ? "with" : "without"} a decoding stream: ${chunks.join(",")}`,
      );
      assert.equal(
        chunks.reduce((a, b) => a + b, 0),
        301,
        "every prompt token read exactly once",
      );
      await runtime.close();
    }
  });

  test("several prompts prefilling at once share one step budget, oldest first", async () => {
    const { runtime, engine } = await scriptedRuntime({ slots: 3, contextSize: 2048 }, { targetStepMs: 40 });
    const prompts = ["a", "b", "c"].map((c) => runtime.generate({ prompt: c.repeat(100), maxTokens: 1 }));
    await Promise.all(prompts.map(drain));
    const first = engine.steps[0]!;
    // Nothing decodes yet: the (solo) initial budget of 64, the oldest prompt's even share of it first (its 101
    // tokens, BOS included, in two chunks of 51 and 50), the rest to the next oldest.
    assert.deepEqual(
      first.items.map((i) => i.tokens.length),
      [51, 13],
      "the initial budget goes to the oldest prompt first",
    );
    await runtime.close();
  });

  test("N concurrent generations over fewer slots all finish correctly", async () => {
    const { runtime, engine } = await scriptedRuntime({
      slots: 3,
      script: (prompt) => prompt.slice(1).reverse(),
    });
    const prompts = Array.from({ length: 10 }, (_, i) => `request number ${i}`);
    const results = await Promise.all(
      prompts.map((p) => drain(runtime.generate({ prompt: p, maxTokens: 100 }))),
    );
    results.forEach((r, i) => {
      assert.equal(r.terminal.reason, "eos");
      assert.equal(r.text, [...prompts[i]!].reverse().join(""));
    });
    assert.ok(
      engine.steps.every((s) => s.items.length <= 3),
      "a step held more items than slots",
    );
    await runtime.close();
  });
});

describe("runtime on the scripted engine: faults and shutdown", () => {
  test("a fault in one slot ends that request with error; the others finish", async () => {
    const { runtime, engine } = await scriptedRuntime({
      slots: 2,
      script: () => engine.encode(SCRIPT_TEXT),
      faults: [{ step: 5, slot: 1, message: "slot exploded" }],
    });
    const a = runtime.generate({ prompt: "a", maxTokens: 20 });
    const b = runtime.generate({ prompt: "b", maxTokens: 20 });
    const [ra, rb] = await Promise.all([drain(a), drain(b)]);
    assert.equal(ra.terminal.reason, "length");
    assert.equal(rb.terminal.reason, "error");
    assert.equal(rb.terminal.error?.message, "slot exploded");
    assert.equal(rb.terminal.error?.code, "engine_error");
    await runtime.close();
  });

  test("an engine-wide failure ends every active and queued request; the runtime keeps serving", async () => {
    const { runtime, engine } = await scriptedRuntime({
      slots: 1,
      script: () => engine.encode(SCRIPT_TEXT),
      faults: [{ step: 3 }],
    });
    const running = runtime.generate({ prompt: "a", maxTokens: 20 });
    const queued = runtime.generate({ prompt: "b", maxTokens: 20 });
    const [r1, r2] = await Promise.all([drain(running), drain(queued)]);
    assert.equal(r1.terminal.reason, "error");
    assert.equal(r1.terminal.error?.code, "engine_failed");
    assert.equal(r2.terminal.reason, "error");
    const again = await drain(runtime.generate({ prompt: "c", maxTokens: 3 }));
    assert.equal(again.terminal.reason, "length");
    await runtime.close();
  });

  test("a bug inside the loop (an engine answering garbage) ends every live request; the runtime recovers", {
    timeout: 20_000,
  }, async () => {
    const { runtime, engine } = await scriptedRuntime({ slots: 1, script: () => engine.encode(SCRIPT_TEXT) });
    const step = engine.step.bind(engine);
    let broken = true;
    // Not a rejection (an engine failure) but a malformed answer: the loop itself throws on it.
    engine.step = async (items) => (broken && engine.steps.length >= 2 ? (undefined as never) : step(items));
    const running = runtime.generate({ prompt: "a", maxTokens: 20 });
    const queued = runtime.generate({ prompt: "b", maxTokens: 20 });
    const [r1, r2] = await Promise.all([drain(running), drain(queued)]);
    for (const r of [r1, r2]) {
      assert.equal(r.terminal.reason, "error");
      assert.equal(r.terminal.error?.code, "internal_error");
    }
    broken = false;
    assert.equal((await drain(runtime.generate({ prompt: "c", maxTokens: 3 }))).terminal.reason, "length");
    await runtime.close();
  });

  test("rejectOnError makes result reject with a SluiceError", async () => {
    const { runtime, engine } = await scriptedRuntime({
      script: () => engine.encode(SCRIPT_TEXT),
      faults: [{ step: 2 }],
    });
    const channel = runtime.generate({ prompt: "a", rejectOnError: true });
    await assert.rejects(
      channel.result,
      (e: unknown) => e instanceof SluiceError && e.code === "engine_failed",
    );
    await runtime.close();
  });

  test("close() ends every live request with a terminal chunk and refuses new ones", async () => {
    const { runtime, engine } = await scriptedRuntime({ slots: 1, script: () => engine.encode(SCRIPT_TEXT) });
    const channels = [1, 2, 3].map(() => runtime.generate({ prompt: "a", maxTokens: 40 }));
    await channels[0]!.waitPop();
    await runtime.close();
    for (const channel of channels) assert.equal((await channel.result).reason, "cancelled");
    assert.throws(
      () => runtime.generate({ prompt: "a" }),
      (e: unknown) => e instanceof SluiceError && e.code === "runtime_closed",
    );
  });

  test("close({ drain: true }) lets running requests finish", async () => {
    const { runtime, engine } = await scriptedRuntime({ slots: 1, script: () => engine.encode(SCRIPT_TEXT) });
    const channel = runtime.generate({ prompt: "a", maxTokens: 10 });
    await runtime.close({ drain: true });
    assert.equal((await channel.result).reason, "length");
  });
});

describe("validateStreamingSubmission through generate()", () => {
  const cases: [string, Record<string, unknown>, string, string][] = [
    ["empty prompt", { prompt: "" }, "invalid_request", "prompt"],
    ["empty token prompt", { prompt: [] }, "invalid_request", "prompt"],
    ["bad token id", { prompt: [1, 99999] }, "invalid_request", "prompt"],
    ["maxTokens < 1", { prompt: "a", maxTokens: 0 }, "invalid_request", "maxTokens"],
    ["fractional maxTokens", { prompt: "a", maxTokens: 1.5 }, "invalid_request", "maxTokens"],
    ["prompt + maxTokens over context", { prompt: "a", maxTokens: 10_000 }, "prompt_too_long", "maxTokens"],
    ["prompt over context", { prompt: "a".repeat(600) }, "prompt_too_long", "prompt"],
    ["unknown option", { prompt: "a", max_tokens: 3 }, "invalid_request", "max_tokens"],
    ["negative temperature", { prompt: "a", temperature: -1 }, "invalid_request", "temperature"],
    ["topP 0", { prompt: "a", topP: 0 }, "invalid_request", "topP"],
    ["empty stop", { prompt: "a", stop: [""] }, "invalid_request", "stop"],
    ["stop not a string", { prompt: "a", stop: [3] }, "invalid_request", "stop"],
    ["bad signal", { prompt: "a", signal: {} }, "invalid_request", "signal"],
  ];
  for (const [name, request, code, param] of cases) {
    test(`${name} -> ${code} (${param})`, async () => {
      const { runtime } = await scriptedRuntime();
      assert.throws(
        () => runtime.generate(request as never),
        (e: unknown) =>
          e instanceof SluiceError && e.code === code && e.param === param && e.message.length > 20,
      );
      // The runtime still serves.
      assert.equal((await drain(runtime.generate({ prompt: "ok", maxTokens: 2 }))).terminal.reason, "length");
      await runtime.close();
    });
  }

  test("a duplicate live id is refused; a full queue is refused with queue_full", async () => {
    const { runtime } = await scriptedRuntime({ slots: 1 }, { maxQueue: 2 });
    const a = runtime.generate({ prompt: "a", id: "same", maxTokens: 5, ignoreEos: true });
    assert.throws(
      () => runtime.generate({ prompt: "a", id: "same" }),
      (e: unknown) => (e as SluiceError).code === "channel_reused",
    );
    await a.waitPop(); // admitted: it no longer counts against the queue
    const more = [
      runtime.generate({ prompt: "b", maxTokens: 2 }),
      runtime.generate({ prompt: "c", maxTokens: 2 }),
    ];
    assert.throws(
      () => runtime.generate({ prompt: "d" }),
      (e: unknown) => (e as SluiceError).code === "queue_full",
    );
    await Promise.all([a, ...more].map(drain));
    await runtime.close();
  });
});
