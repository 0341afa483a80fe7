import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { OutputProcessor, type OutputProcessorOptions } from "../../src/detok/OutputProcessor.ts";
import { gpt2CharOfByte, TokenType } from "../../src/detok/tokenBytes.ts";
import { Vocabulary } from "../../src/detok/Vocabulary.ts";

const FFFD = "\uFFFD";
const utf8 = (text: string) => new TextEncoder().encode(text);
const byteLevel = (bytes: Iterable<number>) => Array.from(bytes, gpt2CharOfByte).join("");

/**
 * A small byte-level vocabulary: ids 0-255 are the byte tokens (id = byte), then named tokens.
 * EURO_HEAD / EURO_TAIL split "€" (E2 82 AC) across two tokens.
 */
const named = {
  THE: [byteLevel(utf8(" the")), TokenType.normal],
  WORLD: [byteLevel(utf8(" world")), TokenType.normal],
  EURO: [byteLevel(utf8("€")), TokenType.normal],
  EURO_HEAD: [byteLevel([0x20, 0xe2]), TokenType.normal],
  EURO_TAIL: [byteLevel([0x82, 0xac]), TokenType.normal],
  IM_END: ["<|im_end|>", TokenType.control],
  THINK_END: ["</think>", TokenType.control],
  THINK: ["<think>", TokenType.userDefined],
  EOS: ["<|endoftext|>", TokenType.control],
} as const;
type Name = keyof typeof named;
const names = Object.keys(named) as Name[];
const id = Object.fromEntries(names.map((name, i) => [name, 256 + i])) as Record<Name, number>;
const vocabulary = Vocabulary.fromGguf({
  model: "gpt2",
  tokens: [...Array.from({ length: 256 }, (_, b) => gpt2CharOfByte(b)), ...names.map((n) => named[n][0])],
  tokenTypes: [...Array.from({ length: 256 }, () => TokenType.normal), ...names.map((n) => named[n][1])],
  eos: id.EOS,
});
const bytesOf = (text: string) => Array.from(utf8(text));

interface Run {
  chunks: { tokenIds: number[]; text: string }[];
  hits: (string | number | undefined)[];
  final: { tokenIds: number[]; text: string };
  processor: OutputProcessor;
}

/** Pushes every id, taking after each push as the runtime does, then takes the final delta. */
function run(ids: readonly number[], options?: OutputProcessorOptions, vocab = vocabulary): Run {
  const processor = new OutputProcessor(vocab, options);
  const chunks: Run["chunks"] = [];
  const hits: Run["hits"] = [];
  for (const tokenId of ids) {
    hits.push(processor.push(tokenId)?.stop);
    const delta = processor.take(false);
    if (delta !== undefined) chunks.push(delta);
  }
  const final = processor.take(true)!;
  return { chunks, hits, final, processor };
}
const allText = (r: Run) => r.chunks.map((c) => c.text).join("") + r.final.text;
const allIds = (r: Run) => [...r.chunks.flatMap((c) => c.tokenIds), ...r.final.tokenIds];

