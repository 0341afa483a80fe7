/** Composing llama.cpp GBNF grammars from parts. */

/** A GBNF rule name: letters, digits and dashes (llama.cpp's rule). */
const RULE_NAME = /^[ \t]*([a-zA-Z0-9-]+)[ \t]*::=/gm;

/**
 * `gbnf` with every rule it defines renamed `prefix + name`, in definitions and references alike (literals,
 * character classes, repetition counts and comments are left alone), so that several grammars can share one
 * text. Rules it references without defining keep their names.
 */
export function prefixRules(gbnf: string, prefix: string): string {
  const defined = new Set([...gbnf.matchAll(RULE_NAME)].map((match) => match[1]!));
  let out = "";
  let i = 0;
  while (i < gbnf.length) {
    const c = gbnf[i]!;
    if (c === '"' || c === "[" || c === "{") {
      const end = closing(gbnf, i, c === '"' ? '"' : c === "[" ? "]" : "}");
      out += gbnf.slice(i, end);
      i = end;
    } else if (c === "#") {
      const end = gbnf.indexOf("\n", i);
      const stop = end === -1 ? gbnf.length : end;
      out += gbnf.slice(i, stop);
      i = stop;
    } else if (/[a-zA-Z0-9-]/.test(c)) {
      let end = i + 1;
      while (end < gbnf.length && /[a-zA-Z0-9-]/.test(gbnf[end]!)) end++;
      const word = gbnf.slice(i, end);
      out += defined.has(word) ? prefix + word : word;
      i = end;
    } else {
      out += c;
      i++;
    }
  }
  return out;
}

/** Index just past the `close` that ends the literal, class or repetition opened at `start` (escapes skipped). */
function closing(text: string, start: number, close: string): number {
  let i = start + 1;
  while (i < text.length) {
    const c = text[i]!;
    if (c === "\\") i += 2;
    else if (c === close) return i + 1;
    else i++;
  }
  return text.length;
}

/** `text` as a GBNF string literal. */
export function gbnfLiteral(text: string): string {
  let out = '"';
  for (const c of text) {
    if (c === '"' || c === "\\") out += `\\${c}`;
    else if (c === "\n") out += "\\n";
    else if (c === "\r") out += "\\r";
    else if (c === "\t") out += "\\t";
    else out += c;
  }
  return `${out}"`;
}
