import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { LlamaEngine } from "../../src/engine/LlamaEngine.ts";
import { ScriptedEngine } from "../../src/engine/ScriptedEngine.ts";
import { SluiceError } from "../../src/errors.ts";
import { Runtime } from "../../src/runtime/Runtime.ts";
import { bundledVocabulary, drain, scriptedRuntime } from "../helpers/scripted.ts";

const isCode = (code: string, param?: string) => (e: unknown) =>
  e instanceof SluiceError && e.code === code && (param === undefined || e.param === param);

describe("maxQueue bounds the requests that must wait, not those a free slot takes at once", () => {
  test("for any slots, maxQueue and burst, an idle runtime accepts min(burst, slots + maxQueue)", async () => {
    const vocabulary = await bundledVocabulary();
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 6 }),
        fc.integer({ min: 0, max: 5 }),
        fc.integer({ min: 1, max: 16 }),
        async (slots, maxQueue, burst) => {
          const engine = new ScriptedEngine(vocabulary, { slots });
          const runtime = await Runtime.create({ engine, maxQueue });
          const accepted = [];
          let refused = 0;
          for (let i = 0; i < burst; i++) {
            try {
              accepted.push(runtime.generate({ prompt: "ab", maxTokens: 2 }));
            } catch (error) {
              assert.ok(isCode("queue_full")(error));
              refused++;
            }
          }
          assert.equal(accepted.length, Math.min(burst, slots + maxQueue));
          assert.equal(refused, burst - accepted.length);
          for (const channel of accepted) assert.notEqual((await drain(channel)).terminal.reason, "error");
          await runtime.close();
        },
      ),
      { numRuns: 60 },
    );
  });

  test("maxQueue 0 serves up to the slot count and refuses only what would wait", async () => {
    const { runtime } = await scriptedRuntime({ slots: 4 }, { maxQueue: 0 });
    const four = [1, 2, 3, 4].map(() => runtime.generate({ prompt: "a", maxTokens: 3, ignoreEos: true }));
    assert.throws(() => runtime.generate({ prompt: "a" }), isCode("queue_full"));
    await Promise.all(four.map(drain));
    // Slots are free again: the next one is served.
    assert.equal((await drain(runtime.generate({ prompt: "ab", maxTokens: 2 }))).terminal.reason, "length");
    await runtime.close();
  });
});

describe("options are validated eagerly with a typed error naming the option", () => {
  const bad: [string, Record<string, unknown>][] = [
    ["slots", { slots: 0 }],
    ["slots", { slots: 1.5 }],
    ["slots", { slots: 257 }],
    ["slots", { slots: "4" }],
    ["threads", { threads: 0 }],
    ["threads", { threads: Number.NaN }],
    ["contextSize", { contextSize: -1 }],
    ["batchSize", { batchSize: Number.POSITIVE_INFINITY }],
    ["model", { model: "" }],
    ["model", { model: 42 }],
    ["targetStepMs", { targetStepMs: Number.NaN }],
    ["targetStepMs", { targetStepMs: 0 }],
    ["targetStepMs", { targetStepMs: -5 }],
    ["prefillChunkSize", { prefillChunkSize: 0 }],
    ["prefillChunkSize", { prefillChunkSize: "fast" }],
    ["maxQueue", { maxQueue: -1 }],
    ["maxQueue", { maxQueue: Number.NaN }],
    ["defaultMaxTokens", { defaultMaxTokens: 0 }],
    ["onLoadProgress", { onLoadProgress: "yes" }],
    ["signal", { signal: {} }],
    ["engine", { engine: { step() {} } }],
    ["maxQeue", { maxQeue: 3 }],
  ];
  for (const [param, options] of bad) {
    test(`Runtime.create(${JSON.stringify(options) ?? String(options)}) -> invalid_option (${param})`, async () => {
      await assert.rejects(Runtime.create(options), (e: unknown) => {
        assert.ok(isCode("invalid_option", param)(e), String(e));
        assert.match((e as Error).message, new RegExp(`Runtime\\.create: .*${param}`));
        return true;
      });
    });
  }

  test("model options beside a given engine are refused (they are the engine's)", async () => {
    const engine = new ScriptedEngine(await bundledVocabulary());
    await assert.rejects(Runtime.create({ engine, slots: 2 }), isCode("invalid_option", "slots"));
  });

  test("LlamaEngine.create refuses bad options before reading any file", async () => {
    for (const [param, options] of bad.filter(([p]) =>
      ["slots", "threads", "contextSize", "batchSize"].includes(p),
    )) {
      await assert.rejects(
        LlamaEngine.create({ ...options, model: "/nonexistent.gguf" } as never),
        isCode("invalid_option", param),
      );
    }
  });

  test("any non-finite or out-of-range number for a numeric option is refused, never spun on", async () => {
    const numeric = [
      "slots",
      "threads",
      "contextSize",
      "batchSize",
      "targetStepMs",
      "maxQueue",
      "defaultMaxTokens",
    ];
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...numeric),
        fc.oneof(
          fc.constantFrom(Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, 1e12),
          fc.double({ max: -1e-9, noNaN: true }),
        ),
        async (param, value) => {
          // A missing model: should a bad value ever pass, the test fails fast instead of loading one.
          const options = { [param]: value, model: "/nonexistent.gguf" };
          await assert.rejects(Runtime.create(options), isCode("invalid_option", param));
        },
      ),
      { numRuns: 200 },
    );
  });
});

