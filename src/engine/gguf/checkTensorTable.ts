import { type GgmlTypeLayout, ggmlType } from "./ggmlTypes.ts";
import { modelInvalid } from "./modelInvalid.ts";
import type { GgufHeader } from "./readGgufHeader.ts";

/** A tensor-table row whose shape, type and data range are known to be sound. */
export interface GgufTensor {
  name: string;
  /** Dimensions in GGUF order: ne[0] is the contiguous row length. */
  ne: readonly number[];
  type: GgmlTypeLayout;
  /** Where the data starts, from the start of the file. */
  fileOffset: number;
  byteSize: number;
}

const INT64_MAX = 2n ** 63n - 1n;
/** ggml's TENSOR_ALIGNMENT. */
const TENSOR_ALIGNMENT = 32n;

/**
 * Checks every tensor-table row against the file: each dimension at least 1, an element count llama.cpp can
 * represent, a known ggml type whose block size divides the row length, and data that starts where llama.cpp
 * expects it (rows are packed in table order, each aligned, and 32-byte aligned in the file) and ends inside the
 * file. Reads no tensor data.
 *
 * @throws SluiceError `model_invalid` naming the file, the tensor, the value and the fault.
 */
export function checkTensorTable(path: string, header: GgufHeader): GgufTensor[] {
  const alignment = BigInt(header.alignment);
  let expectedOffset = 0n;
  return header.tensors.map(({ name, ne, type: typeId, offset }) => {
    const shape = `[${ne.join(", ")}]`;
    ne.forEach((d, j) => {
      if (d < 1n || d > INT64_MAX) {
        throw modelInvalid(
          path,
          `tensor ${name} has shape ${shape}: dimension ${j} is ${d}; it must be 1 to ${INT64_MAX} (int64).`,
        );
      }
    });
    const elements = ne.reduce((a, b) => a * b, 1n);
    if (elements > INT64_MAX) {
      throw modelInvalid(path, `tensor ${name} has shape ${shape}: ${elements} elements overflow int64.`);
    }
    const type = ggmlType(typeId);
    if (type === undefined) throw modelInvalid(path, `tensor ${name} has unknown ggml type ${typeId}.`);
    if (ne[0]! % BigInt(type.blockSize) !== 0n) {
      throw modelInvalid(
        path,
        `tensor ${name} has rows of ${ne[0]} elements, not a multiple of ${type.name}'s block of ${type.blockSize}.`,
      );
    }
    const byteSize = (elements / BigInt(type.blockSize)) * BigInt(type.blockBytes);
    // llama.cpp (gguf.cpp) refuses any other layout, so a different offset is corruption, not a choice.
    if (offset !== expectedOffset) {
      throw modelInvalid(
        path,
        `tensor ${name} has data offset ${offset}, but the tensors before it end at ${expectedOffset}: ` +
          `GGUF tensor data is packed in table order, each tensor aligned to ${alignment} bytes.`,
      );
    }
    const fileOffset = BigInt(header.dataOffset) + offset;
    // llama.cpp maps tensor data in place and asserts (an abort) that it starts 32-byte aligned.
    if (fileOffset % TENSOR_ALIGNMENT !== 0n) {
      throw modelInvalid(
        path,
        `tensor ${name}'s data starts at byte ${fileOffset}, not a multiple of ${TENSOR_ALIGNMENT} ` +
          `(general.alignment is ${alignment}); llama.cpp needs tensor data ${TENSOR_ALIGNMENT}-byte aligned.`,
      );
    }
    const end = fileOffset + byteSize;
    if (end > BigInt(header.fileSize)) {
      throw modelInvalid(
        path,
        `tensor ${name} (${type.name} ${shape}, ${byteSize} bytes from byte ${fileOffset}) runs past the end ` +
          `of the file at byte ${header.fileSize}; the file is truncated or the tensor table is corrupt.`,
      );
    }
    expectedOffset += ((byteSize + alignment - 1n) / alignment) * alignment;
    return { name, ne: ne.map(Number), type, fileOffset: Number(fileOffset), byteSize: Number(byteSize) };
  });
}
