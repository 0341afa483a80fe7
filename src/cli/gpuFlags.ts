import type { LlamaEngineOptions, LlamaGpu } from "../engine/LlamaEngine.ts";
import { SluiceError } from "../errors.ts";

/**
 * The flags that choose where and how a command's model runs (parseArgs options; SLUICE_GPU,
 * SLUICE_GPU_LAYERS, SLUICE_FLASH_ATTN).
 */
export const GPU_FLAGS = {
  gpu: { type: "string" },
  "gpu-layers": { type: "string" },
  "flash-attn": { type: "string" },
} as const;

/** Their help lines, at the column the commands' help uses. */
export function gpuHelp(column: number): string {
  return (
    `${"  --gpu <backend>".padEnd(column)}auto, cuda, vulkan, metal or off (default: auto where a GPU toolkit\n` +
    `${"".padEnd(column)}is found, else off)\n` +
    `${"  --gpu-layers <n>".padEnd(column)}model layers to offload: a count, max or auto (default auto)\n` +
    `${"  --flash-attn <mode>".padEnd(column)}llama.cpp flash attention: on, off or auto (default off on the CPU,\n` +
    `${"".padEnd(column)}where it is slower; auto on a GPU)\n`
  );
}

/**
 * `--flash-attn`'s words (llama-server's) as the option's values. Anything else is refused here, under the
 * flag's name: passed on, it would be refused as `flashAttention` with the library's words (`true`, `false`),
 * which the flag does not take.
 */
const FLASH_ATTN: Record<string, boolean | "auto"> = { on: true, off: false, auto: "auto" };

/**
 * The engine options the flags set. `--gpu` and `--gpu-layers` are passed on as typed: `LlamaEngine.create`
 * checks them and names the option in what it refuses.
 */
export function gpuOptions(values: {
  gpu?: string | undefined;
  "gpu-layers"?: string | undefined;
  "flash-attn"?: string | undefined;
}): Pick<LlamaEngineOptions, "gpu" | "gpuLayers" | "flashAttention"> {
  const layers = values["gpu-layers"];
  const flash = values["flash-attn"];
  if (flash !== undefined && !Object.hasOwn(FLASH_ATTN, flash)) {
    throw new SluiceError(
      "invalid_option",
      `--flash-attn (or SLUICE_FLASH_ATTN) expects on, off or auto; got "${flash}".`,
      { param: "--flash-attn" },
    );
  }
  return {
    ...(flash !== undefined ? { flashAttention: FLASH_ATTN[flash]! } : {}),
    ...(values.gpu !== undefined ? { gpu: values.gpu as LlamaGpu } : {}),
    ...(layers !== undefined
      ? { gpuLayers: /^\d+$/.test(layers) ? Number(layers) : (layers as "max" | "auto") }
      : {}),
  };
}