describe("OutputProcessor: detokenization", () => {
  it("emits one delta per token, with whole tokens appended as they are", () => {
    const r = run([id.THE, id.WORLD]);
    assert.deepEqual(r.chunks, [
      { tokenIds: [id.THE], text: " the" },
      { tokenIds: [id.WORLD], text: " world" },
    ]);
    assert.deepEqual(r.final, { tokenIds: [], text: "" });
    assert.equal(r.processor.tokenCount, 2);
  });

  it("holds a character split across tokens until it is complete", () => {
    assert.deepEqual(
      run([id.EURO_HEAD, id.EURO_TAIL]).chunks.map((c) => c.text),
      [" ", "€"],
    );
    assert.deepEqual(
      run(bytesOf("€😀")).chunks.map((c) => c.text),
      ["", "", "€", "", "", "", "😀"],
    );
  });

  it("turns invalid bytes into U+FFFD at once and a trailing partial character into U+FFFD at the end", () => {
    const r = run([0x80, id.THE, 0xf0, 0x9f, 0x98]);
    assert.deepEqual(
      r.chunks.map((c) => c.text),
      [FFFD, " the", "", "", ""],
    );
    assert.equal(r.final.text, FFFD);
    assert.deepEqual(r.final.tokenIds, []);
  });

  it("cuts nothing when a valid token follows pending bytes", () => {
    const r = run([0xe2, id.EURO]);
    assert.equal(allText(r), `${FFFD}€`);
  });

  it("treats out-of-range ids as producing no text, without throwing", () => {
    const r = run([id.THE, -1, 1e6, 2.5, id.WORLD]);
    assert.equal(allText(r), " the world");
    assert.deepEqual(allIds(r), [id.THE, -1, 1e6, 2.5, id.WORLD]);
  });

  it("renders SentencePiece pieces and byte tokens", () => {
    const spm = Vocabulary.fromGguf({
      model: "llama",
      tokens: ["▁In", "▁the", "<0xE2>", "<0x82>", "<0xAC>", "</s>"],
      tokenTypes: [1, 1, 6, 6, 6, 3],
      eos: 5,
    });
    const r = run([0, 1, 2, 3, 4, 5], {}, spm);
    assert.deepEqual(
      r.chunks.map((c) => c.text),
      [" In", " the", "", "", "€", ""],
    );
  });
});

describe("OutputProcessor: special tokens", () => {
  it("drops control tokens from text by default but keeps their ids", () => {
    const r = run([id.THE, id.THINK_END, id.WORLD, id.EOS]);
    assert.equal(allText(r), " the world");
    assert.deepEqual(allIds(r), [id.THE, id.THINK_END, id.WORLD, id.EOS]);
  });

  it("renders a control token whole, in one delta, when special tokens are kept", () => {
    const r = run([id.THE, id.THINK_END, id.WORLD], { skipSpecialTokens: false });
    assert.deepEqual(
      r.chunks.map((c) => c.text),
      [" the", "</think>", " world"],
    );
  });

  it("keeps a filtered control token from touching a character split around it", () => {
    assert.equal(allText(run([0xe2, id.IM_END, 0x82, 0xac])), "€");
    // Kept, its bytes go through the decoder like any other token: the split character is invalid.
    const kept = run([0xe2, id.IM_END, 0x82, 0xac], { skipSpecialTokens: false });
    const expected = new TextDecoder("utf-8", { ignoreBOM: true }).decode(
      Uint8Array.from([0xe2, ...utf8("<|im_end|>"), 0x82, 0xac]),
    );
    assert.equal(allText(kept), expected);
    assert.equal(kept.chunks[1]!.text, `${FFFD}<|im_end|>`);
  });

  it("never splits a kept control token across chunks, even when a stop string starts inside it", () => {
    // "nk> t" could start at "nk>" inside "</think>": the matcher holds that tail, and the head waits for it.
    const r = run([id.THE, id.THINK_END, id.WORLD], {
      skipSpecialTokens: false,
      stop: ["nk> t", "hink> w!"],
    });
    assert.deepEqual(
      r.chunks.map((c) => c.text),
      [" the", "", "</think> world"],
    );
    const twice = run([id.THINK_END, id.THINK_END, ...bytesOf(" x")], {
      skipSpecialTokens: false,
      stop: ["k></think> y"],
    });
    assert.deepEqual(
      twice.chunks.map((c) => c.text),
      ["", "", "", "</think></think> x"],
    );
    // A match inside the token ends the text there: that is where the stop string begins.
    const matched = run([id.THE, id.THINK_END, id.WORLD], { skipSpecialTokens: false, stop: ["nk> w"] });
    assert.equal(allText(matched), " the</thi");
    assert.deepEqual(matched.hits, [undefined, undefined, "nk> w"]);
  });

  it("renders USER_DEFINED tokens such as <think> even when skipping special tokens", () => {
    assert.equal(allText(run([id.THINK, id.THE])), "<think> the");
  });

  it("applies the special-token policy per processor, with interleaved streams", () => {
    const skip = new OutputProcessor(vocabulary);
    const keep = new OutputProcessor(vocabulary, { skipSpecialTokens: false });
    for (const tokenId of [id.THE, id.IM_END, id.WORLD]) {
      skip.push(tokenId);
      keep.push(tokenId);
    }
    assert.equal(skip.take(true)!.text, " the world");
    assert.equal(keep.take(true)!.text, " the<|im_end|> world");
  });
});

