import { SluiceError } from "../errors.ts";
import type { RuntimeOptions } from "../runtime/RuntimeOptions.ts";

/**
 * The speculative decoding flags of the commands that load a model (parseArgs options; SLUICE_DRAFTER,
 * SLUICE_MODEL_DRAFT, SLUICE_DRAFT_MAX).
 */
export const DRAFT_FLAGS = {
  drafter: { type: "string" },
  "model-draft": { type: "string" },
  "draft-max": { type: "string" },
} as const;

/** Their help lines, at the column the commands' help uses; `perRequest`: requests can opt out. */
export function draftHelp(column: number, perRequest: boolean): string {
  const pad = "".padEnd(column);
  return (
    `${"  --drafter <name>".padEnd(column)}speculative decoding, verified several tokens per step (greedy output\n` +
    `${pad}unchanged): prompt-lookup (n-gram matches in the prompt and output),\n` +
    `${pad}draft-model (a small model drafts: --model-draft) or off (default off,\n` +
    `${pad}draft-model with --model-draft${perRequest ? "; per request: speculative" : ""})\n` +
    `${"  --model-draft <path>".padEnd(column)}GGUF draft model with the model's vocabulary (llama-server's flag),\n` +
    `${pad}loaded with the same slots, threads and context size (default: none)\n` +
    `${"  --draft-max <n>".padEnd(column)}most draft tokens per request per step, 1-64 (llama.cpp's\n` +
    `${pad}--spec-draft-n-max) (default 8; each request's draft length adapts below it)\n`
  );
}

/**
 * The runtime options the flags set. `--model-draft` implies `--drafter draft-model`; a drafter that cannot
 * go with it, or draft-model without it, is refused here under the flags' names. Other values are passed on
 * as typed: `Runtime.create` checks them.
 */
export function draftOptions(values: {
  drafter?: string | undefined;
  "model-draft"?: string | undefined;
  "draft-max"?: string | undefined;
}): Pick<RuntimeOptions, "drafter" | "draftModel" | "draftMax"> {
  const { drafter } = values;
  const draftModel = values["model-draft"];
  if (draftModel !== undefined && drafter !== undefined && drafter !== "draft-model") {
    throw new SluiceError(
      "invalid_request",
      `--model-draft drafts with --drafter draft-model, not ${drafter}; remove one of them.`,
      { param: "--model-draft" },
    );
  }
  if (drafter === "draft-model" && draftModel === undefined) {
    throw new SluiceError(
      "invalid_request",
      "--drafter draft-model needs --model-draft <path>, a GGUF draft model with the model's vocabulary.",
      { param: "--model-draft" },
    );
  }
  const max = values["draft-max"];
  // The runtime's bound, refused here under the flag's name (its help says 1-64).
  if (max !== undefined && !(Number.isInteger(Number(max)) && Number(max) >= 1 && Number(max) <= 64)) {
    throw new SluiceError("invalid_request", `--draft-max expects an integer from 1 to 64; got "${max}".`, {
      param: "--draft-max",
    });
  }
  return {
    ...(drafter !== undefined ? { drafter: drafter as RuntimeOptions["drafter"] & string } : {}),
    ...(draftModel !== undefined ? { draftModel } : {}),
    ...(max !== undefined ? { draftMax: Number(max) } : {}),
  };
}
