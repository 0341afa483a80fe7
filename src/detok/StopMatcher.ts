import { SluiceError } from "../errors.ts";

/**
 * Finds stop strings in streamed text while holding back as little as possible: only the longest suffix of
 * the text seen so far that is a proper prefix of some stop string. Everything before it can never become
 * part of a match and is released at once.
 *
 * Stop strings must be non-empty and well-formed; since the streamed text is well-formed too, a match or a
 * held suffix always starts on a character boundary, so neither the released nor the held text ever cuts a
 * surrogate pair.
 */
export class StopMatcher {
  readonly #stops: readonly string[];
  /** The distinct first characters of the stops, and the stops that start with each. */
  readonly #firsts: readonly string[];
  readonly #byFirst: readonly (readonly string[])[];
  /** The longest text that can be held: a proper prefix of the longest stop. */
  readonly #maxHeld: number;
  #held = "";
  #match: string | undefined = undefined;

  constructor(stops: readonly string[]) {
    for (const stop of stops) {
      if (typeof stop !== "string" || stop.length === 0) {
        throw new SluiceError("invalid_request", "stop strings must be non-empty strings", { param: "stop" });
      }
      if (!isWellFormed(stop)) {
        throw new SluiceError("invalid_request", `stop string ${JSON.stringify(stop)} has a lone surrogate`, {
          param: "stop",
        });
      }
    }
    this.#stops = [...new Set(stops)];
    const byFirst = new Map<string, string[]>();
    for (const stop of this.#stops) {
      const group = byFirst.get(stop[0]!);
      if (group === undefined) byFirst.set(stop[0]!, [stop]);
      else group.push(stop);
    }
    this.#firsts = [...byFirst.keys()];
    this.#byFirst = [...byFirst.values()];
    this.#maxHeld = this.#stops.reduce((max, stop) => Math.max(max, stop.length - 1), 0);
  }

  /** The text held back because it may be the start of a stop string. */
  get held(): string {
    return this.#held;
  }

  /** The stop string that matched, once one has. */
  get match(): string | undefined {
    return this.#match;
  }

  /**
   * Feeds new text; returns the text that can be released now, and the match if a stop string is now
   * complete (earliest match start; on a tie the longest stop). After a match, `emit` is the text before
   * the match and later pushes return `{ emit: "" }`.
   */
  push(text: string): { emit: string; match?: string } {
    if (this.#match !== undefined) return { emit: "" };
    const emit = this.feed(text);
    return this.#match === undefined ? { emit } : { emit, match: this.#match };
  }

  /** `push` without the result object, for the per-token path: returns `emit`; check `match` after. */
  feed(text: string): string {
    if (this.#match !== undefined) return "";
    const held = this.#held;
    // Most tokens hold no character a stop starts with: then nothing can match or be held.
    if (held.length === 0 && !this.#mayStartIn(text)) return text;
    const pending = held.length === 0 ? text : held + text;
    const start = this.#findMatch(pending, held.length);
    if (start >= 0) {
      this.#held = "";
      return pending.slice(0, start);
    }
    const keep = this.#heldLength(pending);
    if (keep === 0) {
      this.#held = "";
      return pending;
    }
    const cut = pending.length - keep;
    this.#held = pending.slice(cut);
    return pending.slice(0, cut);
  }

  /** Releases everything held (on any finish without a match). */
  flush(): string {
    const held = this.#held;
    this.#held = "";
    return held;
  }

  /** Start of the earliest complete stop in `pending` (longest on a tie), or -1; sets `#match`. */
  #findMatch(pending: string, heldLength: number): number {
    let start = -1;
    for (const stop of this.#stops) {
      // The held text held no complete stop, so a new match must end past it.
      const at = pending.indexOf(stop, Math.max(0, heldLength - stop.length + 1));
      if (at < 0) continue;
      if (start < 0 || at < start || (at === start && stop.length > this.#match!.length)) {
        start = at;
        this.#match = stop;
      }
    }
    return start;
  }

  #mayStartIn(text: string): boolean {
    for (const first of this.#firsts) if (text.includes(first)) return true;
    return false;
  }

  /** Length of the longest suffix of `pending` that is a proper prefix of some stop string. */
  #heldLength(pending: string): number {
    const length = pending.length;
    const from = Math.max(0, length - this.#maxHeld);
    let longest = 0;
    const firsts = this.#firsts;
    for (let group = 0; group < firsts.length; group++) {
      const first = firsts[group]!;
      // Candidate starts are where some stop's first character occurs, earliest (longest suffix) first.
      candidates: for (let at = pending.indexOf(first, from); at >= 0; at = pending.indexOf(first, at + 1)) {
        const tail = length - at;
        if (tail <= longest) break;
        for (const stop of this.#byFirst[group]!) {
          if (stop.length <= tail) continue;
          let same = 1;
          while (same < tail && stop.charCodeAt(same) === pending.charCodeAt(at + same)) same++;
          if (same === tail) {
            longest = tail;
            break candidates;
          }
        }
      }
    }
    return longest;
  }
}

/** `String.prototype.isWellFormed`, which Node 20 has but the ES2023 lib does not declare. */
function isWellFormed(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    if (unit >= 0xdc00 && unit <= 0xdfff) return false;
    if (unit >= 0xd800 && unit <= 0xdbff) {
      const next = text.charCodeAt(i + 1);
      if (!(next >= 0xdc00 && next <= 0xdfff)) return false;
      i++;
    }
  }
  return true;
}
