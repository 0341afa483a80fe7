import { readSync } from "node:fs";
import { modelInvalid } from "./modelInvalid.ts";

/** The type of a GGUF metadata value, or of an array's items. */
export type GgufValueType =
  | "uint8"
  | "int8"
  | "uint16"
  | "int16"
  | "uint32"
  | "int32"
  | "float32"
  | "bool"
  | "string"
  | "uint64"
  | "int64"
  | "float64";

export type GgufScalar = number | bigint | boolean | string;

/** The GGUF type id of an array; its item type follows it. */
export const ARRAY_TYPE_ID = 9;
/** By GGUF type id; `bytes` is the encoded size (for strings, the size of the length in front). */
export const VALUE_TYPES: readonly ({ name: GgufValueType; bytes: number } | undefined)[] = [
  { name: "uint8", bytes: 1 },
  { name: "int8", bytes: 1 },
  { name: "uint16", bytes: 2 },
  { name: "int16", bytes: 2 },
  { name: "uint32", bytes: 4 },
  { name: "int32", bytes: 4 },
  { name: "float32", bytes: 4 },
  { name: "bool", bytes: 1 },
  { name: "string", bytes: 8 },
  undefined, // array
  { name: "uint64", bytes: 8 },
  { name: "int64", bytes: 8 },
  { name: "float64", bytes: 8 },
];

const VALUE_BYTES = Object.fromEntries(
  VALUE_TYPES.flatMap((t) => (t === undefined ? [] : [[t.name, t.bytes]])),
) as Record<GgufValueType, number>;

/** llama.cpp's limit on one string (gguf.cpp): a longer one is refused there too. */
export const MAX_STRING_BYTES = 2 ** 30;
/** Longer string values are skipped, not decoded: no check needs them. */
const MAX_KEPT_STRING_BYTES = 1 << 20;
const WINDOW_BYTES = 256 << 10;

/**
 * Reads GGUF's little-endian values from a file through a window, so that skipped values (a vocabulary's
 * strings) cost no reads, and refuses to move past the end of the file: every length is compared with the bytes
 * that remain before anything is allocated from it, so a corrupt count ends the read at once instead of growing
 * memory.
 */
export class GgufCursor {
  /** What is being read, for the message when the file ends early. */
  context = "the GGUF header";
  #pos = 0;
  #window = Buffer.alloc(0);
  #windowStart = 0;

  constructor(
    readonly fd: number,
    readonly size: number,
    readonly path: string,
  ) {}

  get pos(): number {
    return this.#pos;
  }

  get remaining(): number {
    return this.size - this.#pos;
  }

  truncated(): Error {
    return modelInvalid(
      this.path,
      `the file ends inside ${this.context} (${this.size} bytes in all); it is truncated or its header is corrupt.`,
    );
  }

  /** Moves past `n` bytes and returns where they start in the window, reading them in first if needed. */
  #take(n: number): number {
    if (n > this.remaining) throw this.truncated();
    let at = this.#pos - this.#windowStart;
    if (at < 0 || at + n > this.#window.length) {
      const length = Math.min(Math.max(n, WINDOW_BYTES), this.remaining);
      this.#window = Buffer.allocUnsafe(length);
      let filled = 0;
      while (filled < length) {
        const read = readSync(this.fd, this.#window, filled, length - filled, this.#pos + filled);
        if (read === 0) throw this.truncated(); // the file shrank under us
        filled += read;
      }
      this.#windowStart = this.#pos;
      at = 0;
    }
    this.#pos += n;
    return at;
  }

  skip(n: number): void {
    if (n > this.remaining) throw this.truncated();
    this.#pos += n;
  }

  // Each read takes its bytes before touching #window: taking them may replace it.
  u32(): number {
    const at = this.#take(4);
    return this.#window.readUInt32LE(at);
  }

  u64(): bigint {
    const at = this.#take(8);
    return this.#window.readBigUInt64LE(at);
  }

  text(n: number, encoding: "utf8" | "latin1" = "utf8"): string {
    const at = this.#take(n);
    return this.#window.toString(encoding, at, at + n);
  }

  /**
   * A length-prefixed string; undefined (skipped unread) when longer than `keep` bytes. `latin1` keeps one char
   * per byte, so that comparing two strings compares their bytes (as llama.cpp does).
   */
  string(keep: number, encoding: "utf8" | "latin1" = "utf8"): string | undefined {
    const n = this.u64();
    if (n > BigInt(this.remaining)) {
      throw modelInvalid(
        this.path,
        `${this.context} has a string of ${n} bytes, but only ${this.remaining} bytes of the file follow.`,
      );
    }
    if (n > MAX_STRING_BYTES) {
      throw modelInvalid(
        this.path,
        `${this.context} has a string of ${n} bytes; llama.cpp accepts at most ${MAX_STRING_BYTES}.`,
      );
    }
    if (n > BigInt(keep)) {
      this.skip(Number(n));
      return undefined;
    }
    return this.text(Number(n), encoding);
  }

  value(type: GgufValueType): GgufScalar | undefined {
    if (type === "string") return this.string(MAX_KEPT_STRING_BYTES);
    const at = this.#take(VALUE_BYTES[type]);
    const w = this.#window;
    switch (type) {
      case "uint8":
        return w.readUInt8(at);
      case "int8":
        return w.readInt8(at);
      case "uint16":
        return w.readUInt16LE(at);
      case "int16":
        return w.readInt16LE(at);
      case "uint32":
        return w.readUInt32LE(at);
      case "int32":
        return w.readInt32LE(at);
      case "float32":
        return w.readFloatLE(at);
      case "bool":
        return w.readUInt8(at) !== 0;
      case "uint64":
        return w.readBigUInt64LE(at);
      case "int64":
        return w.readBigInt64LE(at);
      case "float64":
        return w.readDoubleLE(at);
    }
  }
}
