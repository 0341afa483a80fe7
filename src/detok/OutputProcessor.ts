import { StopMatcher } from "./StopMatcher.ts";
import { Utf8Decoder } from "./Utf8Decoder.ts";
import type { Vocabulary } from "./Vocabulary.ts";

export interface OutputProcessorOptions {
  /** Control tokens add no text (their ids still go to `tokenIds`). Defaults to true. */
  skipSpecialTokens?: boolean;
  /**
   * Stop strings: the text ends before the first one to complete, which is never emitted. Each must be a
   * non-empty, well-formed string; the constructor throws `invalid_request` otherwise.
   */
  stop?: readonly string[];
  /** Stop token ids: the generation stops on them; their text is not emitted. */
  stopTokenIds?: readonly number[];
  /**
   * Emit every N tokens. Defaults to 1; clamped to >= 1. Gates emission only: detokenization and stop
   * matching happen on every token.
   */
  streamInterval?: number;
  /** Trailing bytes of the prompt's last incomplete UTF-8 character, if any (see `Utf8Decoder.prime`). */
  promptTail?: Uint8Array;
  /**
   * The first `minTokens` tokens cannot stop the output: stop token ids among them are plain tokens and stop
   * strings are looked for only in the text of later tokens (vLLM's `min_tokens`). Defaults to 0.
   */
  minTokens?: number;
}

export interface StopHit {
  stop: string | number;
}

export interface OutputDelta {
  tokenIds: number[];
  text: string;
}

/** Ordered one-way states: running → stopped (string or token) → done. */
const RUNNING = 0;
const STOPPED_BY_STRING = 1;
const STOPPED_BY_TOKEN = 2;
const DONE = 3;
type State = typeof RUNNING | typeof STOPPED_BY_STRING | typeof STOPPED_BY_TOKEN | typeof DONE;

/**
 * The per-request path from generated token ids to stream deltas: vocabulary → bytes → streaming UTF-8 →
 * special-token filter → stop strings → emission interval. The runtime calls `push` once per generated
 * token and `take` when it may emit.
 *
 * Each token costs O(its own bytes + the stop strings' length), never a re-decode of the history. When no
 * bytes are pending and a token's bytes are complete UTF-8 on their own, the token costs one lookup and one
 * string append; without stop strings the matcher is bypassed.
 *
 * Text after the final `take` is exactly the decode of the unfiltered tokens' bytes, cut at the start of the
 * stop string when one matched. The last incomplete character is flushed (as U+FFFD) only at the final
 * take; that replacement character takes part in no stop match, because the finish it belongs to was
 * decided before it existed. A kept control token's text always lands in one chunk, whatever the interval
 * and whatever the stop strings hold back.
 */
export class OutputProcessor {
  readonly #vocabulary: Vocabulary;
  readonly #skipSpecial: boolean;
  readonly #interval: number;
  readonly #minTokens: number;
  readonly #stopIds: ReadonlySet<number> | undefined;
  readonly #matcher: StopMatcher | undefined;
  readonly #decoder = new Utf8Decoder();
  #state: State = RUNNING;
  /** Ids and text not yet taken. */
  #ids: number[] = [];
  #text = "";
  #sinceTake = 0;
  #tokenCount = 0;
  /** Characters fed to the stop matcher so far. */
  #fed = 0;
  /** [start, end) of kept control tokens not yet fully released by the matcher, flattened. */
  readonly #specials: number[] = [];
  /** Text the matcher released that waits for the rest of a control token (see `#keepSpecialsWhole`). */
  #unsent = "";

  constructor(vocabulary: Vocabulary, options: OutputProcessorOptions = {}) {
    this.#vocabulary = vocabulary;
    this.#skipSpecial = options.skipSpecialTokens ?? true;
    const interval = Math.floor(options.streamInterval ?? 1);
    this.#interval = Number.isNaN(interval) ? 1 : Math.max(1, interval);
    this.#minTokens = Math.max(0, Math.floor(options.minTokens ?? 0) || 0);
    this.#stopIds = options.stopTokenIds?.length ? new Set(options.stopTokenIds) : undefined;
    this.#matcher = options.stop?.length ? new StopMatcher(options.stop) : undefined;
    if (options.promptTail !== undefined && options.promptTail.length > 0) {
      this.#decoder.prime(options.promptTail);
    }
  }