describe("OutputProcessor: stop strings", () => {
  it("matches a stop string spread over tokens and a split character, emitting only the text before it", () => {
    // " the world €": the stop begins inside " world" and ends with the character split over two tokens.
    const r = run([id.THE, id.WORLD, id.EURO_HEAD, id.EURO_TAIL, id.THE], { stop: ["ld €"] });
    assert.deepEqual(r.hits, [undefined, undefined, undefined, "ld €", undefined]);
    assert.deepEqual(
      r.chunks.map((c) => c.text),
      [" the", " wor", "", ""],
    );
    assert.equal(allText(r), " the wor");
    // Ids end at the token that completed the stop.
    assert.deepEqual(allIds(r), [id.THE, id.WORLD, id.EURO_HEAD, id.EURO_TAIL]);
    assert.equal(r.processor.tokenCount, 4);
  });

  it("holds a possible stop prefix, then releases it when it can no longer match", () => {
    const r = run(bytesOf(" worl"), { stop: [" worship"] });
    assert.deepEqual(
      r.chunks.map((c) => c.text),
      ["", "", "", "", " worl"],
    );
  });

  it("never cuts a multi-byte character when holding", () => {
    const r = run(bytesOf("a日b"), { stop: ["日本"] });
    assert.deepEqual(
      r.chunks.map((c) => c.text),
      ["a", "", "", "", "日b"],
    );
  });

  const finishes: [string, number[]][] = [
    ["eos", [id.EOS]],
    ["length (no more tokens)", []],
    ["a stop token id", [id.IM_END]],
  ];
  for (const [finish, tail] of finishes) {
    it(`releases held text and pending bytes on the final take at a finish by ${finish}`, () => {
      const r = run([...bytesOf(" wor"), 0xe2, ...tail], { stop: [" world"], stopTokenIds: [id.IM_END] });
      assert.deepEqual(
        r.chunks.map((c) => c.text),
        ["", "", "", "", "", ...tail.map(() => "")],
      );
      assert.equal(r.final.text, ` wor${FFFD}`);
      assert.deepEqual(allIds(r), [...bytesOf(" wor"), 0xe2, ...tail]);
    });
  }

  it("releases held text on a cancel between tokens at any interval", () => {
    for (let interval = 1; interval <= 4; interval++) {
      const processor = new OutputProcessor(vocabulary, { stop: ["Amen."], streamInterval: interval });
      let text = "";
      for (const tokenId of [id.THE, ...bytesOf(" Ame")]) {
        processor.push(tokenId);
        text += processor.take(false)?.text ?? "";
      }
      text += processor.take(true)!.text;
      assert.equal(text, " the Ame");
    }
  });

  it("stops on a stop token id without emitting its text, and ignores later tokens", () => {
    const r = run([id.THE, id.IM_END, id.WORLD], { stopTokenIds: [id.IM_END], skipSpecialTokens: false });
    assert.deepEqual(r.hits, [undefined, id.IM_END, undefined]);
    assert.equal(allText(r), " the");
    assert.deepEqual(allIds(r), [id.THE, id.IM_END]);
    assert.equal(r.processor.tokenCount, 2);
  });

  it("matches control-token text only when the request keeps special tokens", () => {
    const kept = run([id.THE, id.IM_END, id.WORLD], { stop: ["<|im_end|>"], skipSpecialTokens: false });
    assert.deepEqual(kept.hits, [undefined, "<|im_end|>", undefined]);
    assert.equal(allText(kept), " the");
    const skipped = run([id.THE, id.IM_END, id.WORLD], { stop: ["<|im_end|>"] });
    assert.deepEqual(skipped.hits, [undefined, undefined, undefined]);
    assert.equal(allText(skipped), " the world");
  });

  it("never leaks any part of the stop text, at any interval", () => {
    const ids = [id.THE, ...bytesOf(" wo"), ...bytesOf("rld"), id.THE, id.WORLD];
    for (let interval = 1; interval <= 8; interval++) {
      const r = run(ids, { stop: ["world the"], streamInterval: interval });
      assert.equal(allText(r), " the ", `interval ${interval}`);
      assert.deepEqual(allIds(r), ids.slice(0, -1));
      assert.equal(r.hits.at(-2), "world the");
    }
  });
});