describe("resources held by the dead", () => {
  test("50,000 submit-and-cancel calls while every slot is busy keep no memory for the cancelled", async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let stepped!: () => void;
    const inStep = new Promise<void>((resolve) => (stepped = resolve));
    const { runtime } = await scriptedRuntime(
      {
        slots: 1,
        onStep: async () => {
          stepped();
          await gate;
        },
      },
      { maxQueue: 100 },
    );
    const busy = runtime.generate({ prompt: "a", maxTokens: 2, ignoreEos: true });
    await inStep;
    const heap = () => {
      globalThis.gc?.();
      return process.memoryUsage().heapUsed;
    };
    const before = heap();
    for (let i = 0; i < 50_000; i++) runtime.generate({ prompt: "In the beginning", maxTokens: 4 }).cancel();
    // Let the deferred cancels land; the only step is still held.
    await new Promise<void>((resolve) => setImmediate(resolve));
    const grown = heap() - before;
    assert.equal(runtime.load.queued, 0);
    // Kept, the entries cost about 3.5 kB each (171 MiB measured for 50,000); compacted, a few dozen remain.
    assert.ok(grown < 16 * 1024 * 1024, `heap grew ${(grown / 1048576).toFixed(1)} MiB`);
    release();
    assert.equal((await drain(busy)).terminal.reason, "length");
    await runtime.close();
  });

  test("close() after close({ drain: true }) stops the drain: live requests end cancelled", async () => {
    const { runtime, engine } = await scriptedRuntime({
      slots: 1,
      script: () => Array.from({ length: 300 }, () => engine.encode("a")[0]!),
    });
    const channel = runtime.generate({ prompt: "a", maxTokens: 300 });
    await channel.waitPop();
    const draining = runtime.close({ drain: true });
    await runtime.close();
    await draining;
    const result = await channel.result;
    assert.equal(result.reason, "cancelled");
    assert.ok(result.usage.completionTokens < 300);
  });
});

describe("a text prompt too long for the context is refused by its size before it is tokenized", () => {
  test("1 MiB of text: prompt_too_long without tokenizing; a prompt that fits is tokenized", async () => {
    const engine = new ScriptedEngine(await bundledVocabulary(), { contextSize: 512 });
    let tokenized = 0;
    const tokenize = engine.tokenize.bind(engine);
    engine.tokenize = (text: string) => {
      tokenized += text.length;
      return tokenize(text);
    };
    const runtime = await Runtime.create({ engine });
    assert.throws(
      () => runtime.generate({ prompt: "x".repeat(1 << 20) }),
      isCode("prompt_too_long", "prompt"),
    );
    assert.throws(
      () => runtime.generate({ prompt: "é".repeat(1 << 19) }),
      isCode("prompt_too_long", "prompt"),
    );
    assert.equal(tokenized, 0);
    assert.throws(
      () => runtime.generate({ prompt: new Array(600).fill(5) }),
      isCode("prompt_too_long", "prompt"),
    );
    assert.equal(
      (await drain(runtime.generate({ prompt: "a".repeat(100), maxTokens: 2 }))).terminal.reason,
      "length",
    );
    assert.equal(tokenized, 100);
    await runtime.close();
  });
});

describe("a per-request promise of the end record", () => {
  test("resolves once the slot is free, for a natural finish, a cancel and a queued cancel", async () => {
    const { runtime } = await scriptedRuntime({ slots: 1 });
    const done = runtime.generate({ prompt: "ab", maxTokens: 3, ignoreEos: true, id: "done" });
    const cut = runtime.generate({ prompt: "ab", maxTokens: 300, ignoreEos: true, id: "cut" });
    const queued = runtime.generate({ prompt: "ab", maxTokens: 3, id: "queued" });
    assert.equal(runtime.endRecord("nope"), undefined);
    const records = ["done", "cut", "queued"].map((id) => runtime.endRecord(id)!);
    queued.cancel();
    assert.equal((await records[2]!).reason, "cancelled");
    assert.equal((await records[0]!).reason, "length");
    await cut.waitPop();
    cut.cancel();
    const record = await records[1]!;
    assert.equal(record.reason, "cancelled");
    assert.ok(record.cancel!.stepsToFree <= 1);
    assert.equal(runtime.snapshot().slots[0]!.state, "free");
    assert.equal(runtime.endRecord("cut"), undefined, "a fully ended request has no pending record");
    assert.equal((await done.result).reason, "length");
    await runtime.close();
  });
});
