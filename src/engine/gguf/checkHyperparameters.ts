import { MetadataReader } from "./MetadataReader.ts";
import { describeType, type GgufEntry } from "./readGgufHeader.ts";

/** The hyperparameters llama.cpp reads for every architecture, checked; per-layer values are expanded. */
export interface Hyperparameters {
  architecture: string;
  contextLength: number;
  embeddingLength: number;
  blockCount: number;
  /** Layers of the main pass: `block_count` less `nextn_predict_layers`. */
  layerCount: number;
  expertCount: number;
  /** One value per block; empty for an architecture outside `ATTENTION_ARCHITECTURES`. */
  feedForwardLength: readonly number[];
  headCount: readonly number[];
  headCountKv: readonly number[];
  /** Size of one attention head's key and value: `attention.key_length`, else embedding_length / head_count. */
  keyLength: number;
  valueLength: number;
  /** Whether the tensors are spread over several files (`split.count` > 1). */
  split: boolean;
}

type Metadata = ReadonlyMap<string, GgufEntry>;

/** llama.cpp's LLAMA_MAX_LAYERS and LLAMA_MAX_EXPERTS: more is a GGML_ASSERT, which aborts the process. */
const MAX_LAYERS = 512;
const MAX_EXPERTS = 1024;
const ROPE_SCALING_TYPES = new Set(["none", "linear", "yarn", "longrope"]);

/**
 * Pure transformers: every layer has attention, with `head_count` heads of which `head_count_kv` share keys.
 * (Hybrid and recurrent architectures legitimately have 0 heads on some layers, so they are not listed.)
 */
export const ATTENTION_ARCHITECTURES = new Set([
  "llama",
  "qwen2",
  "qwen3",
  "mistral",
  "gemma",
  "gemma2",
  "gemma3",
  "phi3",
  "granite",
]);

/**
 * Checks the hyperparameters that llama.cpp reads while loading, where a bad value is a GGML_ASSERT (the whole
 * process aborts) or an unbounded allocation rather than an error: presence and exact on-disk type (llama.cpp
 * wants uint32, per-layer arrays of uint32 or int32 with one item per block), `block_count` within 1..512 and
 * the tensors present, the expert counts' invariants, a known RoPE scaling type, and for attention
 * architectures head counts of at least 1 with `head_count_kv` dividing `head_count`, and a head size that
 * divides the embedding when the file gives none; normalisation epsilons finite and not negative.
 *
 * @throws SluiceError `model_invalid` naming the file, the key, the value and the fault.
 */
export function checkHyperparameters(path: string, metadata: Metadata, tensorCount: number): Hyperparameters {
  const read = new MetadataReader(path, metadata);
  const architecture = metadata.get("general.architecture");
  if (architecture?.kind !== "scalar" || typeof architecture.value !== "string") {
    throw read.invalid("has no general.architecture (a string); it is not a model GGUF.");
  }
  const arch = architecture.value;
  const split = (read.optionalNumber("split.count") ?? 1) > 1;

  const contextLength = read.uint32(`${arch}.context_length`);
  read.atLeast(
    `${arch}.context_length`,
    contextLength,
    1,
    "a model needs a training context of 1 token or more",
  );
  const embeddingLength = read.uint32(`${arch}.embedding_length`);
  read.atLeast(`${arch}.embedding_length`, embeddingLength, 1, "a token embedding has at least 1 value");
  const blockCount = read.uint32(`${arch}.block_count`);
  read.atLeast(`${arch}.block_count`, blockCount, 1, "a model has at least 1 block");
  if (blockCount > MAX_LAYERS) {
    throw read.invalid(`${arch}.block_count is ${blockCount}; llama.cpp allows at most ${MAX_LAYERS}.`);
  }
  // Each block has tensors of its own; a split file holds only some of them.
  if (!split && blockCount > tensorCount) {
    throw read.invalid(
      `${arch}.block_count is ${blockCount}, but the file has only ${tensorCount} tensors; every block needs its own.`,
    );
  }
  const nextn = read.uint32(`${arch}.nextn_predict_layers`, 0);
  if (nextn > blockCount) {
    throw read.invalid(
      `${arch}.nextn_predict_layers is ${nextn}, more than ${arch}.block_count (${blockCount}).`,
    );
  }
  const expertCount = checkExperts(read, arch, blockCount);

  const scaling = metadata.get(`${arch}.rope.scaling.type`);
  if (
    scaling !== undefined &&
    (scaling.kind !== "scalar" || !ROPE_SCALING_TYPES.has(String(scaling.value)))
  ) {
    const value = scaling.kind === "scalar" ? JSON.stringify(scaling.value) : describeType(scaling);
    throw read.invalid(
      `${arch}.rope.scaling.type is ${value}; llama.cpp knows ${[...ROPE_SCALING_TYPES].join(", ")}.`,
    );
  }

  // A normalisation with a negative (or NaN) epsilon is a GGML_ASSERT on the first decode.
  for (const key of [`${arch}.attention.layer_norm_epsilon`, `${arch}.attention.layer_norm_rms_epsilon`]) {
    const eps = read.optionalFloat32(key);
    if (eps !== undefined && !(eps >= 0 && Number.isFinite(eps))) {
      throw read.invalid(`${key} is ${eps}; a normalisation epsilon is a finite number of 0 or more.`);
    }
  }

  const hparams: Hyperparameters = {
    architecture: arch,
    contextLength,
    embeddingLength,
    blockCount,
    layerCount: blockCount - nextn,
    expertCount,
    feedForwardLength: [],
    headCount: [],
    headCountKv: [],
    keyLength: 0,
    valueLength: 0,
    split,
  };
  return ATTENTION_ARCHITECTURES.has(arch) ? checkAttention(read, hparams) : hparams;
}

