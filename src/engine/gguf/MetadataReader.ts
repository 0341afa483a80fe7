import { modelInvalid } from "./modelInvalid.ts";
import { describeType, type GgufEntry } from "./readGgufHeader.ts";

/** Typed access to metadata, each fault reported with the file, key and value. */
export class MetadataReader {
  constructor(
    readonly path: string,
    readonly metadata: ReadonlyMap<string, GgufEntry>,
  ) {}

  invalid(problem: string): Error {
    return modelInvalid(this.path, problem);
  }

  /** A uint32 scalar, as llama.cpp's get_key<uint32_t> wants it; `fallback` when absent, else required. */
  uint32(key: string, fallback?: number): number {
    const entry = this.metadata.get(key);
    if (entry === undefined) {
      if (fallback !== undefined) return fallback;
      throw this.invalid(`lacks required metadata ${key}; llama.cpp cannot load it.`);
    }
    if (entry.kind !== "scalar" || entry.type !== "uint32") {
      throw this.invalid(`${key} is ${this.show(entry)}; llama.cpp reads it as a uint32.`);
    }
    return entry.value as number;
  }

  /** A uint32 scalar, or undefined when absent. */
  optionalUint32(key: string): number | undefined {
    return this.metadata.has(key) ? this.uint32(key) : undefined;
  }

  /** A float32 scalar, as llama.cpp's get_key<float> wants it, or undefined when absent. */
  optionalFloat32(key: string): number | undefined {
    const entry = this.metadata.get(key);
    if (entry === undefined) return undefined;
    if (entry.kind !== "scalar" || entry.type !== "float32") {
      throw this.invalid(`${key} is ${this.show(entry)}; llama.cpp reads it as a float32.`);
    }
    return entry.value as number;
  }

  /** Any numeric scalar as a number, for keys read loosely; undefined when absent or not a number. */
  optionalNumber(key: string): number | undefined {
    const entry = this.metadata.get(key);
    if (entry?.kind !== "scalar" || (typeof entry.value !== "number" && typeof entry.value !== "bigint")) {
      return undefined;
    }
    return Number(entry.value);
  }

  /**
   * One value per block: a uint32 scalar (the same for every block) or an array of exactly `blocks` uint32 or
   * int32 items, as llama.cpp's get_key_or_arr reads it. Undefined when absent and not `required`.
   */
  perLayer(key: string, blocks: number, required = false): number[] | undefined {
    const entry = this.metadata.get(key);
    if (entry === undefined) {
      if (required) throw this.invalid(`lacks required metadata ${key}; llama.cpp cannot load it.`);
      return undefined;
    }
    if (entry.kind === "scalar") return new Array<number>(blocks).fill(this.uint32(key));
    if (entry.type !== "uint32" && entry.type !== "int32") {
      throw this.invalid(`${key} is ${describeType(entry)}; per-block values are uint32 or int32.`);
    }
    if (entry.length !== blocks || entry.items === undefined) {
      throw this.invalid(`${key} has ${entry.length} items; it needs one per block (block_count ${blocks}).`);
    }
    return entry.items.map((v, il) => {
      if ((v as number) < 0) throw this.invalid(`${key}[${il}] is ${v}; it cannot be negative.`);
      return v as number;
    });
  }

  /** Checks every block's value; the message names the block only when the blocks differ. */
  eachAtLeast(key: string, values: readonly number[], least: number, why: string): void {
    const il = values.findIndex((v) => v < least);
    if (il >= 0) this.atLeast(this.layerKey(key, values, il), values[il]!, least, why);
  }

  /** `key[il]` when the blocks' values differ, else `key`. */
  layerKey(key: string, values: readonly number[], il: number): string {
    return values.some((v) => v !== values[0]) ? `${key}[${il}]` : key;
  }

  atLeast(key: string, value: number, least: number, why: string): void {
    if (value < least) throw this.invalid(`${key} is ${value}; it must be at least ${least} (${why}).`);
  }

  /** `8 (an int32)`, `"bogus" (a string)`, `an array of 4 uint32`: a value with its on-disk type. */
  show(entry: GgufEntry): string {
    if (entry.kind === "array" || entry.value === undefined) return describeType(entry);
    const value = typeof entry.value === "string" ? JSON.stringify(entry.value) : String(entry.value);
    return `${value} (${describeType(entry)})`;
  }
}
