import type { Hyperparameters } from "./checkHyperparameters.ts";
import type { GgufTensor } from "./checkTensorTable.ts";
import type { MetadataReader } from "./MetadataReader.ts";

interface Expected {
  name: string;
  shape: readonly number[];
  /** Norms and biases are added or multiplied in f32; matrices are multiplied with a dot product. */
  kind: "vector" | "matrix";
  /** How the hyperparameters give the shape, for the message. */
  from: string;
  required: boolean;
}

/**
 * What llama.cpp's llama architecture (src/models/llama.cpp) needs beyond the shared hyperparameters:
 * - one head count for every block: its graph uses block 0's for all, so a block that differs fails an
 *   assert on the first decode;
 * - keys and values of one head size, equal to `rope.dimension_count` (asserted when the graph is built);
 * - `attention.layer_norm_rms_epsilon`;
 * - every tensor present, with the shape the hyperparameters call for (trailing dimensions of 1 aside), and of
 *   a type the CPU backend computes with: f32 for norms and biases (anything else aborts the first decode),
 *   a type with a dot product for matrices.
 *
 * @throws SluiceError `model_invalid` naming the file, the key or tensor, the value and the fault.
 */
export function checkLlama(
  read: MetadataReader,
  hp: Hyperparameters,
  vocabularySize: number,
  tensors: readonly GgufTensor[],
): void {
  const arch = hp.architecture;
  for (const [key, values] of [
    ["attention.head_count", hp.headCount],
    ["attention.head_count_kv", hp.headCountKv],
  ] as const) {
    const il = values.findIndex((v) => v !== values[0]);
    if (il > 0) {
      throw read.invalid(
        `${arch}.${key}[${il}] is ${values[il]} but block 0 has ${values[0]}; the llama architecture uses one ` +
          "head count for every block.",
      );
    }
  }
  if (hp.keyLength !== hp.valueLength) {
    throw read.invalid(
      `${arch}.attention.key_length ${hp.keyLength} differs from ${arch}.attention.value_length ` +
        `${hp.valueLength}; the llama architecture needs one head size.`,
    );
  }
  const rot = read.uint32(`${arch}.rope.dimension_count`, hp.keyLength);
  if (rot !== hp.keyLength) {
    throw read.invalid(
      `${arch}.rope.dimension_count is ${rot}; the llama architecture rotates whole heads of ${hp.keyLength}.`,
    );
  }
  if (read.optionalFloat32(`${arch}.attention.layer_norm_rms_epsilon`) === undefined) {
    throw read.invalid(
      `lacks required metadata ${arch}.attention.layer_norm_rms_epsilon; llama.cpp cannot load it.`,
    );
  }

  const byName = new Map(tensors.map((t) => [t.name, t]));
  for (const expected of expectedTensors(hp, vocabularySize, byName)) {
    const tensor = byName.get(expected.name);
    if (tensor === undefined) {
      if (!expected.required) continue;
      throw read.invalid(`lacks tensor ${expected.name} (${expected.from}), which a llama model needs.`);
    }
    if (!sameShape(tensor.ne, expected.shape)) {
      throw read.invalid(
        `tensor ${expected.name} has shape [${tensor.ne.join(", ")}], but the hyperparameters call for ` +
          `[${expected.shape.join(", ")}] (${expected.from}).`,
      );
    }
    if (expected.kind === "vector" ? tensor.type.name !== "f32" : !tensor.type.matmul) {
      throw read.invalid(
        expected.kind === "vector"
          ? `tensor ${expected.name} is ${tensor.type.name}; llama.cpp computes with norms and biases only in f32.`
          : `tensor ${expected.name} is ${tensor.type.name}, a type llama.cpp's CPU backend cannot multiply with.`,
      );
    }
  }
}

function expectedTensors(
  hp: Hyperparameters,
  vocab: number,
  byName: ReadonlyMap<string, GgufTensor>,
): Expected[] {
  const e = hp.embeddingLength;
  const head = hp.keyLength;
  const q = head * hp.headCount[0]!;
  const kv = head * hp.headCountKv[0]!;
  const ff = hp.feedForwardLength[0]!;
  const experts = hp.expertCount;
  const out: Expected[] = [];
  const add = (name: string, shape: number[], from: string, required = true) =>
    out.push({ name, shape, from, required, kind: shape.length === 1 ? "vector" : "matrix" });

  add("token_embd.weight", [e, vocab], "embedding_length x vocabulary size");
  add("output_norm.weight", [e], "embedding_length");
  add("output.weight", [e, vocab], "embedding_length x vocabulary size", false);
  add("rope_freqs.weight", [head / 2], "head size / 2", false);
  for (let il = 0; il < hp.layerCount; il++) {
    const blk = `blk.${il}.`;
    add(`${blk}attn_norm.weight`, [e], "embedding_length");
    // A fused projection replaces the three, as llama.cpp's create_tensor_qkv accepts either.
    if (byName.has(`${blk}attn_qkv.weight`)) {
      add(
        `${blk}attn_qkv.weight`,
        [e, q + 2 * kv],
        "embedding_length x (head_count + 2 head_count_kv) x head size",
      );
      add(`${blk}attn_qkv.bias`, [q + 2 * kv], "(head_count + 2 head_count_kv) x head size", false);
    } else {
      add(`${blk}attn_q.weight`, [e, q], "embedding_length x head_count x head size");
      add(`${blk}attn_k.weight`, [e, kv], "embedding_length x head_count_kv x head size");
      add(`${blk}attn_v.weight`, [e, kv], "embedding_length x head_count_kv x head size");
      add(`${blk}attn_q.bias`, [q], "head_count x head size", false);
      add(`${blk}attn_k.bias`, [kv], "head_count_kv x head size", false);
      add(`${blk}attn_v.bias`, [kv], "head_count_kv x head size", false);
    }
    add(`${blk}attn_output.weight`, [q, e], "head_count x head size x embedding_length");
    add(`${blk}attn_output.bias`, [e], "embedding_length", false);
    add(`${blk}ffn_norm.weight`, [e], "embedding_length");
    if (experts === 0) {
      add(`${blk}ffn_gate.weight`, [e, ff], "embedding_length x feed_forward_length");
      add(`${blk}ffn_down.weight`, [ff, e], "feed_forward_length x embedding_length");
      add(`${blk}ffn_up.weight`, [e, ff], "embedding_length x feed_forward_length");
      add(`${blk}ffn_gate.bias`, [ff], "feed_forward_length", false);
      add(`${blk}ffn_down.bias`, [e], "embedding_length", false);
      add(`${blk}ffn_up.bias`, [ff], "feed_forward_length", false);
    } else {
      add(`${blk}ffn_gate_inp.weight`, [e, experts], "embedding_length x expert_count");
      add(
        `${blk}ffn_gate_exps.weight`,
        [e, ff, experts],
        "embedding_length x feed_forward_length x experts",
        false,
      );
      add(`${blk}ffn_down_exps.weight`, [ff, e, experts], "feed_forward_length x embedding_length x experts");
      add(`${blk}ffn_up_exps.weight`, [e, ff, experts], "embedding_length x feed_forward_length x experts");
    }
  }
  return out;
}

/** As llama.cpp compares them: dimensions past the expected ones must be 1. */
function sameShape(actual: readonly number[], expected: readonly number[]): boolean {
  for (let d = 0; d < 4; d++) if ((actual[d] ?? 1) !== (expected[d] ?? 1)) return false;
  return true;
}
