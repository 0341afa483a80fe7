import type { Vocabulary } from "../detok/index.ts";

/**
 * The bytes of an incomplete UTF-8 character at the end of a token-id prompt (empty when the prompt ends on a
 * character boundary). The decoder is primed with them so a completion that finishes the character emits it
 * whole instead of leaking a replacement character into the first delta.
 */
export function promptTail(vocabulary: Vocabulary, promptTokens: readonly number[]): Uint8Array | undefined {
  const bytes: number[] = [];
  // A character is at most 4 bytes, so the last 3 bytes are all that can be pending; collect them backwards.
  for (let i = promptTokens.length - 1; i >= 0 && bytes.length < 3; i--) {
    const id = promptTokens[i]!;
    if (vocabulary.isSpecial(id)) break;
    const tokenBytes = vocabulary.bytesOf(id);
    for (let j = tokenBytes.length - 1; j >= 0 && bytes.length < 3; j--) bytes.unshift(tokenBytes[j]!);
  }
  // Walk back to the last lead byte and see whether the sequence it starts is complete.
  for (let k = bytes.length - 1; k >= 0; k--) {
    const b = bytes[k]!;
    if (b < 0x80) return undefined;
    if (b >= 0xc0) {
      const need = b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : 2;
      const have = bytes.length - k;
      return have < need ? Uint8Array.from(bytes.slice(k)) : undefined;
    }
  }
  return undefined;
}
