import { type Drafter, NO_DRAFT, type RequestDrafter } from "./Drafter.ts";

export interface PromptLookupOptions {
  /** Longest n-gram matched, 1 to 16. Defaults to 3. */
  ngramMax?: number;
  /** Shortest n-gram matched, 1 to `ngramMax`. Defaults to 1. */
  ngramMin?: number;
}

/**
 * Prompt lookup decoding (llama.cpp's n-gram speculation, vLLM's `[ngram]`): the last n tokens of the request
 * (prompt and output so far) are looked up among their earlier occurrences, longest n first, and the tokens
 * that followed the most recent occurrence are the draft. No second model: it pays off on text that repeats
 * its prompt or itself (quoting, editing, code, a model stuck in a loop), and costs nothing when nothing
 * matches.
 */
export class PromptLookup implements Drafter {
  readonly name = "prompt-lookup";
  readonly ngramMax: number;
  readonly ngramMin: number;

  constructor(options: PromptLookupOptions = {}) {
    this.ngramMax = Math.max(1, Math.min(16, Math.floor(options.ngramMax ?? 3)));
    this.ngramMin = Math.max(1, Math.min(this.ngramMax, Math.floor(options.ngramMin ?? 1)));
  }

  start(prompt: readonly number[]): RequestDrafter {
    return new NgramIndex(prompt, this.ngramMin, this.ngramMax);
  }
}

/**
 * One request's tokens and, for each n, a hash map from an n-gram to where the tokens after its most recent
 * occurrence start. Indexing is lazy (at the next `draft`) and incremental: each token is indexed once, in
 * O(ngramMax); a lookup costs O(ngramMax + the draft). Hash collisions are checked against the tokens.
 */
class NgramIndex implements RequestDrafter {
  readonly #tokens: number[];
  readonly #min: number;
  readonly #max: number;
  /** `#maps[n - 1]`: hash of an n-gram → the position right after its latest indexed occurrence. */
  readonly #maps: Map<number, number>[];
  /** N-grams ending before this position are indexed (each needs the token after it to be known). */
  #indexed = 0;

  constructor(prompt: readonly number[], min: number, max: number) {
    this.#tokens = prompt.slice();
    this.#min = min;
    this.#max = max;
    this.#maps = Array.from({ length: max }, () => new Map<number, number>());
  }

  push(token: number): void {
    this.#tokens.push(token);
  }

  draft(max: number): readonly number[] {
    const tokens = this.#tokens;
    const last = tokens.length - 1;
    if (max < 1 || last < 1) return NO_DRAFT;
    this.#index(last);
    // The suffix's hashes for every n, longest tried first.
    let hash = 0;
    const hashes = new Array<number>(this.#max);
    for (let n = 1; n <= this.#max && n <= last + 1; n++) {
      hash = mix(hash, tokens[last - n + 1]!);
      hashes[n - 1] = hash;
    }
    for (let n = Math.min(this.#max, last); n >= this.#min; n--) {
      const after = this.#maps[n - 1]!.get(hashes[n - 1]!);
      if (after === undefined || !this.#same(after - n, last - n + 1, n)) continue;
      return this.#continuation(after, last, max);
    }
    return NO_DRAFT;
  }

  /**
   * The tokens from `from` on, as many as `max`. Past the end of what is known, the guess goes on with
   * itself: a match `d` tokens back predicts a period of `d` (a loop, a repeated line).
   */
  #continuation(from: number, last: number, max: number): number[] {
    const tokens = this.#tokens;
    const out: number[] = [];
    for (let i = 0; i < max; i++) {
      const at = from + i;
      out.push(at <= last ? tokens[at]! : out[at - last - 1]!);
    }
    return out;
  }

  /** Indexes every n-gram that ends before `last` (so the suffix never finds itself). */
  #index(last: number): void {
    const tokens = this.#tokens;
    const maps = this.#maps;
    for (let end = this.#indexed; end < last; end++) {
      let hash = 0;
      for (let n = 1; n <= this.#max && n <= end + 1; n++) {
        hash = mix(hash, tokens[end - n + 1]!);
        if (n >= this.#min) maps[n - 1]!.set(hash, end + 1);
      }
    }
    this.#indexed = Math.max(this.#indexed, last);
  }

  #same(a: number, b: number, n: number): boolean {
    const tokens = this.#tokens;
    for (let i = 0; i < n; i++) if (tokens[a + i] !== tokens[b + i]) return false;
    return true;
  }
}

/** One step of a 32-bit n-gram hash (order-sensitive; the n-gram is hashed from its last token back). */
function mix(hash: number, token: number): number {
  const h = Math.imul(hash ^ token, 0x9e3779b1) + 0x7f4a7c15;
  return (h ^ (h >>> 16)) | 0;
}
