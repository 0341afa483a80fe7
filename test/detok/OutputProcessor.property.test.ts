import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import fc from "fast-check";
import { OutputProcessor } from "../../src/detok/OutputProcessor.ts";
import { Vocabulary } from "../../src/detok/Vocabulary.ts";
import { anyChar, isWellFormed } from "./arbitraries.ts";

const MODEL = fileURLToPath(new URL("../../models/kjv-tiny.gguf", import.meta.url));
const vocabulary = await Vocabulary.fromGgufFile(MODEL);

const SPECIAL_IDS = [4091, 4092, 4093, 4094, 4095];
const byteToId = new Map<number, number>();
for (let tokenId = 0; tokenId < vocabulary.size; tokenId++) {
  const bytes = vocabulary.bytesOf(tokenId);
  if (bytes.length === 1 && !vocabulary.isSpecial(tokenId) && !byteToId.has(bytes[0]!)) {
    byteToId.set(bytes[0]!, tokenId);
  }
}
const byteIds = (bytes: Iterable<number>) => Array.from(bytes, (b) => byteToId.get(b)!);

/** Token streams over the real vocabulary, biased towards what breaks detokenizers. */
const tokenStream = fc
  .array(
    fc.oneof(
      // Ordinary merged tokens of KJV English.
      { arbitrary: fc.integer({ min: 0, max: 4090 }).map((t) => [t]), weight: 6 },
      // A multi-byte character spelled out as byte tokens (what a byte-level model emits for rare text).
      {
        arbitrary: fc
          .string({ unit: anyChar, minLength: 1, maxLength: 2 })
          .map((text) => byteIds(new TextEncoder().encode(text))),
        weight: 3,
      },
      // Lone lead and continuation bytes: partial and invalid sequences.
      {
        arbitrary: fc
          .constantFrom(0x80, 0xa0, 0xbf, 0xc3, 0xe2, 0xed, 0xf0, 0xf4, 0xff)
          .map((b) => byteIds([b])),
        weight: 2,
      },
      { arbitrary: fc.constantFrom(...SPECIAL_IDS).map((t) => [t]), weight: 2 },
      { arbitrary: fc.constantFrom(-1, 4096).map((t) => [t]), weight: 1 },
    ),
    { maxLength: 50 },
  )
  .map((groups) => groups.flat());

type StopSpec = { from: number; length: number } | { text: string };
const SPECIAL_TEXTS = SPECIAL_IDS.map((t) => vocabulary.tokenString(t));
const stopSpec: fc.Arbitrary<StopSpec> = fc.oneof(
  // Starting inside a control token's text: held tails that must not split the token across chunks.
  {
    arbitrary: fc
      .tuple(
        fc.constantFrom(...SPECIAL_TEXTS),
        fc.integer({ min: 1, max: 12 }),
        fc.constantFrom("x", " ", "\n", "<"),
      )
      .map(([special, from, extra]) => ({ text: special.slice(Math.min(from, special.length - 1)) + extra })),
    weight: 1,
  },
  {
    arbitrary: fc.record({
      from: fc.double({ min: 0, max: 1, noNaN: true }),
      length: fc.integer({ min: 1, max: 8 }),
    }),
    weight: 3,
  },
  {
    arbitrary: fc.record({
      text: fc.oneof(
        fc.string({
          unit: fc.constantFrom("e", "th", " ", "\n", ",", "\uFFFD", "é"),
          minLength: 1,
          maxLength: 3,
        }),
        fc.string({ unit: anyChar, minLength: 1, maxLength: 3 }),
      ),
    }),
    weight: 1,
  },
);

const scenario = fc.record({
  ids: tokenStream,
  skipSpecialTokens: fc.boolean(),
  stops: fc.array(stopSpec, { maxLength: 3 }),
  stopTokenIds: fc.array(fc.oneof(fc.constantFrom(...SPECIAL_IDS), fc.integer({ min: 0, max: 4095 })), {
    maxLength: 2,
  }),
});

interface Expected {
  text: string;
  tokenIds: number[];
  stop: string | number | undefined;
  /** The reference streaming text after each token, up to the stop. */
  decodedAfter: string[];
  /** [start, end) of each kept control token's text in the decoded text. */
  specials: [number, number][];
}

