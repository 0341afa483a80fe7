import assert from "node:assert/strict";
import { closeSync, openSync, readFileSync, truncateSync, unlinkSync, writeSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { readGgufFileInfo } from "node-llama-cpp";
import {
  type GgufLayout,
  type GgufValue,
  GgufWriter,
  readGgufMetadata,
  tensorByteSize,
} from "../../scripts/gguf/GgufWriter.ts";
import { checkGguf } from "../../src/engine/checkGguf.ts";
import { BUNDLED_MODEL_PATH } from "../../src/engine/modelPath.ts";
import { SluiceError } from "../../src/errors.ts";
import { createInChild, howItEnded } from "../helpers/createInChild.ts";

// A corpus of corrupted files, each the bundled model rebuilt through the project's GgufWriter with one fault:
// a metadata edit, a tensor-table edit, or a raw patch of one header field at the offset the writer reports.

interface SourceTensor {
  name: string;
  ne: number[];
  type: number;
  bytes: Uint8Array;
}

interface Corruption {
  /** Metadata to set; `null` removes the key. A function receives the bundled model's metadata. */
  kv?:
    | Record<string, GgufValue | null>
    | ((base: ReadonlyMap<string, GgufValue>) => Record<string, GgufValue | null>);
  /** Edits the tensor list before it is written. */
  tensors?: (tensors: SourceTensor[]) => SourceTensor[];
  /** Raw writes into the written file, at offsets taken from the writer's layout. */
  patch?: (layout: GgufLayout) => { at: number; bytes: Buffer }[];
  /** Cuts the written file to this many bytes. */
  truncate?: (layout: GgufLayout, size: number) => number;
  alignment?: number;
}

const u32 = (at: number, v: number) => ({ at, bytes: Buffer.from(new Uint32Array([v]).buffer) });
const u64 = (at: number, v: bigint) => ({ at, bytes: Buffer.from(new BigUint64Array([v]).buffer) });
const text = (at: number, s: string) => ({ at, bytes: Buffer.from(s, "latin1") });
const uint32 = (value: number): GgufValue => ({ type: "uint32", value });
const uint32s = (value: number[]): GgufValue => ({ type: "array", itemType: "uint32", value });

let dir: string;
let metadata: Map<string, GgufValue>;
let tensors: SourceTensor[];
let count = 0;

/** Writes the bundled model with `c` applied; returns the path and the writer's layout. */
function write(c: Corruption = {}): { path: string; layout: GgufLayout } {
  const path = join(dir, `corrupt-${count++}.gguf`);
  const w = new GgufWriter(c.alignment === undefined ? {} : { alignment: c.alignment });
  const kv = new Map(metadata);
  if (c.alignment !== undefined) kv.delete("general.alignment");
  const edits = typeof c.kv === "function" ? c.kv(metadata) : (c.kv ?? {});
  for (const [key, value] of Object.entries(edits)) {
    if (value === null) kv.delete(key);
    else kv.set(key, value);
  }
  for (const [key, value] of kv) w.set(key, value);
  for (const t of (c.tensors ?? ((x) => x))(tensors.map((t) => ({ ...t })))) {
    w.addEncodedTensor(t.name, t.ne, t.type, t.bytes);
  }
  const { layout, bytes } = w.write(path);
  const fd = openSync(path, "r+");
  try {
    for (const { at, bytes: patch } of c.patch?.(layout) ?? []) writeSync(fd, patch, 0, patch.length, at);
  } finally {
    closeSync(fd);
  }
  if (c.truncate) truncateSync(path, c.truncate(layout, bytes));
  return { path, layout };
}

/** Asserts that checkGguf rejects `path` with model_invalid, naming the file and matching `message`. */
async function rejects(path: string, message: RegExp): Promise<void> {
  await assert.rejects(checkGguf(path), (error: unknown) => {
    assert.ok(error instanceof SluiceError, `not a SluiceError: ${error}`);
    assert.equal(error.code, "model_invalid");
    assert.ok(error.message.startsWith(`${path}: `), `the message does not name the file: ${error.message}`);
    assert.match(error.message, message);
    return true;
  });
}

const tensor = (name: string) => (layout: GgufLayout) => layout.tensors.get(name)!;
const entry = (key: string) => (layout: GgufLayout) => layout.kv.get(key)!;

/** Each kind of fault, what it does to the file, and what the error must say. */
const CORPUS: [string, Corruption, RegExp][] = [
  // The header, and counts a reader would allocate from.
  ["not GGUF", { patch: () => [text(0, "GGUX")] }, /not a GGUF file/],
  ["GGUF version 1", { patch: () => [u32(4, 1)] }, /GGUF version 1/],
  ["a big-endian version", { patch: () => [u32(4, 0x03000000)] }, /version 50331648 \(a big-endian file\?\)/],
  ["tensor count 2^62", { patch: (l) => [u64(l.tensorCountAt, 2n ** 62n)] }, /4611686018427387904 tensors/],
  [
    "tensor count 2^20, past the file",
    { patch: (l) => [u64(l.tensorCountAt, 2n ** 20n)] },
    /1048576 tensors, which take at least \d+ bytes, but only \d+ bytes follow/,
  ],
  [
    "metadata count 2^63",
    { patch: (l) => [u64(l.kvCountAt, 2n ** 63n)] },
    /9223372036854775808 metadata entries/,
  ],
  [
    "vocabulary array length 2^40",
    { patch: (l) => [u64(entry("tokenizer.ggml.tokens")(l).valueAt + 4, 2n ** 40n)] },
    /"tokenizer.ggml.tokens" declares 1099511627776 items/,
  ],
  [
    "vocabulary array length just past the file",
    { patch: (l) => [u64(entry("tokenizer.ggml.tokens")(l).valueAt + 4, 2n ** 27n)] },
    /"tokenizer.ggml.tokens" declares 134217728 string items, which take at least/,
  ],
  [
    "string length 2^50",
    { patch: (l) => [u64(entry("general.name")(l).valueAt, 2n ** 50n)] },
    /metadata key "general.name" has a string of 1125899906842624 bytes/,
  ],
  [
    "key length 2^40",
    { patch: (l) => [u64(entry("llama.block_count")(l).at, 2n ** 40n)] },
    /metadata entry #\d+ has a key of 1099511627776 bytes/,
  ],
  [
    "unknown value type",
    { patch: (l) => [u32(entry("general.file_type")(l).typeAt, 99)] },
    /"general.file_type" has unknown value type 99/,
  ],
  [
    "nested arrays",
    { patch: (l) => [u32(entry("tokenizer.ggml.tokens")(l).valueAt, 9)] },
    /"tokenizer.ggml.tokens" is an array of arrays/,
  ],
  [
    "duplicate key",
    {
      kv: { "general.namf": { type: "string", value: "x" } },
      patch: (l) => [text(entry("general.namf")(l).at + 8 + 11, "e")],
    },
    /metadata key "general.name" appears twice/,
  ],
  [
    "alignment 48",
    { kv: { "general.alignment": uint32(48) } },
    /general.alignment is 48; it must be a power of two/,
  ],
  [
    "alignment of the wrong type",
    { kv: { "general.alignment": { type: "uint64", value: 32n } } },
    /general.alignment is a uint64; llama.cpp requires a uint32/,
  ],
  [
    // The bundled model's tensor table ends 16 bytes past a multiple of 32.
    "alignment 16, so tensor data off ggml's 32",
    { alignment: 16 },
    /tensor token_embd.weight's data starts at byte 134800, not a multiple of 32 \(general.alignment is 16\)/,
  ],
  // The tensor table.
  [
    "absurd n_dims",
    { patch: (l) => [u32(tensor("blk.0.attn_q.weight")(l).nDimsAt, 0xffffffff)] },
    /tensor blk.0.attn_q.weight has n_dims 4294967295; a GGUF tensor has 1 to 4/,
  ],
  [
    "n_dims 0",
    { patch: (l) => [u32(tensor("output_norm.weight")(l).nDimsAt, 0)] },
    /output_norm.weight has n_dims 0/,
  ],
  [
    "n_dims 5",
    { patch: (l) => [u32(tensor("token_embd.weight")(l).nDimsAt, 5)] },
    /token_embd.weight has n_dims 5/,
  ],
  [
    "a dimension of 0",
    { patch: (l) => [u64(tensor("blk.1.attn_k.weight")(l).nDimsAt + 4 + 8, 0n)] },
    /blk.1.attn_k.weight has shape \[256, 0\]: dimension 1 is 0/,
  ],
  [
    "a dimension past int64",
    { patch: (l) => [u64(tensor("blk.1.attn_k.weight")(l).nDimsAt + 4, 2n ** 63n + 1n)] },
    /dimension 0 is 9223372036854775809/,
  ],
  [
    "an element count past int64",
    {
      patch: (l) => [
        u64(tensor("blk.2.attn_v.weight")(l).nDimsAt + 4, 2n ** 40n),
        u64(tensor("blk.2.attn_v.weight")(l).nDimsAt + 12, 2n ** 40n),
      ],
    },
    /blk.2.attn_v.weight has shape \[1099511627776, 1099511627776\]: \d+ elements overflow int64/,
  ],
  [
    "an element count that fits int64 but not the file",
    { patch: (l) => [u64(tensor("output.weight")(l).nDimsAt + 12, 2n ** 40n)] },
    /output.weight \(f16 \[256, 1099511627776\], \d+ bytes from byte \d+\) runs past the end of the file/,
  ],
  [
    "a removed ggml type",
    { patch: (l) => [u32(tensor("output.weight")(l).typeAt, 4)] },
    /unknown ggml type 4/,
  ],
  [
    "an unknown ggml type",
    { patch: (l) => [u32(tensor("output.weight")(l).typeAt, 1000)] },
    /unknown ggml type 1000/,
  ],
  [
    "rows not a multiple of the block",
    {
      patch: (l) => [
        u64(tensor("output_norm.weight")(l).nDimsAt + 4, 250n),
        u32(tensor("output_norm.weight")(l).typeAt, 8),
      ],
    },
    /output_norm.weight has rows of 250 elements, not a multiple of q8_0's block of 32/,
  ],
  [
    "a data offset out of place",
    { patch: (l) => [u64(tensor("blk.1.attn_q.weight")(l).offsetAt, 2n ** 60n)] },
    /blk.1.attn_q.weight has data offset 1152921504606846976, but the tensors before it end at \d+/,
  ],
  [
    "tensor data cut short",
    { truncate: (_, size) => size - 4096 },
    /tensor output.weight \(f16 \[256, 4096\], 2097152 bytes from byte \d+\) runs past the end of the file/,
  ],
  [
    "the file cut inside the tensor table",
    { truncate: (l) => tensor("blk.3.ffn_up.weight")(l).nDimsAt + 6 },
    /the file ends inside the tensor table row of blk.3.ffn_up.weight/,
  ],
  [
    "the file cut inside the metadata",
    { truncate: (l) => entry("llama.rope.freq_base")(l).valueAt + 2 },
    /the header declares/,
  ],
  [
    "a tensor name of 64 bytes",
    { tensors: (ts) => [...ts, { name: "x".repeat(64), ne: [8], type: 0, bytes: new Uint8Array(32) }] },
    /tensor #48 has a name of 64 bytes; llama.cpp requires 1 to 63/,
  ],
  [
    "duplicate tensor names",
    { patch: (l) => [text(tensor("blk.0.attn_k.weight")(l).at + 8 + 11, "q")] },
    /tensor blk.0.attn_q.weight appears twice/,
  ],
  // Hyperparameters llama.cpp asserts on.
  [
    "head_count 0",
    { kv: { "llama.attention.head_count": uint32(0) } },
    /llama.attention.head_count is 0; it must be at least 1/,
  ],
  [
    "head_count_kv 0",
    { kv: { "llama.attention.head_count_kv": uint32(0) } },
    /llama.attention.head_count_kv is 0; it must be at least 1/,
  ],
  [
    "block_count 100000",
    { kv: { "llama.block_count": uint32(100000) } },
    /llama.block_count is 100000; llama.cpp allows at most 512/,
  ],
  [
    "block_count 0",
    { kv: { "llama.block_count": uint32(0) } },
    /llama.block_count is 0; it must be at least 1/,
  ],
  [
    "block_count past the tensors",
    { kv: { "llama.block_count": uint32(100) } },
    /block_count is 100, but the file has only 48 tensors/,
  ],
  [
    "block_count one too many",
    { kv: { "llama.block_count": uint32(6) } },
    /lacks tensor blk.5.attn_norm.weight/,
  ],
  [
    "context_length 0",
    { kv: { "llama.context_length": uint32(0) } },
    /llama.context_length is 0; it must be at least 1/,
  ],
  [
    "embedding_length 0",
    { kv: { "llama.embedding_length": uint32(0) } },
    /llama.embedding_length is 0; it must be at least 1/,
  ],
  [
    "no embedding_length",
    { kv: { "llama.embedding_length": null } },
    /lacks required metadata llama.embedding_length/,
  ],
  [
    "no feed_forward_length",
    { kv: { "llama.feed_forward_length": null } },
    /lacks required metadata llama.feed_forward_length/,
  ],
  [
    "feed_forward_length 0",
    { kv: { "llama.feed_forward_length": uint32(0) } },
    /llama.feed_forward_length is 0/,
  ],
  [
    "head_count as int32",
    { kv: { "llama.attention.head_count": { type: "int32", value: 8 } } },
    /llama.attention.head_count is 8 \(an int32\); llama.cpp reads it as a uint32/,
  ],
  [
    "head_count as float32",
    { kv: { "llama.attention.head_count": { type: "float32", value: 8 } } },
    /llama.attention.head_count is 8 \(a float32\)/,
  ],
  [
    "head_count_kv not dividing head_count",
    { kv: { "llama.attention.head_count_kv": uint32(3) } },
    /llama.attention.head_count_kv is 3, which does not divide the 8 attention heads/,
  ],
  [
    "embedding_length not divisible by head_count",
    { kv: { "llama.attention.head_count": uint32(12) } },
    /llama.embedding_length 256 is not divisible by llama.attention.head_count 12/,
  ],
  [
    "a per-block array of the wrong length",
    { kv: { "llama.attention.head_count": uint32s([8, 8, 8, 8]) } },
    /llama.attention.head_count has 4 items; it needs one per block \(block_count 5\)/,
  ],
  [
    "a per-block array with a 0",
    { kv: { "llama.attention.head_count_kv": uint32s([4, 4, 4, 0, 4]) } },
    /llama.attention.head_count_kv\[3\] is 0/,
  ],
  [
    "per-block head counts that differ",
    { kv: { "llama.attention.head_count": uint32s([8, 8, 4, 8, 8]) } },
    /llama.attention.head_count\[2\] is 4 but block 0 has 8/,
  ],
  [
    "a per-block array of strings",
    { kv: { "llama.feed_forward_length": { type: "array", itemType: "string", value: ["768"] } } },
    /llama.feed_forward_length is an array of 1 string; per-block values are uint32 or int32/,
  ],
  [
    "an unknown RoPE scaling type",
    { kv: { "llama.rope.scaling.type": { type: "string", value: "bogus" } } },
    /llama.rope.scaling.type is "bogus"; llama.cpp knows none, linear, yarn, longrope/,
  ],
  [
    "expert_count 2000",
    { kv: { "llama.expert_count": uint32(2000) } },
    /llama.expert_count is 2000; llama.cpp allows at most 1024/,
  ],
  [
    "experts used without experts",
    { kv: { "llama.expert_used_count": uint32(2) } },
    /llama.expert_used_count is 2, more than llama.expert_count \(0\)/,
  ],
  [
    "nextn layers past the blocks",
    { kv: { "llama.nextn_predict_layers": uint32(6) } },
    /nextn_predict_layers is 6/,
  ],
  [
    "a negative rms epsilon",
    { kv: { "llama.attention.layer_norm_rms_epsilon": { type: "float32", value: -1 } } },
    /llama.attention.layer_norm_rms_epsilon is -1; a normalisation epsilon is a finite number of 0 or more/,
  ],
  [
    "a NaN rms epsilon",
    { kv: { "llama.attention.layer_norm_rms_epsilon": { type: "float32", value: Number.NaN } } },
    /layer_norm_rms_epsilon is NaN/,
  ],
  [
    "no rms epsilon",
    { kv: { "llama.attention.layer_norm_rms_epsilon": null } },
    /lacks required metadata llama.attention.layer_norm_rms_epsilon/,
  ],
  [
    "key and value heads of different sizes",
    { kv: { "llama.attention.key_length": uint32(16) } },
    /llama.attention.key_length 16 differs from llama.attention.value_length 32/,
  ],
  [
    "a partial RoPE",
    { kv: { "llama.rope.dimension_count": uint32(16) } },
    /llama.rope.dimension_count is 16/,
  ],
  ["no architecture", { kv: { "general.architecture": null } }, /has no general.architecture/],
  ["no vocabulary", { kv: { "tokenizer.ggml.tokens": null } }, /has no tokenizer vocabulary/],
  [
    // Token 0 is "Ā" (C4 80), token 1 "ā" (C4 81): the first string's bytes start past the item type, the
    // array length and the string's length.
    "two tokens alike",
    {
      patch: (l) => [
        { at: entry("tokenizer.ggml.tokens")(l).valueAt + 4 + 8 + 8 + 1, bytes: Buffer.from([0x81]) },
      ],
    },
    /tokenizer.ggml.tokens has token 1 equal to token 0 \("ā"\); every token must be distinct/,
  ],
  // Tensors against the hyperparameters.
  [
    "a missing tensor",
    { tensors: (ts) => ts.filter((t) => t.name !== "blk.2.ffn_up.weight") },
    /lacks tensor blk.2.ffn_up.weight/,
  ],
  [
    "head_count_kv that the tensors do not have",
    { kv: { "llama.attention.head_count_kv": uint32(8) } },
    /tensor blk.0.attn_k.weight has shape \[256, 128\], but the hyperparameters call for \[256, 256\]/,
  ],
  [
    "a vocabulary the embedding does not have",
    {
      kv: (base) => {
        const tokens = base.get("tokenizer.ggml.tokens")!.value as string[];
        return {
          "tokenizer.ggml.tokens": { type: "array", itemType: "string", value: tokens.slice(0, 4000) },
        };
      },
    },
    /tensor token_embd.weight has shape \[256, 4096\], but the hyperparameters call for \[256, 4000\]/,
  ],
  [
    "a norm that is not f32",
    { patch: (l) => [u32(tensor("blk.0.attn_norm.weight")(l).typeAt, 26)] },
    /tensor blk.0.attn_norm.weight is i32; llama.cpp computes with norms and biases only in f32/,
  ],
  [
    "a matrix of a type the CPU cannot multiply",
    { patch: (l) => [u32(tensor("output.weight")(l).typeAt, 9)] },
    /tensor output.weight is q8_1, a type llama.cpp's CPU backend cannot multiply with/,
  ],
];

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "sluice-gguf-"));
  const model = readFileSync(BUNDLED_MODEL_PATH);
  metadata = readGgufMetadata(BUNDLED_MODEL_PATH);
  const info = await readGgufFileInfo(BUNDLED_MODEL_PATH, { readTensorInfo: true, logWarnings: false });
  tensors = info.tensorInfo!.map((t) => {
    const ne = t.dimensions.map(Number);
    const at = Number(t.fileOffset);
    // The bundled model holds only f32 and f16 tensors, which the writer can size.
    const size = tensorByteSize(
      t.ggmlType as 0 | 1,
      ne.reduce((a, b) => a * b, 1),
      ne[0]!,
    );
    return { name: t.name, ne, type: t.ggmlType, bytes: model.subarray(at, at + size) };
  });
});
after(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("checkGguf", () => {
  test("the bundled model passes, in milliseconds", async () => {
    await checkGguf(BUNDLED_MODEL_PATH); // warm up the code paths
    const started = performance.now();
    const result = await checkGguf(BUNDLED_MODEL_PATH);
    const ms = performance.now() - started;
    assert.deepEqual([result.architecture, result.contextLength], ["llama", 512]);
    console.log(`checkGguf on the bundled model: ${ms.toFixed(1)} ms`);
    assert.ok(ms < 250, `took ${ms} ms`);
  });

  test("the corpus writer rebuilds the bundled model byte for byte", () => {
    const { path } = write();
    assert.ok(readFileSync(path).equals(readFileSync(BUNDLED_MODEL_PATH)));
    unlinkSync(path);
  });

  test("a missing file, a directory and a short file are model_invalid", async () => {
    const short = join(dir, "short.gguf");
    await writeFile(short, "GG");
    await rejects(short, /not a GGUF file/);
    for (const path of [join(dir, "absent.gguf"), dir]) {
      await assert.rejects(
        checkGguf(path),
        (e: unknown) => e instanceof SluiceError && e.code === "model_invalid",
      );
    }
  });

  for (const [name, corruption, message] of CORPUS) {
    test(`rejects ${name}`, async () => {
      const { path } = write(corruption);
      try {
        await rejects(path, message);
      } finally {
        unlinkSync(path);
      }
    });
  }

  // Valid variations the checks must not refuse.
  const VALID: [string, Corruption][] = [
    [
      "per-block arrays with one value per block",
      {
        kv: {
          "llama.attention.head_count": uint32s([8, 8, 8, 8, 8]),
          "llama.feed_forward_length": { type: "array", itemType: "int32", value: [768, 768, 768, 768, 768] },
        },
      },
    ],
    ["tied embeddings (no output.weight)", { tensors: (ts) => ts.filter((t) => t.name !== "output.weight") }],
    ["general.alignment 64", { alignment: 64 }],
    [
      "an explicit head size equal to the derived one",
      { kv: { "llama.attention.key_length": uint32(32), "llama.attention.value_length": uint32(32) } },
    ],
    [
      "fused query-key-value projections",
      {
        tensors: (ts) =>
          ts.flatMap((t) => {
            const m = /^blk\.(\d+)\.attn_([qkv])\.weight$/.exec(t.name);
            if (m === null) return [t];
            if (m[2] !== "q") return [];
            const part = (p: string) => ts.find((x) => x.name === `blk.${m[1]}.attn_${p}.weight`)!;
            const bytes = Buffer.concat([part("q").bytes, part("k").bytes, part("v").bytes]);
            return [{ name: `blk.${m[1]}.attn_qkv.weight`, ne: [256, 512], type: t.type, bytes }];
          }),
      },
    ],
  ];
  for (const [name, variation] of VALID) {
    test(`accepts ${name}`, async () => {
      const { path } = write(variation);
      try {
        const { architecture, contextLength } = await checkGguf(path);
        assert.deepEqual([architecture, contextLength], ["llama", 512]);
      } finally {
        unlinkSync(path);
      }
    });
  }
});

describe("LlamaEngine.create on files that used to crash llama.cpp", () => {
  // Each of these aborted the process (exit 134) or, for n_dims, read on without end before the check.
  const CRASHERS: [string, Corruption, RegExp][] = [
    ["head_count 0", { kv: { "llama.attention.head_count": uint32(0) } }, /llama.attention.head_count is 0/],
    ["head_count_kv 0", { kv: { "llama.attention.head_count_kv": uint32(0) } }, /head_count_kv is 0/],
    ["block_count 100000", { kv: { "llama.block_count": uint32(100000) } }, /block_count is 100000/],
    [
      "absurd n_dims",
      { patch: (l) => [u32(tensor("blk.0.attn_q.weight")(l).nDimsAt, 0xffffffff)] },
      /n_dims 4294967295/,
    ],
  ];
  for (const [name, corruption, message] of CRASHERS) {
    test(`${name}: the process exits normally with model_invalid`, async () => {
      const { path } = write(corruption);
      const run = await createInChild(dir, [path]);
      unlinkSync(path);
      assert.equal(run.code, 0, howItEnded(run));
      assert.equal(run.results.length, 1, run.stderr.slice(-500));
      assert.equal(run.results[0]!.code, "model_invalid");
      assert.match(String(run.results[0]!.message), message);
    });
  }

  test("the same child loads the unedited rebuild and decodes a token", async () => {
    const { path } = write();
    const run = await createInChild(dir, [path]);
    unlinkSync(path);
    assert.equal(run.code, 0, howItEnded(run));
    assert.deepEqual(run.results, [{ loaded: true }]);
  });
});
