/**
 * A "deep" llama GGUF: a small model's own tensors plus extra blocks that cost compute but (nearly) leave its
 * function alone. The small model, used as a draft model, then agrees with this target as often as `perturb`
 * lets it, which is what draft-model speculation needs to show a speed-up. It measures the machinery at a
 * given agreement; it is not a trained model pair.
 */
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { GgmlType, GgufWriter, readGgufHeader, readGgufTensorData, tensorByteSize } from "./GgufWriter.ts";
import { gaussianTensor } from "./gaussianTensor.ts";

const KJV_TINY = fileURLToPath(new URL("../../models/kjv-tiny.gguf", import.meta.url));

/*
 * Measured on the 2-core dev box (shared: load average ~3), threads 1, against kjv-tiny:
 *   12 extra blocks, ff 8192 (225 MB): decode 12.5 ms/token vs 0.8 after a short prompt (16x); 14.1 vs 1.3-1.6
 *     after 256 tokens (`--measure`, ~9x)
 *   8 extra blocks, ff 8192 (173 MB): 8.5 vs 0.5 (16x) after a short prompt; 10.8 vs 1.3-1.45 after 256 (~8x)
 *   40 extra blocks, ff 768 (75 MB): 4.2 vs 0.65 after a short prompt (6.5x)
 * Greedy agreement of kjv-tiny with the model, 8 prompts x 64 tokens, by perturb:
 *   12 x 8192: 0 -> 100%, 0.06 -> 81%, 0.08 -> 76%
 *   8 x 8192: 0 -> 100%, 0.02 -> 96%, 0.06 -> 85%, 0.08 -> 81%, 0.1 -> 76%, 0.12 -> 75%, 0.2 -> 56%
 */
export const DEEP_PRESET = { extraLayers: 12, ff: 8192, perturb: 0.06 } as const;

export interface DeepModelOptions {
  out: string;
  /** The llama GGUF whose tensors, hyperparameters and tokenizer are kept. Defaults to models/kjv-tiny.gguf. */
  from?: string;
  /** Blocks appended after the source's own, with the source's width and head counts. */
  extraLayers: number;
  /**
   * FFN width of every block. Defaults to the source's. llama.cpp's llama architecture has one width for all
   * blocks, so a wider one zero-pads the source's FFNs: the padded units compute silu(0) * 0 = 0 exactly.
   */
  ff?: number;
  /**
   * Standard deviation of the extra blocks' output projections (`attn_output`, `ffn_down`): what they add to the
   * residual stream. 0 adds nothing, so the model computes the source's function exactly at the extra blocks'
   * cost; larger values make it disagree with the source on more tokens. Defaults to 0.
   */
  perturb?: number;
  seed?: number;
  /** Standard deviation of the extra blocks' other random matrices. Defaults to 0.02. */
  std?: number;
  name?: string;
}

export interface DeepModelResult {
  path: string;
  bytes: number;
  parameters: number;
  sourceLayers: number;
  layers: number;
  ff: number;
}

/**
 * Writes the source's tensors (FFNs zero-padded to `ff`) and then `extraLayers` random blocks after them, whose
 * output projections are N(0, perturb). Tensor data is copied as encoded, so the source's blocks compute
 * exactly what they did.
 */