describe("OutputProcessor: stream interval", () => {
  it("emits every N tokens and carries the tail in the final take", () => {
    const ids = [id.THE, id.WORLD, id.EURO_HEAD, id.EURO_TAIL, id.THE, 0xe2];
    const processor = new OutputProcessor(vocabulary, { streamInterval: 4 });
    const deltas = ids.map((tokenId) => {
      processor.push(tokenId);
      return processor.take(false);
    });
    assert.deepEqual(deltas, [
      undefined,
      undefined,
      undefined,
      { tokenIds: ids.slice(0, 4), text: " the world €" },
      undefined,
      undefined,
    ]);
    assert.deepEqual(processor.take(true), { tokenIds: ids.slice(4), text: ` the${FFFD}` });
  });

  it("matches stops on every token even when it does not emit", () => {
    const processor = new OutputProcessor(vocabulary, { stop: [" world"], streamInterval: 100 });
    assert.equal(processor.push(id.THE), undefined);
    assert.equal(processor.take(false), undefined);
    assert.deepEqual(processor.push(id.WORLD), { stop: " world" });
    assert.deepEqual(processor.take(true), { tokenIds: [id.THE, id.WORLD], text: " the" });
  });

  it("clamps the interval to a whole number of at least 1", () => {
    for (const [streamInterval, expected] of [
      [0, 1],
      [-3, 1],
      [Number.NaN, 1],
      [2.7, 2],
    ] as const) {
      const processor = new OutputProcessor(vocabulary, { streamInterval });
      let emitted = 0;
      for (let i = 0; i < 4; i++) {
        processor.push(id.THE);
        if (processor.take(false) !== undefined) emitted++;
      }
      assert.equal(emitted, 4 / expected, `streamInterval ${streamInterval}`);
    }
  });
});

describe("OutputProcessor: prompt tail and lifecycle", () => {
  it("completes a character begun in the prompt without leaking the prompt's bytes", () => {
    const processor = new OutputProcessor(vocabulary, { promptTail: Uint8Array.of(0xe2, 0x82) });
    processor.push(0xac);
    assert.deepEqual(processor.take(false), { tokenIds: [0xac], text: "€" });
  });

  it("drops the prompt's partial character when generation does not complete it", () => {
    const processor = new OutputProcessor(vocabulary, { promptTail: Uint8Array.of(0xe2) });
    processor.push(id.THE);
    assert.deepEqual(processor.take(false), { tokenIds: [id.THE], text: " the" });
    const silent = new OutputProcessor(vocabulary, { promptTail: Uint8Array.of(0xf0, 0x9f) });
    assert.deepEqual(silent.take(true), { tokenIds: [], text: "" });
  });

  it("is done after the final take: pushes are ignored and takes are empty", () => {
    const processor = new OutputProcessor(vocabulary);
    processor.push(id.THE);
    assert.deepEqual(processor.take(true), { tokenIds: [id.THE], text: " the" });
    assert.equal(processor.push(id.WORLD), undefined);
    assert.equal(processor.tokenCount, 1);
    assert.equal(processor.take(false), undefined);
    assert.deepEqual(processor.take(true), { tokenIds: [], text: "" });
  });

  it("returns nothing from a non-final take before any token", () => {
    const processor = new OutputProcessor(vocabulary);
    assert.equal(processor.take(false), undefined);
  });
});
