import assert from "node:assert/strict";
import { test } from "node:test";
import { getLlamaGpuTypes } from "node-llama-cpp";
import { gpuOptions } from "../../src/cli/gpuFlags.ts";
import { LlamaEngine } from "../../src/engine/LlamaEngine.ts";
import { SluiceError } from "../../src/errors.ts";
import { Runtime } from "../../src/runtime/Runtime.ts";

const gpuTypes = await getLlamaGpuTypes("supported");
const hasGpuToolkit = gpuTypes.some((type) => type !== false);

function refused(param: string, value: string) {
  return (error: unknown) =>
    error instanceof SluiceError &&
    error.code === "invalid_option" &&
    error.param === param &&
    error.message.includes(value);
}

test("gpu and gpuLayers are checked before anything loads", async () => {
  await assert.rejects(LlamaEngine.create({ gpu: "tpu" as never }), refused("gpu", '"tpu"'));
  await assert.rejects(LlamaEngine.create({ gpu: "" as never }), refused("gpu", '""'));
  for (const bad of [-1, 1.5, "most", "1"]) {
    await assert.rejects(
      LlamaEngine.create({ gpuLayers: bad as never }),
      refused("gpuLayers", JSON.stringify(bad)),
    );
  }
});

test("gpu off runs on the CPU with no layers offloaded, whatever gpuLayers says", async () => {
  const engine = await LlamaEngine.create({ gpu: "off", gpuLayers: "max", threads: 1, slots: 1 });
  try {
    assert.equal(engine.info.backend, "cpu");
    assert.equal(engine.info.gpuLayers, 0);
  } finally {
    await engine.close();
  }
});

test("without a gpu option, a machine with no GPU toolkit runs on the CPU", {
  skip: hasGpuToolkit && `node-llama-cpp finds a GPU toolkit here (${gpuTypes.join(", ")})`,
}, async () => {
  const engine = await LlamaEngine.create({ threads: 1, slots: 1 });
  try {
    assert.equal(engine.info.backend, "cpu");
    assert.equal(engine.info.gpuLayers, 0);
  } finally {
    await engine.close();
  }
});

test("an explicit GPU build that cannot load here is a model_load_failed that says what to change", {
  skip: gpuTypes.includes("cuda") && "CUDA is usable here",
}, async () => {
  await assert.rejects(
    LlamaEngine.create({ gpu: "cuda", threads: 1, slots: 1 }),
    (error: unknown) =>
      error instanceof SluiceError &&
      error.code === "model_load_failed" &&
      /gpu: cuda/.test(error.message) &&
      /"auto" or "off"/.test(error.message),
  );
});

test("the CLI flags map to the engine options as typed", () => {
  assert.deepEqual(gpuOptions({}), {});
  assert.deepEqual(gpuOptions({ gpu: "cuda", "gpu-layers": "33" }), { gpu: "cuda", gpuLayers: 33 });
  assert.deepEqual(gpuOptions({ "gpu-layers": "max" }), { gpuLayers: "max" });
  // Anything else goes through unchanged, for LlamaEngine.create to refuse by name.
  assert.deepEqual(gpuOptions({ gpu: "tpu", "gpu-layers": "-1" }), { gpu: "tpu", gpuLayers: "-1" });
  assert.deepEqual(gpuOptions({ "flash-attn": "on" }), { flashAttention: true });
  assert.deepEqual(gpuOptions({ "flash-attn": "off" }), { flashAttention: false });
  assert.deepEqual(gpuOptions({ "flash-attn": "auto" }), { flashAttention: "auto" });
});

test("--flash-attn refuses anything but on, off and auto under the flag's own name", () => {
  // The library's words (true, false) are not the flag's; the message must not tell a CLI user to use them.
  for (const bad of ["true", "false", "1", "yes", "ON", "", "constructor", "__proto__"]) {
    assert.throws(
      () => gpuOptions({ "flash-attn": bad }),
      (error: unknown) =>
        error instanceof SluiceError &&
        error.code === "invalid_option" &&
        error.param === "--flash-attn" &&
        error.message.includes(`"${bad}"`) &&
        /on, off or auto/.test(error.message) &&
        /SLUICE_FLASH_ATTN/.test(error.message),
    );
  }
});

test("flashAttention is checked before anything loads", async () => {
  for (const bad of ["on", "", 1, null]) {
    await assert.rejects(
      LlamaEngine.create({ flashAttention: bad as never }),
      refused("flashAttention", JSON.stringify(bad)),
    );
  }
});

test("flash attention is off by default on the CPU, and on when asked; both generate", async () => {
  const prompt = [1, 450, 3186, 310, 278];
  for (const flashAttention of [undefined, true] as const) {
    const engine = await LlamaEngine.create({
      gpu: "off",
      threads: 1,
      slots: 1,
      ...(flashAttention === undefined ? {} : { flashAttention }),
    });
    try {
      assert.equal(engine.info.flashAttention, flashAttention ?? false);
      const runtime = await Runtime.create({ engine });
      try {
        const result = await runtime.generate({ prompt, maxTokens: 4, temperature: 0, ignoreEos: true })
          .result;
        assert.equal(result.tokenIds.length, 4);
      } finally {
        await runtime.close();
      }
    } finally {
      await engine.close();
    }
  }
});

test("with flash attention on the CPU, a cached prefix leaves 64 tokens to read and greedy output is unchanged", async () => {
  const options = { gpu: "off", slots: 1, contextSize: 512, threads: 1, flashAttention: true } as const;
  const cached = await Runtime.create(options);
  const plain = await Runtime.create({ ...options, promptCache: false });
  try {
    assert.equal(cached.engine.info.minPromptChunk, 64);
    const verse =
      "And God said, Let there be light: and there was light. And God saw the light, that it was good: ";
    // A conversation that grows by less than 64 tokens a turn, then a prompt shorter than 64.
    const turns = [
      verse.repeat(6),
      `${verse.repeat(6)}and God divided`,
      `${verse.repeat(6)}and God`,
      "And God",
    ];
    for (const prompt of turns) {
      const [x, y] = await Promise.all([
        cached.generate({ prompt, maxTokens: 6 }).result,
        plain.generate({ prompt, maxTokens: 6 }).result,
      ]);
      assert.deepEqual(
        x.tokenIds,
        y.tokenIds,
        `differs with the cache: ${JSON.stringify(prompt.slice(-20))}`,
      );
      const read = x.usage.promptTokens - x.usage.cachedTokens;
      assert.ok(read >= Math.min(64, x.usage.promptTokens), `${read} prompt tokens read`);
    }
    assert.ok(cached.stats.promptTokensCached > 0, "the conversation reused its prefix");
  } finally {
    await cached.close();
    await plain.close();
  }
});
