import { closeSync, openSync, readSync, writeSync } from "node:fs";

/** GGUF v3 metadata value type ids (gguf.h `gguf_type`). */
const VALUE_TYPE_ID = {
  uint8: 0,
  int8: 1,
  uint16: 2,
  int16: 3,
  uint32: 4,
  int32: 5,
  float32: 6,
  bool: 7,
  string: 8,
  array: 9,
  uint64: 10,
  int64: 11,
  float64: 12,
} as const;

export type GgufNumberType =
  | "uint8"
  | "int8"
  | "uint16"
  | "int16"
  | "uint32"
  | "int32"
  | "float32"
  | "float64";
export type GgufBigIntType = "uint64" | "int64";
export type GgufItemType = GgufNumberType | GgufBigIntType | "bool" | "string";

export type GgufValue =
  | { type: GgufNumberType; value: number }
  | { type: GgufBigIntType; value: bigint }
  | { type: "bool"; value: boolean }
  | { type: "string"; value: string }
  | { type: "array"; itemType: GgufItemType; value: readonly (number | bigint | boolean | string)[] };

/** Tensor element types this writer can encode (ggml `ggml_type` ids). */
export const GgmlType = { F32: 0, F16: 1, Q8_0: 8 } as const;
export type GgmlType = (typeof GgmlType)[keyof typeof GgmlType];

const GGUF_MAGIC = 0x46554747; // "GGUF" read as a little-endian uint32
const GGUF_VERSION = 3;
const DEFAULT_ALIGNMENT = 32;
const Q8_0_BLOCK = 32;
const Q8_0_BLOCK_BYTES = 2 + Q8_0_BLOCK;

export function tensorByteSize(type: GgmlType, elements: number, rowLength: number): number {
  switch (type) {
    case GgmlType.F32:
      return elements * 4;
    case GgmlType.F16:
      return elements * 2;
    case GgmlType.Q8_0:
      if (rowLength % Q8_0_BLOCK !== 0) {
        throw new Error(
          `Q8_0 needs a row length (ne0) that is a multiple of ${Q8_0_BLOCK}, got ${rowLength}`,
        );
      }
      return (elements / Q8_0_BLOCK) * Q8_0_BLOCK_BYTES;
  }
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** IEEE 754 binary16 bits of `x`, rounded to nearest-even like ggml's F16C path (Node 20 has no Float16Array). */
export function float32ToFloat16Bits(x: number): number {
  f32Scratch[0] = x;
  const bits = u32Scratch[0]!;
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  let mant = bits & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let h = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (h & 1) !== 0)) h++;
    return sign | h;
  }
  // A rounding carry out of the mantissa correctly bumps the exponent (up to infinity).
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1) !== 0)) h++;
  return sign | h;
}

function encodeTensor(type: GgmlType, data: Float32Array): Buffer {
  switch (type) {
    case GgmlType.F32:
      return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    case GgmlType.F16: {
      const out = new Uint16Array(data.length);
      for (let i = 0; i < data.length; i++) out[i] = float32ToFloat16Bits(data[i]!);
      return Buffer.from(out.buffer);
    }
    case GgmlType.Q8_0: {
      const blocks = data.length / Q8_0_BLOCK;
      const out = Buffer.alloc(blocks * Q8_0_BLOCK_BYTES);
      for (let b = 0; b < blocks; b++) {
        const base = b * Q8_0_BLOCK;
        let amax = 0;
        for (let j = 0; j < Q8_0_BLOCK; j++) amax = Math.max(amax, Math.abs(data[base + j]!));
        // Same as ggml's quantize_row_q8_0_ref: scale from the block max, round half away from zero.
        const d = amax / 127;
        const id = d !== 0 ? 1 / d : 0;
        const o = b * Q8_0_BLOCK_BYTES;
        out.writeUInt16LE(float32ToFloat16Bits(d), o);
        for (let j = 0; j < Q8_0_BLOCK; j++) {
          const v = data[base + j]! * id;
          out.writeInt8(Math.sign(v) * Math.round(Math.abs(v)), o + 2 + j);
        }
      }
      return out;
    }
  }
}

/** Growable little-endian byte buffer for the header, KV and tensor-info sections. */
class ByteSink {
  #buf = Buffer.alloc(1 << 16);
  #len = 0;

  get length(): number {
    return this.#len;
  }

