import { closeSync, fstatSync, openSync } from "node:fs";
import { SluiceError } from "../../errors.ts";
import {
  ARRAY_TYPE_ID,
  GgufCursor,
  type GgufScalar,
  type GgufValueType,
  MAX_STRING_BYTES,
  VALUE_TYPES,
} from "./GgufCursor.ts";
import { modelInvalid } from "./modelInvalid.ts";

/**
 * One metadata value with its on-disk type. Only what a check can need is kept: strings over 1 MiB and the
 * items of string arrays (but the vocabulary's, kept as latin1) or of numeric arrays over 4096 items are
 * skipped (undefined), never decoded.
 */
export type GgufEntry =
  | { kind: "scalar"; type: GgufValueType; value: GgufScalar | undefined }
  | { kind: "array"; type: GgufValueType; length: number; items: readonly GgufScalar[] | undefined };

/** A tensor-table row as stored; its shape and type are checked by `checkTensorTable`. */
export interface GgufTensorEntry {
  name: string;
  /** Dimensions in GGUF order: ne[0] is the contiguous row length. */
  ne: readonly bigint[];
  /** The `ggml_type` id. */
  type: number;
  /** Where the data starts, from the start of the data section. */
  offset: bigint;
}

export interface GgufHeader {
  version: number;
  /** `general.alignment`, or GGUF's default of 32. */
  alignment: number;
  metadata: ReadonlyMap<string, GgufEntry>;
  tensors: readonly GgufTensorEntry[];
  /** Where the tensor data section starts: the end of the tensor table, aligned. */
  dataOffset: number;
  fileSize: number;
}

const GGUF_MAGIC = 0x46554747; // "GGUF" read as a little-endian uint32
// llama.cpp's own limits (gguf.cpp, ggml.h): longer arrays, longer tensor names or more dimensions are refused
// there too.
const MAX_ARRAY_ITEMS = 2n ** 30n;
const MAX_TENSOR_NAME_BYTES = 63;
const MAX_DIMS = 4;
/** Keys are dotted names: a key this long is a corrupt length, and decoding it would cost the whole file. */
const MAX_KEY_BYTES = 65_535;
/** String arrays whose items are kept, as latin1 (one char per byte): the vocabulary, checked for duplicates. */
const BYTE_STRING_ARRAYS = new Set(["tokenizer.ggml.tokens"]);
/** Numeric arrays kept whatever their length (up to the vocabulary's bound): one item per token. */
const KEPT_NUMERIC_ARRAYS = new Set(["tokenizer.ggml.token_type"]);
/** Enough for any per-layer array (llama.cpp allows at most 512 layers). */
const MAX_KEPT_ITEMS = 4096;
/**
 * Far above any real model (tens of metadata entries, a few thousand tensors, vocabularies of a few hundred
 * thousand tokens): more is a corrupt count, and keeping that many would cost memory out of all proportion.
 */
const MAX_ENTRIES = 1 << 20;
const MAX_VOCABULARY = 1 << 24;
/** The least bytes one metadata entry (a 1-byte key, its type, a 1-byte value) or tensor row can take. */
const MIN_ENTRY_BYTES = 8n + 1n + 4n + 1n;
const MIN_TENSOR_ROW_BYTES = 8n + 1n + 4n + 8n + 4n + 8n;

/**
 * Reads a GGUF file's header, metadata and tensor table (never its tensor data) with every count and length
 * bounded by the file's size, and refuses what llama.cpp's own reader (gguf.cpp) refuses: a bad magic or
 * version, empty or duplicate keys, unknown value types, nested arrays, over-long strings, arrays or tensor
 * names, duplicate tensor names, more than 4 dimensions, a bad `general.alignment`.
 *
 * @throws SluiceError `model_invalid` naming the file, the field, its value and the fault; or that the file
 *   could not be read.
 */
