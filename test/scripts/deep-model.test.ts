import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { Llama, LlamaModel, Token } from "node-llama-cpp";
import { readGgufHeader, readGgufMetadata, readGgufTensorData } from "../../scripts/gguf/GgufWriter.ts";
import { makeDeepModel } from "../../scripts/gguf/makeDeepModel.ts";
import { DEFAULT_TOKENIZER_SOURCE, measureAgreement } from "../../scripts/make-synthetic-model.ts";
import { testLlama } from "../helpers/llama.ts";

const PROMPTS = ["In the beginning", "And God said, Let there be", "The LORD is my shepherd"];
const TOKENS = 24;

async function greedy(model: LlamaModel, text: string): Promise<Token[]> {
  const context = await model.createContext({ contextSize: 128, sequences: 1, threads: 1 });
  try {
    const sequence = context.getSequence();
    const out: Token[] = [];
    const prompt = [model.tokens.bos!, ...model.tokenize(text)];
    for await (const token of sequence.evaluate(prompt, { temperature: 0, yieldEogToken: true })) {
      out.push(token);
      if (out.length === TOKENS) break;
    }
    return out;
  } finally {
    await context.dispose();
  }
}

describe("deep model", () => {
  let dir: string;
  let llama: Llama;
  let source: LlamaModel;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "sluice-deep-"));
    llama = await testLlama();
    source = await llama.loadModel({ modelPath: DEFAULT_TOKENIZER_SOURCE });
  });

  after(async () => {
    await source?.dispose();
    await llama?.dispose();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test("perturb 0: the source's greedy tokens, with its FFNs zero-padded and blocks appended", async () => {
    const path = join(dir, "deep0.gguf");
    const made = makeDeepModel({ out: path, extraLayers: 2, ff: 1024, perturb: 0 });
    assert.deepEqual([made.sourceLayers, made.layers, made.ff], [5, 7, 1024]);
    const meta = readGgufMetadata(path);
    assert.equal(meta.get("llama.block_count")?.value, 7);
    const names = readGgufHeader(path).tensors.map((t) => t.name);
    assert.ok(names.includes("blk.6.ffn_down.weight") && !names.includes("blk.7.attn_q.weight"));
    const deep = await llama.loadModel({ modelPath: path });
    try {
      for (const prompt of PROMPTS) {
        assert.deepEqual(await greedy(deep, prompt), await greedy(source, prompt), prompt);
      }
    } finally {
      await deep.dispose();
    }
  });

  test("a perturbation makes the source disagree on some tokens, not on most", async () => {
    const path = join(dir, "deep1.gguf");
    makeDeepModel({ out: path, extraLayers: 2, ff: 1024, perturb: 0.3 });
    const agreement = await measureAgreement(path, DEFAULT_TOKENIZER_SOURCE, {
      threads: 1,
      tokens: 32,
      llama,
    });
    assert.ok(agreement.perToken < 1, `agreement ${agreement.perToken}`);
    assert.ok(agreement.perToken > 0.2, `agreement ${agreement.perToken}`);
  });

  test("copies the source's tensors and tokenizer verbatim when ff is the source's", () => {
    const path = join(dir, "deep2.gguf");
    makeDeepModel({ out: path, extraLayers: 1, perturb: 0 });
    const theirs = readGgufHeader(DEFAULT_TOKENIZER_SOURCE);
    const mine = readGgufHeader(path);
    for (const t of theirs.tensors) {
      const copy = mine.tensors.find((m) => m.name === t.name);
      assert.deepEqual([copy?.ne, copy?.type], [t.ne, t.type], t.name);
      assert.ok(
        readGgufTensorData(path, copy!).equals(readGgufTensorData(DEFAULT_TOKENIZER_SOURCE, t)),
        t.name,
      );
    }
    for (const [key, value] of theirs.metadata) {
      if (key.startsWith("tokenizer.")) assert.deepEqual(mine.metadata.get(key), value, key);
    }
  });
});
