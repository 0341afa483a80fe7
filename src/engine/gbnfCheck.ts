import { SluiceError } from "../errors.ts";

/** Most bytes of GBNF one request may bring (a grammar is compiled and walked on every sampled token). */
export const MAX_GRAMMAR_BYTES = 128 * 1024;

/** llama.cpp's own bound on `{m,n}` repetitions ("number of repetitions exceeds sane defaults"). */
const MAX_REPETITIONS = 2000;

/**
 * Checks what llama.cpp's GBNF parser does not, before the text reaches it: forms it mis-parses into a
 * hang (`{5,2}` loops and allocates without end), a terminator (NUL, which ends its strings early, so that
 * no token can match and sampling fails), or a range that matches nothing (`[z-a]`), and a size that would
 * stall every other generation while it compiles and samples. Throws `invalid_request` naming the problem.
 * Comments and string literals are read as GBNF reads them.
 */
export function checkGbnf(gbnf: string, param = "grammar"): void {
  const refuse = (what: string): never => {
    throw new SluiceError("invalid_request", `The grammar ${what}.`, { param });
  };
  const bytes = Buffer.byteLength(gbnf, "utf8");
  if (bytes > MAX_GRAMMAR_BYTES) {
    refuse(
      `is ${Math.ceil(bytes / 1024)} KiB; at most ${MAX_GRAMMAR_BYTES / 1024} KiB are compiled (large enums and ` +
        "alternations slow every generation sharing the engine): shorten it",
    );
  }
  if (!gbnf.isWellFormed()) refuse("holds a lone UTF-16 surrogate; send well-formed text");
  let i = 0;
  const n = gbnf.length;
  while (i < n) {
    const c = gbnf[i]!;
    if (c === "#") {
      while (i < n && gbnf[i] !== "\n") i++;
    } else if (c === '"') {
      i = literal(gbnf, i + 1, '"', refuse);
    } else if (c === "[") {
      i = charClass(gbnf, i + 1, refuse);
    } else if (c === "{") {
      const end = gbnf.indexOf("}", i);
      const body = end < 0 ? "" : gbnf.slice(i + 1, end);
      const match = /^\s*(\d+)\s*(?:(,)\s*(\d*)\s*)?$/.exec(body);
      if (match) {
        const min = Number(match[1]);
        const max = match[2] === undefined ? min : match[3] === "" ? undefined : Number(match[3]);
        if (max !== undefined && max < min)
          refuse(`repeats {${body}}: the most (${max}) is below the least (${min})`);
        if (Math.max(min, max ?? 0) > MAX_REPETITIONS) {
          refuse(`repeats {${body}}: at most ${MAX_REPETITIONS} repetitions are allowed (llama.cpp's limit)`);
        }
      }
      i = end < 0 ? n : end + 1;
    } else i++;
  }
}

/** Reads an escape at `i` (just after the backslash); returns its code point (or -1) and where it ends. */
function readEscape(text: string, i: number): { code: number; next: number } {
  const c = text[i];
  const hex = (length: number) => {
    const digits = text.slice(i + 1, i + 1 + length);
    return /^[0-9a-fA-F]+$/.test(digits) && digits.length === length
      ? { code: Number.parseInt(digits, 16), next: i + 1 + length }
      : { code: -1, next: i + 1 };
  };
  if (c === "x") return hex(2);
  if (c === "u") return hex(4);
  if (c === "U") return hex(8);
  const simple: Record<string, number> = { n: 10, r: 13, t: 9, "\\": 92, '"': 34, "[": 91, "]": 93, "-": 45 };
  return { code: c !== undefined && c in simple ? simple[c]! : -1, next: i + 1 };
}

function literal(text: string, i: number, close: string, refuse: (what: string) => never): number {
  while (i < text.length && text[i] !== close) {
    if (text[i] === "\\") {
      const { code, next } = readEscape(text, i + 1);
      if (code === 0) refuse("holds a NUL character (\\x00), which llama.cpp cannot match; remove it");
      i = next;
    } else i++;
  }
  return i + 1;
}

function charClass(text: string, i: number, refuse: (what: string) => never): number {
  // A negated class may name NUL: it then excludes it, which is what llama.cpp's own JSON grammar does.
  const negated = text[i] === "^";
  if (negated) i++;
  while (i < text.length && text[i] !== "]") {
    let code: number;
    if (text[i] === "\\") {
      const read = readEscape(text, i + 1);
      code = read.code;
      i = read.next;
    } else {
      code = text.codePointAt(i)!;
      i += code > 0xffff ? 2 : 1;
    }
    if (code === 0 && !negated)
      refuse("holds a NUL character (\\x00) in a character class, which llama.cpp cannot match; remove it");
    if (text[i] === "-" && text[i + 1] !== "]" && i + 1 < text.length) {
      let end: number;
      if (text[i + 1] === "\\") {
        const read = readEscape(text, i + 2);
        end = read.code;
        i = read.next;
      } else {
        end = text.codePointAt(i + 1)!;
        i += end > 0xffff ? 3 : 2;
      }
      if (end === 0 && !negated)
        refuse("holds a NUL character (\\x00) in a character class, which llama.cpp cannot match; remove it");
      if (end >= 0 && code >= 0 && end < code) {
        refuse(
          `has the empty character range ${String.fromCodePoint(code)}-${String.fromCodePoint(end)} (its end is below its start); swap them`,
        );
      }
    }
  }
  return i + 1;
}
