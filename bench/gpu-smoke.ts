/**
 * GPU smoke test, for a machine with a GPU: loads the model with `--gpu auto` (or the backend given), reports
 * which llama.cpp build runs it and how many layers it offloaded, streams 64 greedy tokens, then does the same
 * on the CPU in the same run (alternating, median of 3) and prints tokens/s for both and the ratio. On a CPU-only machine both runs are
 * the CPU (backend "cpu"); `--require-gpu` makes that an error (exit 1), for a GPU CI job.
 *
 *   node --import tsx bench/gpu-smoke.ts [--gpu auto|cuda|vulkan|metal] [--gpu-layers n|max|auto]
 *       [--model x.gguf] [--tokens 64] [--threads n] [--require-gpu]
 */
import { parseArgs } from "node:util";
import { getLlamaGpuTypes } from "node-llama-cpp";
import { gpuOptions } from "../src/cli/gpuFlags.ts";
import type { LlamaEngineOptions } from "../src/engine/LlamaEngine.ts";
import { Runtime } from "../src/runtime/Runtime.ts";

const { values } = parseArgs({
  options: {
    gpu: { type: "string", default: "auto" },
    "gpu-layers": { type: "string" },
    model: { type: "string" },
    tokens: { type: "string", default: "64" },
    threads: { type: "string" },
    "require-gpu": { type: "boolean" },
  },
});
const tokens = Number(values.tokens);
const PROMPT = "Genesis 1\n1 In the beginning";

interface Run {
  backend: string;
  gpuLayers: number | undefined;
  loadMs: number;
  firstTokenMs: number;
  tokensPerSecond: number;
  completionTokens: number;
  text: string;
}

async function load(options: Pick<LlamaEngineOptions, "gpu" | "gpuLayers">) {
  const started = performance.now();
  const runtime = await Runtime.create({
    slots: 1,
    ...(values.model ? { model: values.model } : {}),
    ...(values.threads ? { threads: Number(values.threads) } : {}),
    ...options,
  });
  const loadMs = performance.now() - started;
  // A warm-up generation: the first decode on a GPU pays for kernel loading and allocation.
  await runtime.generate({ prompt: PROMPT, maxTokens: 4, temperature: 0 }).result;
  return { runtime, loadMs };
}

async function generate({ runtime, loadMs }: Awaited<ReturnType<typeof load>>): Promise<Run> {
  const channel = runtime.generate({
    prompt: PROMPT,
    maxTokens: tokens,
    temperature: 0,
    ignoreEos: true,
    cachePrompt: false,
  });
  let text = "";
  for await (const chunk of channel) text += chunk.text;
  const result = await channel.result;
  if (result.reason === "error") throw new Error(`generation failed: ${result.error?.message}`);
  const { backend = "unknown", gpuLayers } = runtime.engine.info;
  return {
    backend,
    gpuLayers,
    loadMs,
    firstTokenMs: result.timings.firstTokenMs,
    tokensPerSecond: result.timings.tokensPerSecond,
    completionTokens: result.usage.completionTokens,
    text,
  };
}

function median(runs: Run[]): Run {
  return [...runs].sort((a, b) => a.tokensPerSecond - b.tokensPerSecond)[Math.floor(runs.length / 2)]!;
}

const supported = await getLlamaGpuTypes("supported");
console.log(`node-llama-cpp finds: ${supported.map((type) => type || "cpu").join(", ")}`);
const gpuRuntime = await load(gpuOptions({ gpu: values.gpu, "gpu-layers": values["gpu-layers"] }));
const cpuRuntime = await load({ gpu: "off" });
// Alternating, median of 3: a shared machine's noise falls on both sides alike.
const gpuRuns: Run[] = [];
const cpuRuns: Run[] = [];
for (let i = 0; i < 3; i++) {
  gpuRuns.push(await generate(gpuRuntime));
  cpuRuns.push(await generate(cpuRuntime));
}
await gpuRuntime.runtime.close();
await cpuRuntime.runtime.close();
const gpu = median(gpuRuns);
const cpu = median(cpuRuns);

const rows = [
  ["", "backend", "layers on GPU", "load ms", "first token ms", "tokens", "tok/s"],
  ...[
    [`--gpu ${values.gpu}`, gpu],
    ["--gpu off", cpu],
  ].map(([label, run]) => {
    const r = run as Run;
    return [
      label as string,
      r.backend,
      String(r.gpuLayers ?? "-"),
      r.loadMs.toFixed(0),
      r.firstTokenMs.toFixed(1),
      String(r.completionTokens),
      r.tokensPerSecond.toFixed(1),
    ];
  }),
];
const widths = rows[0]!.map((_, i) => Math.max(...rows.map((row) => row[i]!.length)));
for (const row of rows) console.log(row.map((cell, i) => cell.padStart(widths[i]!)).join("  "));
console.log(`tok/s ${gpu.backend} ÷ cpu: ${(gpu.tokensPerSecond / cpu.tokensPerSecond).toFixed(2)}x`);
// Greedy output may differ in the last bits of the logits between backends; shown, not required.
console.log(`same greedy text on both: ${gpu.text === cpu.text ? "yes" : "no"}`);
console.log(`text (${gpu.backend}): ${JSON.stringify(gpu.text.slice(0, 120))}`);

if (values["require-gpu"] && gpu.backend === "cpu") {
  console.error("gpu-smoke: no GPU backend loaded (--require-gpu)");
  process.exitCode = 1;
}
