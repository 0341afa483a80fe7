import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { gpt2CharOfByte, TokenType } from "../../src/detok/tokenBytes.ts";
import { Vocabulary } from "../../src/detok/Vocabulary.ts";
import { SluiceError } from "../../src/errors.ts";

const MODEL = fileURLToPath(new URL("../../models/kjv-tiny.gguf", import.meta.url));
const utf8 = (text: string) => new TextEncoder().encode(text);
const hasCode = (code: string) => (error: unknown) => error instanceof SluiceError && error.code === code;

/** A GGUF v3 file holding only string / string-array metadata and no tensors. */
function ggufWith(entries: Record<string, string | string[]>): Uint8Array {
  const parts: Buffer[] = [];
  const u32 = (n: number) => {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(n);
    parts.push(b);
  };
  const u64 = (n: number) => {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(n));
    parts.push(b);
  };
  const str = (s: string) => {
    const bytes = Buffer.from(s, "utf8");
    u64(bytes.length);
    parts.push(bytes);
  };
  parts.push(Buffer.from("GGUF"));
  u32(3);
  u64(0);
  u64(Object.keys(entries).length);
  for (const [key, value] of Object.entries(entries)) {
    str(key);
    if (typeof value === "string") {
      u32(8);
      str(value);
    } else {
      u32(9);
      u32(8);
      u64(value.length);
      for (const item of value) str(item);
    }
  }
  return Buffer.concat(parts);
}

describe("Vocabulary from the bundled model", () => {
  let vocabulary: Vocabulary;
  before(async () => {
    vocabulary = await Vocabulary.fromGgufFile(MODEL);
  });

  it("reads size, BOS/EOS and add_bos from the file", () => {
    assert.equal(vocabulary.size, 4096);
    assert.equal(vocabulary.bos, 4091);
    assert.equal(vocabulary.eos, 4091);
    assert.equal(vocabulary.addBos, true);
  });

  it("maps every byte token back through GPT-2's byte table", () => {
    for (let byte = 0; byte < 256; byte++) {
      assert.equal(vocabulary.tokenString(byte), gpt2CharOfByte(byte));
      assert.deepEqual([...vocabulary.bytesOf(byte)], [byte]);
      assert.equal(vocabulary.textOf(byte), byte < 0x80 ? String.fromCharCode(byte) : undefined);
    }
  });

  it("maps merged tokens to their text, with Ġ as a space", () => {
    const the = Array.from({ length: vocabulary.size }, (_, id) => id).find(
      (id) => vocabulary.tokenString(id) === "Ġthe",
    );
    assert.ok(the !== undefined);
    assert.deepEqual(vocabulary.bytesOf(the), utf8(" the"));
    assert.equal(vocabulary.textOf(the), " the");
  });

  it("marks the five control tokens special, renders their literal text, and knows which end a generation", () => {
    const controls = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"];
    controls.forEach((text, i) => {
      const id = 4091 + i;
      assert.equal(vocabulary.tokenString(id), text);
      assert.ok(vocabulary.isSpecial(id));
      assert.deepEqual(vocabulary.bytesOf(id), utf8(text));
      assert.equal(vocabulary.textOf(id), text);
    });
    assert.deepEqual(vocabulary.eogIds, [4091, 4093]);
    assert.ok(vocabulary.isEog(4091) && vocabulary.isEog(4093));
    assert.ok(!vocabulary.isEog(4092) && !vocabulary.isEog(4094) && !vocabulary.isEog(4095));
    assert.ok(!vocabulary.isSpecial(0) && !vocabulary.isSpecial(4090));
  });

  it("returns the same precomputed bytes on every call", () => {
    assert.equal(vocabulary.bytesOf(300), vocabulary.bytesOf(300));
  });

  it("treats out-of-range and non-integer ids as no text, never throwing", () => {
    for (const id of [-1, 4096, 1e9, 1.5, Number.NaN]) {
      assert.equal(vocabulary.bytesOf(id).length, 0);
      assert.equal(vocabulary.textOf(id), undefined);
      assert.equal(vocabulary.isSpecial(id), false);
      assert.equal(vocabulary.isEog(id), false);
      assert.equal(vocabulary.tokenString(id), "");
    }
  });
});