function checkExperts(read: MetadataReader, arch: string, blockCount: number): number {
  const experts = read.uint32(`${arch}.expert_count`, 0);
  const used = Math.max(0, ...(read.perLayer(`${arch}.expert_used_count`, blockCount) ?? []));
  const groups = read.uint32(`${arch}.expert_group_count`, 0);
  const groupsUsed = read.uint32(`${arch}.expert_group_used_count`, 0);
  if (experts > MAX_EXPERTS) {
    throw read.invalid(`${arch}.expert_count is ${experts}; llama.cpp allows at most ${MAX_EXPERTS}.`);
  }
  if (used > experts) {
    throw read.invalid(`${arch}.expert_used_count is ${used}, more than ${arch}.expert_count (${experts}).`);
  }
  if (experts === 0) {
    if (groups !== 0)
      throw read.invalid(`${arch}.expert_group_count is ${groups} in a model without experts.`);
    return 0;
  }
  if (used === 0)
    throw read.invalid(`${arch}.expert_used_count is 0 with ${experts} experts: none would run.`);
  if (groups >= experts) {
    throw read.invalid(
      `${arch}.expert_group_count is ${groups}; it must be less than the ${experts} experts.`,
    );
  }
  if (groups > 1 && (experts % groups !== 0 || groupsUsed === 0 || groupsUsed >= groups)) {
    throw read.invalid(
      `${arch}.expert_group_count ${groups} and expert_group_used_count ${groupsUsed} do not fit ${experts} ` +
        `experts: the groups must divide them, and 1 to ${groups - 1} groups be used.`,
    );
  }
  return experts;
}

function checkAttention(read: MetadataReader, hparams: Hyperparameters): Hyperparameters {
  const arch = hparams.architecture;
  const layers = hparams.blockCount;
  const ff = read.perLayer(`${arch}.feed_forward_length`, layers, true)!;
  read.eachAtLeast(`${arch}.feed_forward_length`, ff, 1, "every block has a feed-forward network");
  const heads = read.perLayer(`${arch}.attention.head_count`, layers, true)!;
  read.eachAtLeast(`${arch}.attention.head_count`, heads, 1, "every block has attention heads");
  // Absent means one key-value head per head (no grouping), as in llama.cpp.
  const kvHeads = read.perLayer(`${arch}.attention.head_count_kv`, layers) ?? heads;
  read.eachAtLeast(`${arch}.attention.head_count_kv`, kvHeads, 1, "every block has key-value heads");
  const il = kvHeads.findIndex((n, il) => heads[il]! % n !== 0);
  if (il >= 0) {
    throw read.invalid(
      `${read.layerKey(`${arch}.attention.head_count_kv`, kvHeads, il)} is ${kvHeads[il]}, which does not ` +
        `divide the ${heads[il]} attention heads (${arch}.attention.head_count) of block ${il}.`,
    );
  }
  // llama.cpp sizes every head from block 0's head count unless the file gives the size.
  const keyLength = read.optionalUint32(`${arch}.attention.key_length`);
  if (keyLength === undefined && hparams.embeddingLength % heads[0]! !== 0) {
    throw read.invalid(
      `${arch}.embedding_length ${hparams.embeddingLength} is not divisible by ${arch}.attention.head_count ` +
        `${heads[0]}, and no ${arch}.attention.key_length gives the head size.`,
    );
  }
  const valueLength = read.optionalUint32(`${arch}.attention.value_length`);
  for (const [key, value] of [
    ["key_length", keyLength],
    ["value_length", valueLength],
  ] as const) {
    if (value !== undefined)
      read.atLeast(`${arch}.attention.${key}`, value, 1, "a head has at least 1 value");
  }
  const derived = Math.floor(hparams.embeddingLength / heads[0]!);
  return {
    ...hparams,
    feedForwardLength: ff,
    headCount: heads,
    headCountKv: kvHeads,
    keyLength: keyLength ?? derived,
    valueLength: valueLength ?? derived,
  };
}