  /** Ids recorded so far (every pushed id up to and including a stop). */
  get tokenCount(): number {
    return this.#tokenCount;
  }

  /**
   * Feeds one generated token. Detokenization and stop matching happen now, whatever the interval.
   * Returns a `StopHit` when this token completes a stop string or is a stop token id; after a hit,
   * further pushes are ignored (return undefined).
   */
  push(tokenId: number): StopHit | undefined {
    if (this.#state !== RUNNING) return undefined;
    this.#ids.push(tokenId);
    this.#sinceTake++;
    this.#tokenCount++;
    const canStop = this.#tokenCount > this.#minTokens;
    if (canStop && this.#stopIds?.has(tokenId)) {
      this.#state = STOPPED_BY_TOKEN;
      return { stop: tokenId };
    }
    const vocabulary = this.#vocabulary;
    // A filtered control token never reaches the decoder, so it cannot split or complete a character.
    if (this.#skipSpecial && vocabulary.isSpecial(tokenId)) return undefined;
    const decoder = this.#decoder;
    let piece = decoder.pendingBytes === 0 ? vocabulary.textOf(tokenId) : undefined;
    if (piece === undefined) piece = decoder.decode(vocabulary.bytesOf(tokenId));
    if (piece.length === 0) return undefined;
    const matcher = this.#matcher;
    if (matcher === undefined || (!canStop && this.#fed === 0)) {
      this.#text += piece;
      return undefined;
    }
    this.#fed += piece.length;
    const emit = matcher.feed(piece);
    if (!this.#skipSpecial && vocabulary.isSpecial(tokenId)) {
      // The control token's text is the end of the piece (after any U+FFFD of bytes it cut short).
      this.#specials.push(this.#fed - (vocabulary.textOf(tokenId)?.length ?? piece.length), this.#fed);
    }
    if (this.#specials.length === 0 && this.#unsent === "") this.#text += emit;
    else this.#keepSpecialsWhole(emit);
    const match = matcher.match;
    if (match === undefined) return undefined;
    this.#state = STOPPED_BY_STRING;
    return { stop: match };
  }

  /**
   * A stop string may start inside a kept control token's text (`</think>` and a stop "k>\n"): the matcher
   * then releases the token's head and holds its tail. The head waits in `#unsent` until the tail is
   * released too, so the token never straddles two chunks. Positions count characters fed to the matcher.
   */
  #keepSpecialsWhole(emit: string): void {
    const matcher = this.#matcher!;
    this.#unsent += emit;
    const specials = this.#specials;
    if (matcher.match !== undefined) {
      // Text stops at the match start, even inside a control token: that is where the stop string is.
      this.#text += this.#unsent;
      this.#unsent = "";
      specials.length = 0;
      return;
    }
    const released = this.#fed - matcher.held.length;
    // Bounded by the held text, so this list holds a few spans at most.
    while (specials.length > 0 && specials[1]! <= released) specials.splice(0, 2);
    const cut = specials.length > 0 && specials[0]! < released ? specials[0]! : released;
    const keep = released - cut;
    const unsent = this.#unsent;
    this.#text += unsent.slice(0, unsent.length - keep);
    this.#unsent = unsent.slice(unsent.length - keep);
  }

  /**
   * The delta to emit now, or undefined when there is nothing to emit or the interval is not reached
   * (non-final). `final`: everything left (tokens and text), flushing held stop-prefix text and pending
   * bytes (as U+FFFD), except after a stop-string match, where text from the match start on is dropped.
   * Always returns an object when final; the processor is then done and later takes return empty deltas.
   */
  take(final: boolean): OutputDelta | undefined {
    if (!final) {
      if (this.#sinceTake < this.#interval || this.#state === DONE) return undefined;
      return this.#drain();
    }
    if (this.#state === RUNNING || this.#state === STOPPED_BY_TOKEN) {
      if (this.#matcher !== undefined) this.#text += this.#unsent + this.#matcher.flush();
      this.#text += this.#decoder.flush();
    }
    this.#state = DONE;
    return this.#drain();
  }

  #drain(): OutputDelta {
    const delta = { tokenIds: this.#ids, text: this.#text };
    this.#ids = [];
    this.#text = "";
    this.#sinceTake = 0;
    return delta;
  }
}
