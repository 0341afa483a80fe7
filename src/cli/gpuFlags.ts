import type { LlamaEngineOptions, LlamaGpu } from "../engine/LlamaEngine.ts";

/** The flags that choose where a command's model runs (parseArgs options; SLUICE_GPU, SLUICE_GPU_LAYERS). */
export const GPU_FLAGS = {
  gpu: { type: "string" },
  "gpu-layers": { type: "string" },
} as const;

/** Their help lines, at the column the commands' help uses. */
export function gpuHelp(column: number): string {
  return (
    `${"  --gpu <backend>".padEnd(column)}auto, cuda, vulkan, metal or off (default: auto where a GPU toolkit\n` +
    `${"".padEnd(column)}is found, else off)\n` +
    `${"  --gpu-layers <n>".padEnd(column)}model layers to offload: a count, max or auto (default auto)\n`
  );
}

/**
 * The engine options the flags set. Values are passed on as typed: `LlamaEngine.create` checks them and names
 * the option in what it refuses.
 */
export function gpuOptions(values: {
  gpu?: string | undefined;
  "gpu-layers"?: string | undefined;
}): Pick<LlamaEngineOptions, "gpu" | "gpuLayers"> {
  const layers = values["gpu-layers"];
  return {
    ...(values.gpu !== undefined ? { gpu: values.gpu as LlamaGpu } : {}),
    ...(layers !== undefined
      ? { gpuLayers: /^\d+$/.test(layers) ? Number(layers) : (layers as "max" | "auto") }
      : {}),
  };
}
