import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { type Llama, type LlamaModel, readGgufFileInfo } from "node-llama-cpp";
import { float32ToFloat16Bits, readGgufMetadata } from "../../scripts/gguf/GgufWriter.ts";
import {
  checkModel,
  DEFAULT_TOKENIZER_SOURCE,
  makeSyntheticModel,
  type SyntheticModelShape,
} from "../../scripts/make-synthetic-model.ts";
import { testLlama } from "../helpers/llama.ts";

const TINY: SyntheticModelShape = {
  embd: 64,
  layers: 2,
  heads: 4,
  kvHeads: 2,
  ff: 128,
  ctx: 256,
  type: "f16",
};
const SAMPLE =
  "Genesis 1\n1 In the beginning God created the heaven, café 日本 🎉 — it's\t done.<|im_end|>\r\n";

describe("synthetic model", () => {
  let dir: string;
  let path: string;
  let llama: Llama;
  let model: LlamaModel;
  let bundled: LlamaModel;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "sluice-synthetic-"));
    path = join(dir, "tiny.gguf");
    makeSyntheticModel({ ...TINY, out: path, seed: 7, name: "synthetic-test" });
    llama = await testLlama();
    model = await llama.loadModel({ modelPath: path });
    bundled = await llama.loadModel({ modelPath: DEFAULT_TOKENIZER_SOURCE, vocabOnly: true });
  });

  after(async () => {
    await model?.dispose();
    await bundled?.dispose();
    await llama?.dispose();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test("loads with the requested shape", () => {
    const info = model.fileInfo.metadata;
    assert.equal(info.general.architecture, "llama");
    assert.equal(model.trainContextSize, TINY.ctx);
    assert.equal(model.fileInsights.totalLayers, TINY.layers + 1);
    assert.equal(model.tokens.bos, bundled.tokens.bos);
    assert.equal(model.tokens.eos, bundled.tokens.eos);
  });

  test("vocabulary metadata equals the bundled model's", async () => {
    const [mine, theirs] = await Promise.all([
      readGgufFileInfo(path),
      readGgufFileInfo(DEFAULT_TOKENIZER_SOURCE),
    ]);
    const a = mine.metadata.tokenizer.ggml;
    const b = theirs.metadata.tokenizer.ggml;
    assert.equal(a.tokens.length, 4096);
    assert.deepEqual(a.tokens, b.tokens);
    assert.deepEqual(a.token_type, b.token_type);
    assert.deepEqual(a.merges, b.merges);

    // On-disk value types too (e.g. int32 token types, uint32 ids), not just the decoded values.
    const pick = (m: ReturnType<typeof readGgufMetadata>) =>
      [...m].filter(([k]) => k.startsWith("tokenizer.")).sort(([x], [y]) => x.localeCompare(y));
    assert.deepEqual(pick(readGgufMetadata(path)), pick(readGgufMetadata(DEFAULT_TOKENIZER_SOURCE)));
  });

  test("tokenizes like the bundled model and detokenizes back", () => {
    for (const specials of [false, true]) {
      const ids = model.tokenize(SAMPLE, specials);
      assert.deepEqual(ids, bundled.tokenize(SAMPLE, specials));
      assert.equal(model.detokenize(ids, specials), SAMPLE);
    }
    assert.deepEqual(model.tokenize("<|endoftext|>", true), [4091]);
  });

  test("greedy generation is deterministic across runs", async () => {
    const context = await model.createContext({ contextSize: 128, sequences: 2, threads: 1 });
    try {
      const prompt = [model.tokens.bos!, ...model.tokenize("In the beginning")];
      // Two separate sequences, so nothing carries over in the KV cache between the runs.
      const run = async () => {
        const seq = context.getSequence();
        const out: number[] = [];
        for await (const token of seq.evaluate(prompt, { temperature: 0, yieldEogToken: true })) {
          out.push(token);
          if (out.length === 10) break;
        }
        await seq.dispose();
        return out;
      };
      const first = await run();
      const second = await run();
      assert.equal(first.length, 10);
      assert.deepEqual(second, first);
    } finally {
      await context.dispose();
    }
  });

  test("writing is deterministic per seed; f32 and q8_0 also load and give finite, non-flat logits", async () => {
    const again = join(dir, "again.gguf");
    const other = join(dir, "other.gguf");
    makeSyntheticModel({ ...TINY, out: again, seed: 7, name: "synthetic-test" });
    makeSyntheticModel({ ...TINY, out: other, seed: 8, name: "synthetic-test" });
    const bytes = readFileSync(path);
    assert.ok(bytes.equals(readFileSync(again)));
    assert.ok(!bytes.equals(readFileSync(other)));

    for (const type of ["f32", "q8_0"] as const) {
      const out = join(dir, `tiny-${type}.gguf`);
      const made = makeSyntheticModel({ ...TINY, type, out });
      const check = await checkModel(out, { threads: 1, llama });
      assert.ok(check.logitRange.max > check.logitRange.min, `${type} logits`);
      assert.ok(check.sample.length > 0);
      assert.ok(made.bytes > 0);
    }
  });

  test("float32 to float16 rounding", () => {
    const cases: [number, number][] = [
      [0, 0x0000],
      [-0, 0x8000],
      [1, 0x3c00],
      [-2, 0xc000],
      [0.1, 0x2e66],
      [65504, 0x7bff],
      [65520, 0x7c00], // halfway to the next binade: ties to even, which overflows to infinity
      [2 ** -24, 0x0001],
      [2 ** -25, 0x0000], // tie between 0 and the smallest subnormal: ties to even
      [1 + 2 ** -11, 0x3c00], // tie: stays on the even mantissa
      [1 + 3 * 2 ** -11, 0x3c02],
      [Number.POSITIVE_INFINITY, 0x7c00],
    ];
    for (const [x, bits] of cases) assert.equal(float32ToFloat16Bits(x), bits, `f16(${x})`);
    assert.equal(float32ToFloat16Bits(Number.NaN) & 0x7c00, 0x7c00);
    assert.notEqual(float32ToFloat16Bits(Number.NaN) & 0x3ff, 0);
  });
});