  // Callers must take the offset before touching #buf: growing replaces the buffer.
  #reserve(n: number): number {
    if (this.#len + n > this.#buf.length) {
      const next = Buffer.alloc(Math.max(this.#buf.length * 2, this.#len + n));
      this.#buf.copy(next, 0, 0, this.#len);
      this.#buf = next;
    }
    const at = this.#len;
    this.#len += n;
    return at;
  }

  u8(v: number): void {
    const at = this.#reserve(1);
    this.#buf.writeUInt8(v, at);
  }
  i8(v: number): void {
    const at = this.#reserve(1);
    this.#buf.writeInt8(v, at);
  }
  u16(v: number): void {
    const at = this.#reserve(2);
    this.#buf.writeUInt16LE(v, at);
  }
  i16(v: number): void {
    const at = this.#reserve(2);
    this.#buf.writeInt16LE(v, at);
  }
  u32(v: number): void {
    const at = this.#reserve(4);
    this.#buf.writeUInt32LE(v, at);
  }
  i32(v: number): void {
    const at = this.#reserve(4);
    this.#buf.writeInt32LE(v, at);
  }
  f32(v: number): void {
    const at = this.#reserve(4);
    this.#buf.writeFloatLE(v, at);
  }
  f64(v: number): void {
    const at = this.#reserve(8);
    this.#buf.writeDoubleLE(v, at);
  }
  u64(v: number | bigint): void {
    const at = this.#reserve(8);
    this.#buf.writeBigUInt64LE(BigInt(v), at);
  }
  i64(v: bigint): void {
    const at = this.#reserve(8);
    this.#buf.writeBigInt64LE(v, at);
  }
  string(s: string): void {
    const bytes = Buffer.from(s, "utf8");
    this.u64(bytes.length);
    const at = this.#reserve(bytes.length);
    bytes.copy(this.#buf, at);
  }
  padTo(alignment: number): void {
    const pad = (alignment - (this.#len % alignment)) % alignment;
    this.#reserve(pad); // Buffer.alloc zero-fills, and the sink never reuses bytes
  }
  bytes(): Buffer {
    return this.#buf.subarray(0, this.#len);
  }
}

function writeItem(
  sink: ByteSink,
  type: GgufItemType,
  value: number | bigint | boolean | string,
  key: string,
) {
  const expect = (kind: string) => {
    if (typeof value !== kind)
      throw new TypeError(`GGUF key ${key}: expected ${kind} for ${type}, got ${typeof value}`);
  };
  switch (type) {
    case "uint8":
      expect("number");
      return sink.u8(value as number);
    case "int8":
      expect("number");
      return sink.i8(value as number);
    case "uint16":
      expect("number");
      return sink.u16(value as number);
    case "int16":
      expect("number");
      return sink.i16(value as number);
    case "uint32":
      expect("number");
      return sink.u32(value as number);
    case "int32":
      expect("number");
      return sink.i32(value as number);
    case "float32":
      expect("number");
      return sink.f32(value as number);
    case "float64":
      expect("number");
      return sink.f64(value as number);
    case "uint64":
      expect("bigint");
      return sink.u64(value as bigint);
    case "int64":
      expect("bigint");
      return sink.i64(value as bigint);
    case "bool":
      expect("boolean");
      return sink.u8(value ? 1 : 0);
    case "string":
      expect("string");
      return sink.string(value as string);
  }
}

interface TensorEntry {
  name: string;
  ne: readonly number[];
  /** A ggml_type id: one of GgmlType when `fill` encodes the data, any id for `encoded` bytes. */
  type: number;
  elements: number;
  byteSize: number;
  data: { fill: () => Float32Array } | { encoded: Uint8Array };
}

/**
 * Where each field of the header landed in the written file (byte offsets from its start), so that a test can
 * patch one field of an otherwise valid file.
 */
export interface GgufLayout {
  /** The u64 tensor count and metadata entry count. */
  tensorCountAt: 8;
  kvCountAt: 16;
  /** Per key: the entry's start (its key length), its u32 value type, its value (for an array, the item type). */
  kv: ReadonlyMap<string, { at: number; typeAt: number; valueAt: number }>;
  /** Per tensor: the row's start (its name length), its u32 n_dims, u32 ggml type and u64 data offset. */
  tensors: ReadonlyMap<string, { at: number; nDimsAt: number; typeAt: number; offsetAt: number }>;
  /** Start of the tensor data section. */
  dataAt: number;
}

export interface GgufWriteResult {
  bytes: number;
  tensorCount: number;
  /** Sum of tensor elements. */
  parameters: number;
  layout: GgufLayout;
}

/**
 * Minimal GGUF v3 writer. Tensor data is produced lazily, one tensor at a time, so files far larger than the
 * heap budget can be written.
 */
export class GgufWriter {
  readonly #kv = new Map<string, GgufValue>();
  readonly #tensors: TensorEntry[] = [];
  readonly #alignment: number;

  constructor(options: { alignment?: number } = {}) {
    this.#alignment = options.alignment ?? DEFAULT_ALIGNMENT;
    // llama.cpp assumes 32 unless the file says otherwise.
    if (this.#alignment !== DEFAULT_ALIGNMENT)
      this.set("general.alignment", { type: "uint32", value: this.#alignment });
  }

  set(key: string, value: GgufValue): this {
    this.#kv.set(key, value);
    return this;
  }
  setString(key: string, value: string): this {
    return this.set(key, { type: "string", value });
  }
  setUint32(key: string, value: number): this {
    return this.set(key, { type: "uint32", value });
  }
  setInt32(key: string, value: number): this {
    return this.set(key, { type: "int32", value });
  }
  setFloat32(key: string, value: number): this {
    return this.set(key, { type: "float32", value });
  }
  setBool(key: string, value: boolean): this {
    return this.set(key, { type: "bool", value });
  }
  setStringArray(key: string, value: readonly string[]): this {
    return this.set(key, { type: "array", itemType: "string", value });
  }
  setInt32Array(key: string, value: readonly number[]): this {
    return this.set(key, { type: "array", itemType: "int32", value });
  }

  /**
   * @param ne dimensions in GGUF order (ne[0] is the contiguous row length), i.e. numpy shape reversed.
   * @param fill called once, while writing, and must return exactly prod(ne) values in row-major order.
   */
  addTensor(name: string, ne: readonly number[], type: GgmlType, fill: () => Float32Array): this {
    const elements = this.#checkTensor(name, ne);
    const byteSize = tensorByteSize(type, elements, ne[0]!);
    this.#tensors.push({ name, ne: [...ne], type, elements, byteSize, data: { fill } });
    return this;
  }

  /**
   * Adds a tensor whose data is already encoded, in any ggml type (e.g. copied from another GGUF). The bytes are
   * written as given: their length is the tensor's size, unchecked against `ne` and `type`.
   */
  addEncodedTensor(name: string, ne: readonly number[], type: number, encoded: Uint8Array): this {
    const elements = this.#checkTensor(name, ne);
    this.#tensors.push({ name, ne: [...ne], type, elements, byteSize: encoded.length, data: { encoded } });
    return this;
  }

  #checkTensor(name: string, ne: readonly number[]): number {
    if (this.#tensors.some((t) => t.name === name)) throw new Error(`duplicate tensor ${name}`);
    if (ne.length === 0 || ne.length > 4 || ne.some((d) => !Number.isSafeInteger(d) || d < 1)) {
      throw new Error(`tensor ${name}: bad dimensions [${ne.join(", ")}]`);
    }
    return ne.reduce((a, b) => a * b, 1);
  }

  write(path: string): GgufWriteResult {
    const align = (n: number) => Math.ceil(n / this.#alignment) * this.#alignment;
    const head = new ByteSink();
    head.u32(GGUF_MAGIC);
    head.u32(GGUF_VERSION);
    head.u64(this.#tensors.length);
    head.u64(this.#kv.size);
    const kvLayout = new Map<string, { at: number; typeAt: number; valueAt: number }>();
    for (const [key, v] of this.#kv) {
      const at = head.length;
      head.string(key);
      const typeAt = head.length;
      head.u32(VALUE_TYPE_ID[v.type]);
      kvLayout.set(key, { at, typeAt, valueAt: head.length });
      if (v.type === "array") {
        head.u32(VALUE_TYPE_ID[v.itemType]);
        head.u64(v.value.length);
        for (const item of v.value) writeItem(head, v.itemType, item, key);
      } else {
        writeItem(head, v.type, v.value, key);
      }
    }
    let offset = 0;
    const tensorLayout = new Map<string, { at: number; nDimsAt: number; typeAt: number; offsetAt: number }>();
    for (const t of this.#tensors) {
      const at = head.length;
      head.string(t.name);
      const nDimsAt = head.length;
      head.u32(t.ne.length);
      for (const d of t.ne) head.u64(d);
      const typeAt = head.length;
      head.u32(t.type);
      tensorLayout.set(t.name, { at, nDimsAt, typeAt, offsetAt: head.length });
      head.u64(offset);
      offset = align(offset + t.byteSize);
    }
    head.padTo(this.#alignment);
    const layout: GgufLayout = {
      tensorCountAt: 8,
      kvCountAt: 16,
      kv: kvLayout,
      tensors: tensorLayout,
      dataAt: head.length,
    };

    const fd = openSync(path, "w");
    try {
      let written = writeAll(fd, head.bytes());
      const zeros = Buffer.alloc(this.#alignment);
      for (const t of this.#tensors) {
        if ("encoded" in t.data) {
          written += writeAll(fd, t.data.encoded);
        } else {
          const data = t.data.fill();
          if (data.length !== t.elements) {
            throw new Error(
              `tensor ${t.name}: fill() returned ${data.length} values, expected ${t.elements}`,
            );
          }
          written += writeAll(fd, encodeTensor(t.type as GgmlType, data));
        }
        const pad = align(t.byteSize) - t.byteSize;
        if (pad > 0) written += writeAll(fd, zeros.subarray(0, pad));
      }
      return {
        bytes: written,
        tensorCount: this.#tensors.length,
        parameters: this.#tensors.reduce((a, t) => a + t.elements, 0),
        layout,
      };
    } finally {
      closeSync(fd);
    }
  }
}

function writeAll(fd: number, buf: Uint8Array): number {
  let done = 0;
  while (done < buf.length) done += writeSync(fd, buf, done, buf.length - done);
  return buf.length;
}

/** Thrown internally when the window read so far ends before the metadata does. */
class NeedMoreBytes extends Error {}

class ByteSource {
  #pos = 0;
  constructor(readonly buf: Buffer) {}

  get position(): number {
    return this.#pos;
  }

  #take(n: number): number {
    if (this.#pos + n > this.buf.length) throw new NeedMoreBytes();
    const at = this.#pos;
    this.#pos += n;
    return at;
  }
  u32(): number {
    return this.buf.readUInt32LE(this.#take(4));
  }
  u64(): bigint {
    return this.buf.readBigUInt64LE(this.#take(8));
  }
  len(): number {
    const n = this.u64();
    if (n > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error("GGUF length out of range");
    return Number(n);
  }
  string(): string {
    const n = this.len();
    const at = this.#take(n);
    return this.buf.toString("utf8", at, at + n);
  }
  item(type: GgufItemType): number | bigint | boolean | string {
    switch (type) {
      case "uint8":
        return this.buf.readUInt8(this.#take(1));
      case "int8":
        return this.buf.readInt8(this.#take(1));
      case "uint16":
        return this.buf.readUInt16LE(this.#take(2));
      case "int16":
        return this.buf.readInt16LE(this.#take(2));
      case "uint32":
        return this.buf.readUInt32LE(this.#take(4));
      case "int32":
        return this.buf.readInt32LE(this.#take(4));
      case "float32":
        return this.buf.readFloatLE(this.#take(4));
      case "float64":
        return this.buf.readDoubleLE(this.#take(8));
      case "uint64":
        return this.buf.readBigUInt64LE(this.#take(8));
      case "int64":
        return this.buf.readBigInt64LE(this.#take(8));
      case "bool":
        return this.buf.readUInt8(this.#take(1)) !== 0;
      case "string":
        return this.string();
    }
  }
}

const TYPE_BY_ID = new Map<number, GgufItemType | "array">(
  Object.entries(VALUE_TYPE_ID).map(([name, id]) => [id, name as GgufItemType | "array"]),
);

function parseMetadata(src: ByteSource): { metadata: Map<string, GgufValue>; tensorCount: number } {
  if (src.u32() !== GGUF_MAGIC) throw new Error("not a GGUF file");
  const version = src.u32();
  if (version !== 2 && version !== 3) throw new Error(`unsupported GGUF version ${version}`);
  const tensorCount = src.len();
  const kvCount = src.len();
  const out = new Map<string, GgufValue>();
  const typeOf = (id: number) => {
    const t = TYPE_BY_ID.get(id);
    if (t === undefined) throw new Error(`unknown GGUF value type ${id}`);
    return t;
  };
  for (let i = 0; i < kvCount; i++) {
    const key = src.string();
    const type = typeOf(src.u32());
    if (type === "array") {
      const itemType = typeOf(src.u32());
      if (itemType === "array") throw new Error(`GGUF key ${key}: nested arrays are not supported`);
      const n = src.len();
      const value: (number | bigint | boolean | string)[] = new Array(n);
      for (let j = 0; j < n; j++) value[j] = src.item(itemType);
      out.set(key, { type: "array", itemType, value });
    } else {
      out.set(key, { type, value: src.item(type) } as GgufValue);
    }
  }
  return { metadata: out, tensorCount };
}

/** One row of a GGUF file's tensor table. */
export interface GgufTensorInfo {
  name: string;
  /** Dimensions in GGUF order (ne[0] is the contiguous row length). */
  ne: number[];
  /** ggml_type id. */
  type: number;
  /** Byte offset of the data from the start of the file (the table's offset plus the data section's start). */
  at: number;
}

export interface GgufHeader {
  metadata: Map<string, GgufValue>;
  tensors: GgufTensorInfo[];
}

function parseHeader(buf: Buffer): GgufHeader {
  const src = new ByteSource(buf);
  const { metadata, tensorCount } = parseMetadata(src);
  const rows: { name: string; ne: number[]; type: number; offset: number }[] = [];
  for (let i = 0; i < tensorCount; i++) {
    const name = src.string();
    const nDims = src.u32();
    const ne: number[] = [];
    for (let d = 0; d < nDims; d++) ne.push(src.len());
    const type = src.u32();
    rows.push({ name, ne, type, offset: src.len() });
  }
  const alignment = metadata.get("general.alignment");
  const align = alignment?.type === "uint32" ? alignment.value : DEFAULT_ALIGNMENT;
  // Offsets in the table are relative to the data section, which starts at the next aligned byte.
  const dataAt = Math.ceil(src.position / align) * align;
  return { metadata, tensors: rows.map(({ offset, ...row }) => ({ ...row, at: dataAt + offset })) };
}

/** Reads a bounded prefix of the file, doubling it until `parse` no longer runs out of bytes. */
function readPrefix<T>(path: string, parse: (buf: Buffer) => T): T {
  const fd = openSync(path, "r");
  try {
    for (let size = 1 << 20; ; size *= 2) {
      const buf = Buffer.alloc(size);
      const n = readSync(fd, buf, 0, size, 0);
      try {
        return parse(buf.subarray(0, n));
      } catch (err) {
        if (!(err instanceof NeedMoreBytes) || n < size) {
          throw err instanceof NeedMoreBytes ? new Error(`${path}: truncated GGUF header`) : err;
        }
      }
    }
  } finally {
    closeSync(fd);
  }
}

/**
 * Reads a GGUF file's metadata and tensor table (not the tensor data), e.g. to copy some of its tensors into
 * another file with `readGgufTensorData`.
 */
export function readGgufHeader(path: string): GgufHeader {
  return readPrefix(path, parseHeader);
}

/** The encoded bytes of one tensor, for the types whose size this module knows (F32, F16, Q8_0). */
export function readGgufTensorData(path: string, tensor: GgufTensorInfo): Buffer {
  if (!Object.values(GgmlType).includes(tensor.type as GgmlType)) {
    throw new Error(`tensor ${tensor.name}: ggml type ${tensor.type} is not supported (F32, F16, Q8_0 are)`);
  }
  const elements = tensor.ne.reduce((a, b) => a * b, 1);
  const size = tensorByteSize(tensor.type as GgmlType, elements, tensor.ne[0]!);
  const buf = Buffer.alloc(size);
  const fd = openSync(path, "r");
  try {
    let done = 0;
    while (done < size) {
      const n = readSync(fd, buf, done, size - done, tensor.at + done);
      if (n === 0) throw new Error(`${path}: tensor ${tensor.name} ends past the end of the file`);
      done += n;
    }
    return buf;
  } finally {
    closeSync(fd);
  }
}

/**
 * Reads the metadata KV section of a GGUF file with each value's exact on-disk type, so keys can be copied into
 * another file unchanged. Reads only as much of the file as the metadata needs.
 */
export function readGgufMetadata(path: string): Map<string, GgufValue> {
  return readPrefix(path, (buf) => parseMetadata(new ByteSource(buf)).metadata);
}