export function readGgufHeader(path: string): GgufHeader {
  let fd: number | undefined;
  try {
    fd = openSync(path, "r");
    return parse(new GgufCursor(fd, fstatSync(fd).size, path));
  } catch (cause) {
    if (cause instanceof SluiceError) throw cause;
    throw new SluiceError("model_invalid", `${path} could not be read: ${(cause as Error).message}`, {
      cause,
    });
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

function parse(c: GgufCursor): GgufHeader {
  if (c.remaining < 4 || c.u32() !== GGUF_MAGIC) {
    throw modelInvalid(c.path, `is not a GGUF file: it does not start with "GGUF".`);
  }
  const version = c.u32();
  if (version === 1) throw modelInvalid(c.path, "is GGUF version 1, which llama.cpp no longer reads.");
  if (version !== 2 && version !== 3) {
    const hint = version > 0xffff ? " (a big-endian file?)" : "";
    throw modelInvalid(c.path, `has GGUF version ${version}${hint}; llama.cpp reads versions 2 and 3.`);
  }
  const tensorCount = c.u64();
  const kvCount = c.u64();
  if (kvCount > MAX_ENTRIES || tensorCount > MAX_ENTRIES) {
    throw modelInvalid(
      c.path,
      `the header declares ${kvCount} metadata entries and ${tensorCount} tensors; more than ${MAX_ENTRIES} ` +
        "of either is a corrupt count.",
    );
  }
  const least = kvCount * MIN_ENTRY_BYTES + tensorCount * MIN_TENSOR_ROW_BYTES;
  if (least > BigInt(c.remaining)) {
    throw modelInvalid(
      c.path,
      `the header declares ${kvCount} metadata entries and ${tensorCount} tensors, which take at least ` +
        `${least} bytes, but only ${c.remaining} bytes follow; the counts are corrupt or the file is truncated.`,
    );
  }
  const metadata = readMetadata(c, Number(kvCount));
  const alignment = readAlignment(c.path, metadata);
  const tensors = readTensorTable(c, Number(tensorCount));
  const dataOffset = Math.ceil(c.pos / alignment) * alignment;
  if (tensors.length > 0 && dataOffset > c.size) {
    throw modelInvalid(
      c.path,
      `the tensor table ends at byte ${c.pos}, so the tensor data would start at byte ${dataOffset}, ` +
        `past the end of the file (${c.size} bytes); it is truncated.`,
    );
  }
  return { version, alignment, metadata, tensors, dataOffset, fileSize: c.size };
}

function readMetadata(c: GgufCursor, count: number): Map<string, GgufEntry> {
  const metadata = new Map<string, GgufEntry>();
  for (let i = 0; i < count; i++) {
    c.context = `metadata entry #${i}`;
    const keyBytes = c.u64();
    if (keyBytes === 0n || keyBytes > MAX_KEY_BYTES) {
      throw modelInvalid(
        c.path,
        `metadata entry #${i} has a key of ${keyBytes} bytes; a key is a dotted name of 1 to ${MAX_KEY_BYTES} bytes.`,
      );
    }
    const key = c.text(Number(keyBytes));
    if (metadata.has(key)) throw modelInvalid(c.path, `metadata key "${key}" appears twice.`);
    c.context = `metadata key "${key}"`;
    const typeId = c.u32();
    if (typeId === ARRAY_TYPE_ID) {
      metadata.set(key, readArray(c, key));
      continue;
    }
    const type = VALUE_TYPES[typeId];
    if (type === undefined)
      throw modelInvalid(c.path, `metadata key "${key}" has unknown value type ${typeId}.`);
    metadata.set(key, { kind: "scalar", type: type.name, value: c.value(type.name) });
  }
  return metadata;
}

function readArray(c: GgufCursor, key: string): GgufEntry {
  const itemTypeId = c.u32();
  const itemType = VALUE_TYPES[itemTypeId];
  if (itemType === undefined) {
    const what =
      itemTypeId === ARRAY_TYPE_ID ? "arrays (nested arrays are not GGUF)" : `unknown type ${itemTypeId}`;
    throw modelInvalid(c.path, `metadata key "${key}" is an array of ${what}.`);
  }
  const length = c.u64();
  if (length > MAX_ARRAY_ITEMS) {
    throw modelInvalid(
      c.path,
      `metadata key "${key}" declares ${length} items; llama.cpp accepts at most ${MAX_ARRAY_ITEMS}.`,
    );
  }
  if (length * BigInt(itemType.bytes) > BigInt(c.remaining)) {
    throw modelInvalid(
      c.path,
      `metadata key "${key}" declares ${length} ${itemType.name} items, which take at least ` +
        `${length * BigInt(itemType.bytes)} bytes, but only ${c.remaining} bytes of the file follow.`,
    );
  }
  const n = Number(length);
  if (itemType.name === "string") {
    if (!BYTE_STRING_ARRAYS.has(key)) {
      for (let j = 0; j < n; j++) c.string(0);
      return { kind: "array", type: "string", length: n, items: undefined };
    }
    if (n > MAX_VOCABULARY) {
      throw modelInvalid(
        c.path,
        `metadata key "${key}" has ${n} tokens; more than ${MAX_VOCABULARY} is a corrupt count.`,
      );
    }
    const items: string[] = new Array(n);
    for (let j = 0; j < n; j++) items[j] = c.string(MAX_STRING_BYTES, "latin1")!;
    return { kind: "array", type: "string", length: n, items };
  }
  if (n > (KEPT_NUMERIC_ARRAYS.has(key) ? MAX_VOCABULARY : MAX_KEPT_ITEMS)) {
    c.skip(n * itemType.bytes);
    return { kind: "array", type: itemType.name, length: n, items: undefined };
  }
  const items: GgufScalar[] = new Array(n);
  for (let j = 0; j < n; j++) items[j] = c.value(itemType.name)!;
  return { kind: "array", type: itemType.name, length: n, items };
}

function readAlignment(path: string, metadata: ReadonlyMap<string, GgufEntry>): number {
  const entry = metadata.get("general.alignment");
  if (entry === undefined) return 32;
  if (entry.kind !== "scalar" || entry.type !== "uint32") {
    throw modelInvalid(path, `general.alignment is ${describeType(entry)}; llama.cpp requires a uint32.`);
  }
  const alignment = entry.value as number;
  if (alignment === 0 || (alignment & (alignment - 1)) !== 0) {
    throw modelInvalid(path, `general.alignment is ${alignment}; it must be a power of two.`);
  }
  return alignment;
}

function readTensorTable(c: GgufCursor, count: number): GgufTensorEntry[] {
  const tensors: GgufTensorEntry[] = [];
  const names = new Set<string>();
  for (let i = 0; i < count; i++) {
    c.context = `the name of tensor #${i}`;
    const nameBytes = c.u64();
    if (nameBytes === 0n || nameBytes > MAX_TENSOR_NAME_BYTES) {
      throw modelInvalid(
        c.path,
        `tensor #${i} has a name of ${nameBytes} bytes; llama.cpp requires 1 to ${MAX_TENSOR_NAME_BYTES}.`,
      );
    }
    const name = c.text(Number(nameBytes));
    if (names.has(name)) throw modelInvalid(c.path, `tensor ${name} appears twice in the tensor table.`);
    names.add(name);
    c.context = `the tensor table row of ${name}`;
    const nDims = c.u32();
    // Checked before the dimensions are read: an absurd count would otherwise read on into the data.
    if (nDims < 1 || nDims > MAX_DIMS) {
      throw modelInvalid(c.path, `tensor ${name} has n_dims ${nDims}; a GGUF tensor has 1 to ${MAX_DIMS}.`);
    }
    const ne: bigint[] = [];
    for (let d = 0; d < nDims; d++) ne.push(c.u64());
    const type = c.u32();
    const offset = c.u64();
    tensors.push({ name, ne, type, offset });
  }
  return tensors;
}

/** "a uint32", "an array of 5 int32" — for messages. */
export function describeType(entry: GgufEntry): string {
  if (entry.kind === "array") return `an array of ${entry.length} ${entry.type}`;
  return `${entry.type.startsWith("i") ? "an" : "a"} ${entry.type}`;
}