export function makeDeepModel(options: DeepModelOptions): DeepModelResult {
  const from = options.from ?? KJV_TINY;
  const seed = options.seed ?? 1;
  const std = options.std ?? 0.02;
  const perturb = options.perturb ?? 0;
  if (!Number.isSafeInteger(options.extraLayers) || options.extraLayers < 0)
    throw new Error("--layers: expected the number of extra blocks, a non-negative integer");
  if (!(perturb >= 0 && Number.isFinite(perturb))) throw new Error("--perturb: expected a number >= 0");
  const { metadata, tensors } = readGgufHeader(from);
  const u32 = (key: string) => {
    const v = metadata.get(key);
    if (v?.type !== "uint32") throw new Error(`${from}: ${key} missing or not a uint32`);
    return v.value;
  };
  if (metadata.get("general.architecture")?.value !== "llama") throw new Error(`${from}: not a llama model`);
  const sourceLayers = u32("llama.block_count");
  const sourceFf = u32("llama.feed_forward_length");
  const embd = u32("llama.embedding_length");
  const heads = u32("llama.attention.head_count");
  const kvHeads = u32("llama.attention.head_count_kv");
  const ff = options.ff ?? sourceFf;
  if (!Number.isSafeInteger(ff) || ff < sourceFf) throw new Error(`--ff: expected an integer >= ${sourceFf}`);
  const headDim = embd / heads;
  const layers = sourceLayers + options.extraLayers;
  const byName = new Map(tensors.map((t) => [t.name, t]));
  const matrixType = byName.get("blk.0.ffn_up.weight")?.type;
  if (matrixType !== GgmlType.F16 && matrixType !== GgmlType.F32 && matrixType !== GgmlType.Q8_0)
    throw new Error(
      `${from}: FFN matrices of ggml type ${matrixType} are not supported (F32, F16, Q8_0 are)`,
    );

  const w = new GgufWriter();
  for (const [key, value] of metadata) if (key !== "general.alignment") w.set(key, value);
  w.setString("general.name", options.name ?? "deep");
  w.setString(
    "general.description",
    `${from.split("/").at(-1)} plus ${options.extraLayers} blocks of ff ${ff}, random N(0, ${std}) with output ` +
      `projections N(0, ${perturb}), seed ${seed}; not a trained model`,
  );
  w.setUint32("llama.block_count", layers);
  w.setUint32("llama.feed_forward_length", ff);

  for (const t of tensors) {
    const padRows = ff > sourceFf && /^blk\.\d+\.ffn_(gate|up)\.weight$/.test(t.name);
    const padColumns = ff > sourceFf && /^blk\.\d+\.ffn_down\.weight$/.test(t.name);
    const data = readGgufTensorData(from, t);
    if (padRows) {
      // [embd, sourceFf] -> [embd, ff]: extra rows of zeros (gate 0, up 0).
      const padded = Buffer.alloc(tensorByteSize(t.type as GgmlType, embd * ff, embd));
      data.copy(padded);
      w.addEncodedTensor(t.name, [embd, ff], t.type, padded);
    } else if (padColumns) {
      // [sourceFf, embd] -> [ff, embd]: each row gets zeros for the padded units' inputs.
      const rowFrom = tensorByteSize(t.type as GgmlType, sourceFf, sourceFf);
      const to = tensorByteSize(t.type as GgmlType, ff, ff);
      const padded = Buffer.alloc(to * embd);
      for (let r = 0; r < embd; r++) data.copy(padded, r * to, r * rowFrom, (r + 1) * rowFrom);
      w.addEncodedTensor(t.name, [ff, embd], t.type, padded);
    } else {
      w.addEncodedTensor(t.name, t.ne, t.type, data);
    }
  }
  const random = (name: string, ne: [number, number], sd = std) =>
    w.addTensor(name, ne, matrixType, () =>
      sd === 0 ? new Float32Array(ne[0] * ne[1]) : gaussianTensor(ne[0] * ne[1], sd, seed, name),
    );
  const ones = (name: string) =>
    w.addTensor(name, [embd], GgmlType.F32, () => new Float32Array(embd).fill(1));
  for (let i = sourceLayers; i < layers; i++) {
    const p = `blk.${i}.`;
    ones(`${p}attn_norm.weight`);
    random(`${p}attn_q.weight`, [embd, embd]);
    random(`${p}attn_k.weight`, [embd, headDim * kvHeads]);
    random(`${p}attn_v.weight`, [embd, headDim * kvHeads]);
    // The only way the extra blocks reach the residual stream: perturb 0 makes them exactly neutral.
    random(`${p}attn_output.weight`, [embd, embd], perturb);
    ones(`${p}ffn_norm.weight`);
    random(`${p}ffn_gate.weight`, [embd, ff]);
    random(`${p}ffn_up.weight`, [embd, ff]);
    random(`${p}ffn_down.weight`, [ff, embd], perturb);
  }
  mkdirSync(dirname(options.out), { recursive: true });
  const r = w.write(options.out);
  return {
    path: options.out,
    bytes: r.bytes,
    parameters: r.parameters,
    sourceLayers,
    layers,
    ff,
  };
}
