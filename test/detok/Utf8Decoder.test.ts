import assert from "node:assert/strict";
import { describe, it } from "node:test";
import fc from "fast-check";
import { Utf8Decoder } from "../../src/detok/Utf8Decoder.ts";
import { anyChar, isWellFormed } from "./arbitraries.ts";

const FFFD = "\uFFFD";
const utf8 = (text: string) => new TextEncoder().encode(text);
const oneShot = (bytes: Uint8Array) => new TextDecoder("utf-8", { ignoreBOM: true }).decode(bytes);

/** Decodes `bytes` cut at `cuts`, returning each piece's output and the flush. */
function decodeSplit(bytes: Uint8Array, cuts: readonly number[]): { parts: string[]; flushed: string } {
  const decoder = new Utf8Decoder();
  const parts: string[] = [];
  let from = 0;
  for (const cut of [...cuts, bytes.length]) {
    parts.push(decoder.decode(bytes.subarray(from, cut)));
    from = cut;
  }
  return { parts, flushed: decoder.flush() };
}

describe("Utf8Decoder", () => {
  it("decodes ASCII with nothing pending", () => {
    const decoder = new Utf8Decoder();
    assert.equal(decoder.decode(utf8("In the beginning")), "In the beginning");
    assert.equal(decoder.pendingBytes, 0);
    assert.equal(decoder.flush(), "");
  });

  for (const char of ["é", "€", "日", "𝄞", "😀", "🎉"]) {
    it(`holds back ${char} split at every byte offset and emits it whole`, () => {
      const bytes = utf8(`a${char}b`);
      for (let cut = 1; cut < bytes.length; cut++) {
        const decoder = new Utf8Decoder();
        const head = decoder.decode(bytes.subarray(0, cut));
        const pending = decoder.pendingBytes;
        const tail = decoder.decode(bytes.subarray(cut));
        assert.equal(head + tail, `a${char}b`, `cut at ${cut}`);
        assert.equal(decoder.pendingBytes, 0);
        // The cut character is never partly in the first piece.
        assert.ok(
          head === "a" || head === `a${char}` || head === `a${char}b`,
          `head ${JSON.stringify(head)}`,
        );
        if (head === "a") assert.equal(pending, cut - 1);
      }
    });
  }

  it("decodes one byte at a time identically to a one-shot decode", () => {
    const text = "café 日本 🎉 — “KJV” 𝄞";
    const bytes = utf8(text);
    const decoder = new Utf8Decoder();
    let out = "";
    for (const byte of bytes) {
      const piece = decoder.decode(Uint8Array.of(byte));
      assert.ok(isWellFormed(piece));
      out += piece;
    }
    assert.equal(out + decoder.flush(), text);
  });

  const invalid: [string, number[]][] = [
    ["a lone continuation byte", [0x80]],
    ["bytes that never start a sequence", [0xff, 0xfe, 0xc0, 0xc1, 0xf5]],
    ["an overlong two-byte encoding", [0xc0, 0xaf]],
    ["an overlong three-byte encoding", [0xe0, 0x80, 0xaf]],
    ["an overlong four-byte encoding", [0xf0, 0x80, 0x80, 0xaf]],
    ["an encoded surrogate", [0xed, 0xa0, 0x80]],
    ["a surrogate pair encoded as two sequences", [0xed, 0xa0, 0xbd, 0xed, 0xb8, 0x80]],
    ["a code point above U+10FFFF", [0xf4, 0x90, 0x80, 0x80]],
    ["a truncated sequence followed by ASCII", [0xe2, 0x82, 0x41]],
    ["a truncated four-byte sequence followed by a new lead", [0xf0, 0x9f, 0x98, 0xf0, 0x9f, 0x98, 0x80]],
  ];
  for (const [name, bytes] of invalid) {
    it(`replaces ${name} exactly like TextDecoder, at every split`, () => {
      const all = Uint8Array.from(bytes);
      const expected = oneShot(all);
      assert.ok(expected.includes(FFFD));
      for (let cut = 0; cut <= all.length; cut++) {
        const { parts, flushed } = decodeSplit(all, [cut]);
        assert.equal(parts.join("") + flushed, expected, `cut at ${cut}`);
      }
    });
  }

  it("emits U+FFFD for an invalid byte at once, without waiting for more input", () => {
    const decoder = new Utf8Decoder();
    assert.equal(decoder.decode(Uint8Array.of(0x41, 0x80)), `A${FFFD}`);
    assert.equal(decoder.pendingBytes, 0);
    assert.equal(decoder.decode(Uint8Array.of(0xe2, 0x82)), "");
    assert.equal(decoder.pendingBytes, 2);
    // The next byte proves the pending pair invalid: one U+FFFD for it, then the byte itself.
    assert.equal(decoder.decode(Uint8Array.of(0x41)), `${FFFD}A`);
    assert.equal(decoder.pendingBytes, 0);
  });

  it("holds a sequence whose lead byte narrows the next byte's range until that byte arrives", () => {
    const decoder = new Utf8Decoder();
    assert.equal(decoder.decode(Uint8Array.of(0xf0)), "");
    assert.equal(decoder.pendingBytes, 1);
    // 0x8F is below F0's lower bound (0x90): an overlong, so F0 is replaced and 0x8F is replaced on its own.
    assert.equal(decoder.decode(Uint8Array.of(0x8f)), FFFD + FFFD);
    assert.equal(decoder.pendingBytes, 0);
  });

  it("keeps a leading byte order mark: generated text has none to strip", () => {
    const decoder = new Utf8Decoder();
    assert.equal(decoder.decode(Uint8Array.of(0xef, 0xbb)), "");
    assert.equal(decoder.decode(Uint8Array.of(0xbf, 0x41)), "\uFEFFA");
  });

  it("flushes a partial character as one U+FFFD and starts fresh", () => {
    const decoder = new Utf8Decoder();
    assert.equal(decoder.decode(Uint8Array.of(0xf0, 0x9f, 0x98)), "");
    assert.equal(decoder.pendingBytes, 3);
    assert.equal(decoder.flush(), FFFD);
    assert.equal(decoder.pendingBytes, 0);
    assert.equal(decoder.flush(), "");
    assert.equal(decoder.decode(Uint8Array.of(0x80)), FFFD);
    assert.equal(decoder.decode(utf8("😀")), "😀");
  });

  describe("prime", () => {
    it("completes a character begun in the prompt and emits it whole", () => {
      const decoder = new Utf8Decoder();
      decoder.prime(Uint8Array.of(0xe2, 0x82));
      assert.equal(decoder.pendingBytes, 2);
      assert.equal(decoder.decode(Uint8Array.of(0xac, 0x21)), "€!");
    });

    it("keeps only the trailing incomplete character of a longer prefix", () => {
      const decoder = new Utf8Decoder();
      decoder.prime(Uint8Array.from([...utf8("amen é"), 0xf0, 0x9f]));
      assert.equal(decoder.pendingBytes, 2);
      assert.equal(decoder.decode(Uint8Array.of(0x8e, 0x89)), "🎉");
    });

    it("drops prompt bytes silently when the next byte proves them invalid", () => {
      const decoder = new Utf8Decoder();
      decoder.prime(Uint8Array.of(0xe2, 0x82));
      assert.equal(decoder.decode(utf8("x")), "x");
    });

    it("never emits primed bytes on their own at flush", () => {
      const decoder = new Utf8Decoder();
      decoder.prime(Uint8Array.of(0xf0, 0x9f, 0x98));
      assert.equal(decoder.flush(), "");
    });

    it("still replaces generated bytes that join an invalid sequence begun in the prompt", () => {
      const decoder = new Utf8Decoder();
      decoder.prime(Uint8Array.of(0xe2));
      assert.equal(decoder.decode(Uint8Array.of(0x82, 0x78)), `${FFFD}x`);
      const flushing = new Utf8Decoder();
      flushing.prime(Uint8Array.of(0xf0, 0x9f));
      assert.equal(flushing.decode(Uint8Array.of(0x98)), "");
      assert.equal(flushing.flush(), FFFD);
    });

    it("holds nothing when the prefix ends on a character boundary or with an invalid byte", () => {
      for (const prefix of [utf8("the end"), Uint8Array.of(0x80), Uint8Array.of(0xe2, 0x82, 0xac)]) {
        const decoder = new Utf8Decoder();
        decoder.prime(prefix);
        assert.equal(decoder.pendingBytes, 0);
        assert.equal(decoder.decode(utf8("é")), "é");
      }
    });
  });

  describe("property: any bytes, any split", () => {
    // Biased towards what breaks decoders: lead bytes, continuation bytes, boundary values of each range.
    const interesting = fc.constantFrom(
      0x00,
      0x41,
      0x7f,
      0x80,
      0x8f,
      0x90,
      0x9f,
      0xa0,
      0xbf,
      0xc0,
      0xc1,
      0xc2,
      0xdf,
      0xe0,
      0xe1,
      0xec,
      0xed,
      0xee,
      0xef,
      0xf0,
      0xf1,
      0xf3,
      0xf4,
      0xf5,
      0xff,
    );
    const validChunk = fc
      .string({ unit: anyChar, minLength: 1, maxLength: 3 })
      .map((text) => Array.from(utf8(text)));
    const byteArray = fc
      .array(
        fc.oneof(
          { arbitrary: validChunk, weight: 3 },
          { arbitrary: fc.constant([0xef, 0xbb, 0xbf]), weight: 1 },
          { arbitrary: interesting.map((b) => [b]), weight: 3 },
          { arbitrary: fc.integer({ min: 0, max: 255 }).map((b) => [b]), weight: 1 },
        ),
        { maxLength: 40 },
      )
      .map((chunks) => Uint8Array.from(chunks.flat()));
    const withCuts = byteArray.chain((bytes) =>
      fc.tuple(
        fc.constant(bytes),
        fc
          .uniqueArray(fc.integer({ min: 0, max: bytes.length }), { maxLength: 12 })
          .map((cuts) => cuts.sort((a, b) => a - b)),
      ),
    );

    it("equals a one-shot TextDecoder and a streaming TextDecoder chunk by chunk", () => {
      fc.assert(
        fc.property(withCuts, ([bytes, cuts]) => {
          const { parts, flushed } = decodeSplit(bytes, cuts);
          assert.equal(parts.join("") + flushed, oneShot(bytes));
          const reference = new TextDecoder("utf-8", { ignoreBOM: true });
          let from = 0;
          [...cuts, bytes.length].forEach((cut, i) => {
            assert.equal(parts[i], reference.decode(bytes.subarray(from, cut), { stream: true }));
            assert.ok(isWellFormed(parts[i]!));
            from = cut;
          });
          assert.equal(flushed, reference.decode());
        }),
        { numRuns: 2000 },
      );
    });
  });
});
