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
  /** The distinct first code units of the stops, and the stops that start with each. */
  readonly #firstUnits: readonly number[];
  readonly #byFirst: readonly (readonly string[])[];
  /**
   * 256-bit filter of the stops' first code units (by their low byte): a token none of whose units hit it
   * can neither complete nor start a stop. False hits only cost the exact check.
   */
  readonly #firstFilter = new Uint32Array(8);
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
    const byFirst = new Map<number, string[]>();
    for (const stop of this.#stops) {
      const first = stop.charCodeAt(0);
      const group = byFirst.get(first);
      if (group === undefined) byFirst.set(first, [stop]);
      else group.push(stop);
      this.#firstFilter[(first & 0xff) >> 5]! |= 1 << (first & 31);
    }
    this.#firstUnits = [...byFirst.keys()];
    this.#byFirst = [...byFirst.values()];
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
    // Most tokens hold no unit a stop starts with: then nothing can match or be held.
    if (held.length === 0 && !this.#mayStartIn(text)) return text;
    const pending = held.length === 0 ? text : held + text;
    const length = pending.length;
    const filter = this.#firstFilter;
    let holdFrom = length;
    // One pass over candidate starts. The earliest complete stop wins (a match ends the text there); the
    // earliest start of an incomplete one gives the longest suffix to hold. The held text never held a
    // complete stop, so any match found here ends in the new text.
    for (let at = 0; at < length; at++) {
      const unit = pending.charCodeAt(at);
      const low = unit & 0xff;
      if ((filter[low >> 5]! & (1 << (low & 31))) === 0) continue;
      const group = this.#firstUnits.indexOf(unit);
      if (group < 0) continue;
      const tail = length - at;
      let match: string | undefined;
      for (const stop of this.#byFirst[group]!) {
        const compared = Math.min(stop.length, tail);
        let same = 1;
        while (same < compared && stop.charCodeAt(same) === pending.charCodeAt(at + same)) same++;
        if (same < compared) continue;
        if (stop.length <= tail) {
          if (match === undefined || stop.length > match.length) match = stop;
        } else if (holdFrom === length) {
          holdFrom = at;
        }
      }
      if (match !== undefined) {
        this.#match = match;
        this.#held = "";
        return pending.slice(0, at);
      }
    }
    if (holdFrom === length) {
      this.#held = "";
      return pending;
    }
    this.#held = pending.slice(holdFrom);
    return pending.slice(0, holdFrom);
  }

  /** Releases everything held (on any finish without a match). */
  flush(): string {
    const held = this.#held;
    this.#held = "";
    return held;
  }

  #mayStartIn(text: string): boolean {
    const filter = this.#firstFilter;
    for (let i = 0; i < text.length; i++) {
      const low = text.charCodeAt(i) & 0xff;
      if ((filter[low >> 5]! & (1 << (low & 31))) !== 0) return true;
    }
    return false;
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