describe("Vocabulary.fromGguf", () => {
  it("renders SentencePiece pieces: ▁ as space, <0xNN> byte tokens, literal control text", () => {
    const bytes = Array.from(
      { length: 256 },
      (_, b) => `<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`,
    );
    const tokens = [
      "<unk>",
      "<s>",
      "</s>",
      ...bytes,
      "▁Hello",
      "▁wor",
      "ld",
      "▁日本",
      "<|user|>",
      "[UNUSED]",
    ];
    const types = [2, 3, 3, ...bytes.map(() => TokenType.byte), 1, 1, 1, 1, 4, 5];
    const vocabulary = Vocabulary.fromGguf({ model: "llama", tokens, tokenTypes: types, bos: 1, eos: 2 });
    const id = (text: string) => tokens.indexOf(text);
    assert.deepEqual(vocabulary.bytesOf(id("▁Hello")), utf8(" Hello"));
    assert.equal(vocabulary.textOf(id("▁日本")), " 日本");
    assert.deepEqual([...vocabulary.bytesOf(id("<0xE2>"))], [0xe2]);
    assert.deepEqual([...vocabulary.bytesOf(id("<0x0A>"))], [0x0a]);
    assert.equal(vocabulary.textOf(id("<0xE2>")), undefined);
    assert.equal(vocabulary.textOf(id("<0x41>")), "A");
    assert.deepEqual(vocabulary.bytesOf(id("<unk>")), utf8("<unk>"));
    assert.ok(!vocabulary.isSpecial(id("<unk>")));
    assert.ok(vocabulary.isSpecial(id("<s>")) && vocabulary.isSpecial(id("</s>")));
    assert.deepEqual(vocabulary.bytesOf(id("</s>")), utf8("</s>"));
    // USER_DEFINED tokens are text, as in llama.cpp; UNUSED tokens stand for nothing.
    assert.ok(!vocabulary.isSpecial(id("<|user|>")));
    assert.equal(vocabulary.textOf(id("<|user|>")), "<|user|>");
    assert.equal(vocabulary.bytesOf(id("[UNUSED]")).length, 0);
    assert.equal(vocabulary.addBos, true);
    assert.deepEqual(vocabulary.eogIds, [2]);
  });

  it("reads <0xNN> as a byte in a SentencePiece vocabulary without token types", () => {
    const vocabulary = Vocabulary.fromGguf({ model: "llama", tokens: ["<0x41>", "▁a▁b", "<0x4>"] });
    assert.deepEqual([...vocabulary.bytesOf(0)], [0x41]);
    assert.equal(vocabulary.textOf(1), " a b");
    assert.equal(vocabulary.textOf(2), "<0x4>");
    assert.ok(!vocabulary.isSpecial(0));
  });

  it("treats token strings of other tokenizer models as UTF-8 text", () => {
    const vocabulary = Vocabulary.fromGguf({ model: "rwkv", tokens: ["▁x", "Ġy", "日"] });
    assert.equal(vocabulary.textOf(0), "▁x");
    assert.equal(vocabulary.textOf(1), "Ġy");
    assert.equal(vocabulary.textOf(2), "日");
    assert.equal(vocabulary.addBos, false);
  });

  it("keeps a token that is a byte order mark as U+FEFF text", () => {
    const bom = [0xef, 0xbb, 0xbf].map(gpt2CharOfByte).join("");
    const vocabulary = Vocabulary.fromGguf({ model: "gpt2", tokens: [bom, `${bom}A`] });
    assert.equal(vocabulary.textOf(0), "\uFEFF");
    assert.equal(vocabulary.textOf(1), "\uFEFFA");
  });

  it("keeps a gpt2 character outside the byte table as its own UTF-8 instead of dropping it", () => {
    const vocabulary = Vocabulary.fromGguf({ model: "gpt2", tokens: ["Ġ日", "Ã©"] });
    assert.equal(vocabulary.textOf(0), " 日");
    assert.equal(vocabulary.textOf(1), "é");
  });

  it("collects end-of-generation ids from eos, eot, the eog list and control markers", () => {
    const tokens = ["a", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|im_end|>", "b", "c"];
    const vocabulary = Vocabulary.fromGguf({
      model: "gpt2",
      tokens,
      // "<|im_end|>" is NORMAL here, so its text alone does not make it end a generation.
      tokenTypes: [1, 3, 3, 3, 1, 1, 1],
      eos: 5,
      eot: 6,
      eog: [0],
    });
    assert.deepEqual(vocabulary.eogIds, [0, 1, 2, 3, 5, 6]);
    assert.ok(!vocabulary.isEog(4));
  });

  it("rejects unusable tokenizer metadata with model_invalid and a message naming the field", () => {
    const cases: [Parameters<typeof Vocabulary.fromGguf>[0], RegExp][] = [
      [{ model: "", tokens: ["a"] }, /tokenizer\.ggml\.model/],
      [{ model: "gpt2", tokens: [] }, /tokenizer\.ggml\.tokens/],
      [{ model: "gpt2", tokens: ["a", 7 as unknown as string] }, /tokens\[1\]/],
      [{ model: "gpt2", tokens: ["a", "b"], tokenTypes: [1] }, /token_type has 1 entries for 2 tokens/],
      [{ model: "gpt2", tokens: ["a"], eos: 1 }, /eos token id is 1, outside the vocabulary of 1 tokens/],
      [{ model: "gpt2", tokens: ["a"], eog: [-1] }, /end-of-generation token id is -1/],
    ];
    for (const [init, message] of cases) {
      assert.throws(
        () => Vocabulary.fromGguf(init),
        (error: unknown) => hasCode("model_invalid")(error) && message.test((error as Error).message),
      );
    }
  });
});

describe("Vocabulary.fromGgufFile errors", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "sluice-vocab-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("fails with model_load_failed when the file cannot be read", async () => {
    await assert.rejects(Vocabulary.fromGgufFile(join(dir, "missing.gguf")), hasCode("model_load_failed"));
  });

  it("fails with model_invalid when the file is not GGUF", async () => {
    const path = join(dir, "text.gguf");
    await writeFile(path, "In the beginning was the Word");
    await assert.rejects(Vocabulary.fromGgufFile(path), hasCode("model_invalid"));
  });

  it("fails with model_invalid when the GGUF has no tokenizer", async () => {
    const path = join(dir, "bare.gguf");
    await writeFile(path, ggufWith({ "general.architecture": "llama" }));
    await assert.rejects(Vocabulary.fromGgufFile(path), (error: unknown) => {
      return hasCode("model_invalid")(error) && /no tokenizer\.ggml metadata/.test((error as Error).message);
    });
  });

  it("fails with model_invalid when the tokenizer has no tokens", async () => {
    const path = join(dir, "notokens.gguf");
    await writeFile(path, ggufWith({ "general.architecture": "llama", "tokenizer.ggml.model": "gpt2" }));
    await assert.rejects(Vocabulary.fromGgufFile(path), (error: unknown) => {
      return hasCode("model_invalid")(error) && /tokenizer\.ggml\.tokens/.test((error as Error).message);
    });
  });

  it("reads a minimal GGUF vocabulary", async () => {
    const path = join(dir, "tiny.gguf");
    await writeFile(
      path,
      ggufWith({
        "general.architecture": "llama",
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.tokens": ["Ġa", "b"],
      }),
    );
    const vocabulary = await Vocabulary.fromGgufFile(path);
    assert.equal(vocabulary.size, 2);
    assert.equal(vocabulary.textOf(0), " a");
    assert.equal(vocabulary.bos, undefined);
    assert.deepEqual(vocabulary.eogIds, []);
  });
});
