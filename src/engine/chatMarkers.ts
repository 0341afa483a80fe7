import { randomBytes } from "node:crypto";

/** A stretch of a rendered chat: template markup, or message text (`literal`, never parsed into control tokens). */
export interface Piece {
  text: string;
  literal: boolean;
  /** For message text, the index of the marker it stood in for. */
  marker?: number;
}

/**
 * Stand-ins for message text while a chat template renders, so that the rendering tells the template's markup
 * apart from the text. A marker is letters and digits only (it passes `tojson`, `trim` and HTML escaping
 * unchanged) with a random nonce per rendering, so no text can spell one. Equal texts share a marker, so a
 * template comparing two texts still sees them equal; "" is not marked, so its truthiness stays.
 */
export class Markers {
  readonly #nonce = randomBytes(6).toString("hex");
  readonly #index = new Map<string, number>();
  readonly #texts: string[] = [];

  /** The marker standing for `text` ("" stays ""). */
  mark(text: string): string {
    if (text === "") return "";
    let index = this.#index.get(text);
    if (index === undefined) {
      index = this.#texts.length;
      this.#texts.push(text);
      this.#index.set(text, index);
    }
    return `SLUICE${this.#nonce}M${index}E`;
  }

  /** The index of the marker given to `text`, if any. */
  indexOf(text: string): number | undefined {
    return this.#index.get(text);
  }

  /**
   * Splits the marked rendering into markup and text, checking it against the rendering with the real text
   * (`real`): between markers the two must be equal, and each marker must have become its text as it is,
   * trimmed, or JSON-quoted (inside a `tojson` string). Undefined when they disagree: the template did
   * something else with the text (or branched on it), and the markup cannot be told apart from it.
   */
  align(marked: string, real: string): Piece[] | undefined {
    // split() with a capturing group interleaves the markup with the captured marker indexes.
    const parts = marked.split(new RegExp(`SLUICE${this.#nonce}M(\\d+)E`));
    const pieces: Piece[] = [];
    let at = 0;
    for (let k = 0; k < parts.length; k += 2) {
      const markup = parts[k]!;
      if (!real.startsWith(markup, at)) return undefined;
      if (markup !== "") pieces.push({ text: markup, literal: false });
      at += markup.length;
      if (k + 1 === parts.length) break;
      const marker = Number(parts[k + 1]);
      const text = this.#texts[marker];
      if (text === undefined) return undefined;
      const next = parts[k + 2]!;
      const form = forms(text).find((f) => real.startsWith(f, at) && real.startsWith(next, at + f.length));
      if (form === undefined) return undefined;
      pieces.push({ text: form, literal: true, marker });
      at += form.length;
    }
    return at === real.length ? pieces : undefined;
  }
}

/** What templates make of a message text: as it is, Jinja's `trim` (and one-sided strips), or `tojson`'s inside. */
function forms(text: string): string[] {
  return [text, text.trim(), text.trimStart(), text.trimEnd(), JSON.stringify(text).slice(1, -1)];
}
