const REPLACEMENT = "\uFFFD";

/**
 * Streaming UTF-8 to string. For any way of splitting the input, the concatenated output plus `flush()`
 * equals `new TextDecoder("utf-8", { ignoreBOM: true }).decode(allBytes)`: the WHATWG decoder, where each
 * maximal invalid subpart becomes one U+FFFD. A leading U+FEFF is kept: generated text has no byte order
 * mark to strip, so a BOM the model emits is content. An incomplete trailing sequence is held back until it is completed or proven
 * invalid; an invalid byte becomes U+FFFD at once. The output is therefore always well-formed and never
 * cuts a character in two.
 *
 * Hand-written rather than wrapping `TextDecoder({stream: true})` because the detokenizer must know how
 * many bytes are pending (to take its one-append fast path) and must be able to seed a prompt's tail
 * (`prime`), and because a native call per token costs more than this loop on a token's few bytes.
 */
export class Utf8Decoder {
  /** Continuation bytes the current sequence still needs (0: between characters). */
  #needed = 0;
  /** Bytes of the current sequence seen so far, lead byte included. */
  #seen = 0;
  /** How many of the pending bytes came from `prime()`: those are never reported on their own. */
  #primed = 0;
  #codePoint = 0;
  /** Bounds of the next continuation byte; narrowed after E0, ED, F0, F4 to reject overlongs and surrogates. */
  #lower = 0x80;
  #upper = 0xbf;

  /** Bytes held back as the start of a character not yet complete. */
  get pendingBytes(): number {
    return this.#seen;
  }

  /** Decodes the next bytes of the stream; returns the text of every character they complete. */
  decode(bytes: Uint8Array): string {
    let out = "";
    let needed = this.#needed;
    let seen = this.#seen;
    let codePoint = this.#codePoint;
    let lower = this.#lower;
    let upper = this.#upper;
    const length = bytes.length;
    let i = 0;
    while (i < length) {
      const byte = bytes[i]!;
      if (needed === 0) {
        i++;
        if (byte < 0x80) {
          out += String.fromCharCode(byte);
        } else if (byte >= 0xc2 && byte <= 0xdf) {
          needed = 1;
          seen = 1;
          codePoint = byte & 0x1f;
        } else if (byte >= 0xe0 && byte <= 0xef) {
          if (byte === 0xe0) lower = 0xa0;
          else if (byte === 0xed) upper = 0x9f;
          needed = 2;
          seen = 1;
          codePoint = byte & 0x0f;
        } else if (byte >= 0xf0 && byte <= 0xf4) {
          if (byte === 0xf0) lower = 0x90;
          else if (byte === 0xf4) upper = 0x8f;
          needed = 3;
          seen = 1;
          codePoint = byte & 0x07;
        } else {
          out += REPLACEMENT;
        }
        continue;
      }
      if (byte < lower || byte > upper) {
        // The maximal subpart ends before this byte, which is then read again as the start of a new one.
        if (seen > this.#primed) out += REPLACEMENT;
        this.#primed = 0;
        needed = 0;
        seen = 0;
        lower = 0x80;
        upper = 0xbf;
        continue;
      }
      i++;
      lower = 0x80;
      upper = 0xbf;
      codePoint = (codePoint << 6) | (byte & 0x3f);
      if (--needed === 0) {
        out += codePoint < 0x10000 ? String.fromCharCode(codePoint) : String.fromCodePoint(codePoint);
        seen = 0;
        this.#primed = 0;
      } else {
        seen++;
      }
    }
    this.#needed = needed;
    this.#seen = seen;
    this.#codePoint = codePoint;
    this.#lower = lower;
    this.#upper = upper;
    return out;
  }

  /**
   * Ends the stream: pending bytes become one U+FFFD ("" if none, or if they all came from `prime`).
   * The decoder is then reset and can start a new stream.
   */
  flush(): string {
    const out = this.#seen > this.#primed ? REPLACEMENT : "";
    this.#reset();
    return out;
  }

  /**
   * Seeds the decoder with bytes that precede the first decoded byte (e.g. a prompt ending mid-character),
   * resetting any earlier state. Only a trailing incomplete sequence of `prefix` is kept, as pending bytes
   * that are never emitted on their own: if the next bytes complete the character, the whole character is
   * emitted; if they prove it invalid, the primed bytes are dropped silently (bytes decoded after priming
   * that belong to the same invalid subpart still yield their U+FFFD).
   */
  prime(prefix: Uint8Array): void {
    this.#reset();
    this.decode(prefix);
    this.#primed = this.#seen;
  }

  #reset(): void {
    this.#needed = 0;
    this.#seen = 0;
    this.#primed = 0;
    this.#codePoint = 0;
    this.#lower = 0x80;
    this.#upper = 0xbf;
  }
}
