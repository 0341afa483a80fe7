/** How one ggml tensor type lays out its elements: `blockSize` elements are stored in `blockBytes` bytes. */
export interface GgmlTypeLayout {
  name: string;
  blockSize: number;
  blockBytes: number;
  /**
   * Whether llama.cpp's CPU backend can multiply a matrix of this type (it has a dot product for it): a weight
   * of another type passes its checks and then dereferences a null function on the first decode.
   */
  matmul: boolean;
}

const QK_K = 256;

/**
 * The tensor types llama.cpp (the version node-llama-cpp bundles) accepts in a GGUF, by `ggml_type` id, as in
 * gguf-py's GGML_QUANT_SIZES. Ids missing here (4, 5, 31-33, 36-38) were removed from the format: llama.cpp
 * refuses them, and so do we.
 */
const GGML_TYPES: ReadonlyMap<number, GgmlTypeLayout> = new Map(
  (
    [
      [0, "f32", 1, 4, true],
      [1, "f16", 1, 2, true],
      [2, "q4_0", 32, 2 + 16, true],
      [3, "q4_1", 32, 2 + 2 + 16, true],
      [6, "q5_0", 32, 2 + 4 + 16, true],
      [7, "q5_1", 32, 2 + 2 + 4 + 16, true],
      [8, "q8_0", 32, 2 + 32, true],
      [9, "q8_1", 32, 2 + 2 + 32, false],
      [10, "q2_K", QK_K, 2 + 2 + QK_K / 16 + QK_K / 4, true],
      [11, "q3_K", QK_K, 2 + QK_K / 4 + QK_K / 8 + 12, true],
      [12, "q4_K", QK_K, 2 + 2 + QK_K / 2 + 12, true],
      [13, "q5_K", QK_K, 2 + 2 + QK_K / 2 + QK_K / 8 + 12, true],
      [14, "q6_K", QK_K, 2 + QK_K / 2 + QK_K / 4 + QK_K / 16, true],
      [15, "q8_K", QK_K, 4 + QK_K + QK_K / 8, false],
      [16, "iq2_xxs", QK_K, 2 + QK_K / 4, true],
      [17, "iq2_xs", QK_K, 2 + QK_K / 4 + QK_K / 32, true],
      [18, "iq3_xxs", QK_K, 2 + QK_K / 4 + QK_K / 8, true],
      [19, "iq1_s", QK_K, 2 + QK_K / 8 + QK_K / 16, true],
      [20, "iq4_nl", 32, 2 + 16, true],
      [21, "iq3_s", QK_K, 2 + QK_K / 4 + QK_K / 8 + QK_K / 32 + 4, true],
      [22, "iq2_s", QK_K, 2 + QK_K / 4 + QK_K / 16, true],
      [23, "iq4_xs", QK_K, 2 + 2 + QK_K / 2 + QK_K / 64, true],
      [24, "i8", 1, 1, false],
      [25, "i16", 1, 2, false],
      [26, "i32", 1, 4, false],
      [27, "i64", 1, 8, false],
      [28, "f64", 1, 8, false],
      [29, "iq1_m", QK_K, QK_K / 8 + QK_K / 16 + QK_K / 32, true],
      [30, "bf16", 1, 2, true],
      [34, "tq1_0", QK_K, 2 + 4 * 13, true],
      [35, "tq2_0", QK_K, 2 + 64, true],
      [39, "mxfp4", 32, 1 + 16, true],
      [40, "nvfp4", 64, 4 + 32, true],
      [41, "q1_0", 128, 2 + 16, true],
      [42, "q2_0", 64, 2 + 16, true],
    ] as const
  ).map(([id, name, blockSize, blockBytes, matmul]) => [id, { name, blockSize, blockBytes, matmul }]),
);

/** The layout of ggml type `id`, or undefined when llama.cpp does not know (or no longer accepts) it. */
export function ggmlType(id: number): GgmlTypeLayout | undefined {
  return GGML_TYPES.get(id);
}
