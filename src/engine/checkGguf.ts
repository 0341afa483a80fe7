import { existsSync, statSync } from "node:fs";
import { readGgufFileInfo } from "node-llama-cpp";
import { SluiceError } from "../errors.ts";

type Metadata = Record<string, unknown>;

// llama.cpp aborts the whole process (an uncatchable GGML_ASSERT) on some missing hyperparameters, so a
// user-supplied file is checked here first and rejected with a clear error instead.
const REQUIRED_HPARAMS = ["context_length", "embedding_length", "block_count"] as const;
const TRANSFORMER_HPARAMS = ["feed_forward_length", "attention.head_count"] as const;
const TRANSFORMER_ARCHS = new Set([
  "llama",
  "qwen2",
  "qwen3",
  "mistral",
  "gemma",
  "gemma2",
  "gemma3",
  "phi3",
  "granite",
]);

function lookup(metadata: Metadata, dotted: string): unknown {
  let node: unknown = metadata;
  for (const part of dotted.split(".")) {
    if (node === null || typeof node !== "object") return undefined;
    node = (node as Metadata)[part];
  }
  return node;
}

/** Reads a GGUF's metadata and throws `model_invalid` when llama.cpp would fail (or crash) loading it. */
export async function checkGguf(path: string): Promise<{ architecture: string; contextLength: number }> {
  if (!existsSync(path) || !statSync(path).isFile()) {
    throw new SluiceError(
      "model_invalid",
      `Model file not found: ${path}. Pass the path of a local .gguf file.`,
    );
  }
  let metadata: Metadata;
  try {
    metadata = (await readGgufFileInfo(path, { readTensorInfo: false })).metadata as unknown as Metadata;
  } catch (cause) {
    throw new SluiceError(
      "model_invalid",
      `${path} is not a readable GGUF file: ${(cause as Error).message}`,
      {
        cause,
      },
    );
  }
  const architecture = lookup(metadata, "general.architecture");
  if (typeof architecture !== "string") {
    throw new SluiceError("model_invalid", `${path} has no general.architecture; it is not a model GGUF.`);
  }
  const needed = [...REQUIRED_HPARAMS, ...(TRANSFORMER_ARCHS.has(architecture) ? TRANSFORMER_HPARAMS : [])];
  const missing = needed.filter((key) => lookup(metadata, `${architecture}.${key}`) === undefined);
  if (missing.length > 0) {
    throw new SluiceError(
      "model_invalid",
      `${path} lacks required metadata ${missing.map((k) => `${architecture}.${k}`).join(", ")}; llama.cpp cannot load it.`,
    );
  }
  if (!Array.isArray(lookup(metadata, "tokenizer.ggml.tokens"))) {
    throw new SluiceError("model_invalid", `${path} has no tokenizer vocabulary (tokenizer.ggml.tokens).`);
  }
  return { architecture, contextLength: Number(lookup(metadata, `${architecture}.context_length`)) };
}
