import { modelInvalid } from "./modelInvalid.ts";
import type { GgufEntry } from "./readGgufHeader.ts";

/**
 * Checks the vocabulary as llama.cpp loads it (llama-vocab.cpp): `tokenizer.ggml.tokens` is a non-empty array
 * of strings, and no two tokens are the same bytes (llama.cpp asserts that its text-to-id map has one entry per
 * token: a duplicate aborts the process). An empty token counts as "[EMPTY_<id>]", as llama.cpp renames it.
 *
 * @returns the vocabulary size.
 * @throws SluiceError `model_invalid` naming the file, the token ids and text, and the fault.
 */
export function checkTokens(path: string, metadata: ReadonlyMap<string, GgufEntry>): number {
  const tokens = metadata.get("tokenizer.ggml.tokens");
  if (tokens?.kind !== "array" || tokens.type !== "string" || tokens.length === 0) {
    throw modelInvalid(path, "has no tokenizer vocabulary (tokenizer.ggml.tokens, an array of strings).");
  }
  // The reader keeps these items as latin1, one char per byte, so equal strings are equal bytes.
  const items = tokens.items as readonly string[];
  const seen = new Map<string, number>();
  for (let id = 0; id < items.length; id++) {
    const text = items[id] === "" ? `[EMPTY_${id}]` : items[id]!;
    const first = seen.get(text);
    if (first !== undefined) {
      const shown = JSON.stringify(Buffer.from(text, "latin1").toString("utf8"));
      throw modelInvalid(
        path,
        `tokenizer.ggml.tokens has token ${id} equal to token ${first} (${shown}); every token must be distinct.`,
      );
    }
    seen.set(text, id);
  }
  return items.length;
}
