import type { Vocabulary } from "../detok/Vocabulary.ts";
import type { TokenLogprob } from "../types.ts";

/** One token in chat's `logprobs.content` (OpenAI's `ChatCompletionTokenLogprob`). */
export interface ChatTokenLogprob {
  /** The token's text (its bytes as UTF-8; a token that is part of a character shows U+FFFD). */
  token: string;
  /** Natural log of its probability (<= 0). */
  logprob: number;
  /** The token's exact bytes from the vocabulary: concatenated over the tokens, they are the text. */
  bytes: number[];
  /** The most likely tokens at that position, most likely first (`top_logprobs` of them). */
  top_logprobs: { token: string; logprob: number; bytes: number[] }[];
}

/** The legacy completions `logprobs` object: parallel arrays, one entry per token. */
export interface LegacyLogprobs {
  tokens: string[];
  token_logprobs: number[];
  /** Per token, the alternatives as `{ text: logprob }` (tokens of the same text collapse into one key). */
  top_logprobs: Record<string, number>[];
  /** Per token, where its text starts in the choice's text (UTF-16 code units, as JavaScript counts). */
  text_offset: number[];
}

/**
 * Renders the runtime's per-token log-probabilities (`TokenLogprob`, token ids) in OpenAI's two shapes, with
 * each token's text and exact bytes from the vocabulary. Made per request, and only when log-probabilities
 * are asked for: the plain text path never meets it. Control tokens are left out when the request skips
 * them in its text (the default), so the tokens listed are the tokens of the text.
 */
export class LogprobRenderer {
  readonly #vocabulary: Vocabulary;
  readonly #skipSpecial: boolean;
  readonly #decoder = new TextDecoder();
  /** A token's text and bytes, computed once per request. */
  readonly #pieces = new Map<number, { text: string; bytes: number[] }>();

  constructor(vocabulary: Vocabulary, skipSpecialTokens: boolean) {
    this.#vocabulary = vocabulary;
    this.#skipSpecial = skipSpecialTokens;
  }

  /** The entries of the tokens that belong in the text (see the class comment). */
  listed(logprobs: readonly TokenLogprob[] | undefined): readonly TokenLogprob[] {
    if (logprobs === undefined) return [];
    if (!this.#skipSpecial) return logprobs;
    return logprobs.filter((entry) => !this.#vocabulary.isSpecial(entry.token));
  }

  /** Chat's `logprobs.content` for these tokens. */
  chat(logprobs: readonly TokenLogprob[]): ChatTokenLogprob[] {
    return this.listed(logprobs).map((entry) => {
      const piece = this.#piece(entry.token);
      return {
        token: piece.text,
        logprob: entry.logprob,
        bytes: piece.bytes,
        top_logprobs: entry.top.map((alt) => {
          const other = this.#piece(alt.token);
          return { token: other.text, logprob: alt.logprob, bytes: other.bytes };
        }),
      };
    });
  }

  /**
   * The legacy shape for these tokens, the first starting at `offset` in the choice's text; `end` is where
   * the next token starts.
   */
  legacy(logprobs: readonly TokenLogprob[], offset: number): { logprobs: LegacyLogprobs; end: number } {
    const out: LegacyLogprobs = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] };
    let at = offset;
    for (const entry of this.listed(logprobs)) {
      const text = this.#piece(entry.token).text;
      out.tokens.push(text);
      out.token_logprobs.push(entry.logprob);
      // No prototype: a token's text may be "__proto__".
      const top: Record<string, number> = Object.create(null);
      for (const alt of entry.top) {
        const key = this.#piece(alt.token).text;
        // Two ids with the same text: the likelier one (listed first) keeps the key.
        if (!(key in top)) top[key] = alt.logprob;
      }
      out.top_logprobs.push(top);
      out.text_offset.push(at);
      at += text.length;
    }
    return { logprobs: out, end: at };
  }

  #piece(id: number): { text: string; bytes: number[] } {
    let piece = this.#pieces.get(id);
    if (piece === undefined) {
      const bytes = this.#vocabulary.bytesOf(id);
      piece = { text: this.#vocabulary.textOf(id) ?? this.#decoder.decode(bytes), bytes: Array.from(bytes) };
      this.#pieces.set(id, piece);
    }
    return piece;
  }
}
