import fc from "fast-check";
import type { FinishReason } from "../../src/types.ts";

export interface Delta {
  ids: number[];
  text: string;
}

/** Well-formed text as a detokenizer emits it: empty, ASCII, accents, emoji (ZWJ, flags), any code point. */
export const text = fc.oneof(
  fc.constant(""),
  fc.string({ maxLength: 4 }),
  fc.string({ unit: "grapheme", maxLength: 3 }),
  fc.string({ unit: "binary", maxLength: 3 }),
  fc.constantFrom("é", "e\u0301", "👋", "👩‍💻", "🇫🇷", "\n", "日本"),
);

export const delta: fc.Arbitrary<Delta> = fc.record({
  ids: fc.array(fc.nat({ max: 50_000 }), { maxLength: 3 }),
  text,
});

export const reason = fc.constantFrom<FinishReason>("eos", "length", "stop", "cancelled", "error");

/**
 * How long one side waits before its next step: 0 = not at all (same tick), 1-3 = that many microtask
 * turns, 4 = a macrotask turn. Mixing them gives both fast and lagging consumers and producers.
 */
export const pace = fc.nat({ max: 4 });

export async function pause(kind: number): Promise<void> {
  if (kind === 4) {
    await new Promise(setImmediate);
    return;
  }
  for (let i = 0; i < kind; i++) await Promise.resolve();
}