/** The slow, obviously-right reference: TextDecoder over the filtered bytes, stop strings searched in full. */
function reference(ids: number[], skip: boolean, stops: string[], stopTokenIds: number[]): Expected {
  const bytes = ids.map((t) => (skip && vocabulary.isSpecial(t) ? new Uint8Array(0) : vocabulary.bytesOf(t)));
  const streaming = new TextDecoder("utf-8", { ignoreBOM: true });
  const decodedAfter: string[] = [];
  const specials: [number, number][] = [];
  let decoded = "";
  for (let k = 0; k < ids.length; k++) {
    if (stopTokenIds.includes(ids[k]!)) {
      const text = new TextDecoder("utf-8", { ignoreBOM: true }).decode(concat(bytes.slice(0, k)));
      return { text, tokenIds: ids.slice(0, k + 1), stop: ids[k], decodedAfter, specials };
    }
    decoded += streaming.decode(bytes[k], { stream: true });
    decodedAfter.push(decoded);
    if (!skip && vocabulary.isSpecial(ids[k]!)) {
      specials.push([decoded.length - vocabulary.textOf(ids[k]!)!.length, decoded.length]);
    }
    let best: { start: number; stop: string } | undefined;
    for (const stop of stops) {
      const start = decoded.indexOf(stop);
      if (
        start >= 0 &&
        (best === undefined || start < best.start || (start === best.start && stop.length > best.stop.length))
      ) {
        best = { start, stop };
      }
    }
    if (best !== undefined) {
      const text = decoded.slice(0, best.start);
      return { text, tokenIds: ids.slice(0, k + 1), stop: best.stop, decodedAfter, specials };
    }
  }
  const text = new TextDecoder("utf-8", { ignoreBOM: true }).decode(concat(bytes));
  return { text, tokenIds: ids, stop: undefined, decodedAfter, specials };
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

describe("OutputProcessor on the bundled vocabulary (property)", () => {
  it("streams exactly the one-shot decode, cut at the first stop, identically for every interval", () => {
    let stopped = 0;
    let withStops = 0;
    fc.assert(
      fc.property(scenario, ({ ids, skipSpecialTokens, stops: specs, stopTokenIds }) => {
        const fullText = reference(ids, skipSpecialTokens, [], []).text;
        const stops = specs
          .map((spec) => {
            if ("text" in spec) return spec.text;
            const from = Math.floor(spec.from * fullText.length);
            return fullText.slice(from, from + spec.length);
          })
          .filter((stop) => stop.length > 0 && isWellFormed(stop));
        const expected = reference(ids, skipSpecialTokens, stops, stopTokenIds);
        const maxHeld = stops.reduce((max, stop) => Math.max(max, stop.length - 1), 0);
        // A kept control token's head may wait for its held tail, so it is never split across chunks.
        const maxLag = maxHeld === 0 || skipSpecialTokens ? maxHeld : maxHeld + "<|endoftext|>".length - 1;
        if (stops.length > 0) withStops++;
        if (expected.stop !== undefined) stopped++;

        for (let interval = 1; interval <= 8; interval++) {
          const processor = new OutputProcessor(vocabulary, {
            skipSpecialTokens,
            stop: stops,
            stopTokenIds,
            streamInterval: interval,
          });
          const texts: string[] = [];
          const tokenIds: number[] = [];
          let hit: string | number | undefined;
          let hitAt = -1;
          ids.forEach((tokenId, k) => {
            const result = processor.push(tokenId);
            if (result !== undefined) {
              assert.equal(hit, undefined, "one hit at most");
              hit = result.stop;
              hitAt = k;
            }
            const delta = processor.take(false);
            if (delta !== undefined) {
              assert.equal(delta.tokenIds.length, interval);
              texts.push(delta.text);
              tokenIds.push(...delta.tokenIds);
            }
            if (interval === 1 && hit === undefined) {
              // Held text is a suffix of what was decoded, shorter than the longest stop.
              const emitted = texts.join("");
              const decoded = expected.decodedAfter[k]!;
              assert.ok(decoded.startsWith(emitted));
              const lag = decoded.length - emitted.length;
              assert.ok(lag <= maxLag, `held ${lag} > ${maxLag}`);
            }
          });
          const final = processor.take(true)!;
          texts.push(final.text);
          tokenIds.push(...final.tokenIds);

          for (const text of texts) assert.ok(isWellFormed(text), `malformed chunk ${JSON.stringify(text)}`);
          // No chunk boundary falls inside a kept control token's text (the end of the text is no split).
          let boundary = 0;
          for (const text of texts.slice(0, -1)) {
            boundary += text.length;
            if (boundary === expected.text.length) break;
            for (const [start, end] of expected.specials) {
              assert.ok(
                !(start < boundary && boundary < end),
                `chunk boundary ${boundary} inside [${start}, ${end})`,
              );
            }
          }
          assert.equal(texts.join(""), expected.text, `interval ${interval}`);
          assert.deepEqual(tokenIds, expected.tokenIds);
          assert.equal(hit, expected.stop);
          if (hit !== undefined) assert.equal(hitAt, expected.tokenIds.length - 1);
          assert.equal(processor.tokenCount, expected.tokenIds.length);
        }
      }),
      { numRuns: 1000 },
    );
    // The generators must actually exercise stops, or the property proves little about them.
    assert.ok(withStops > 350, `only ${withStops} cases had stop strings`);
    assert.ok(stopped > 200, `only ${stopped} cases stopped`);
  });
});
