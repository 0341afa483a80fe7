/**
 * How one vocabulary string becomes the bytes it stands for. Mirrors llama.cpp's `token_to_piece` with
 * special tokens rendered, so a Sluice stream and llama.cpp agree byte for byte.
 */

/** `tokenizer.ggml.token_type` values. */
export const TokenType = {
  normal: 1,
  unknown: 2,
  control: 3,
  userDefined: 4,
  unused: 5,
  byte: 6,
} as const;

const EMPTY = new Uint8Array(0);
const encoder = new TextEncoder();
const BYTE_TOKEN = /^<0x([0-9A-Fa-f]{2})>$/;
const SPM_SPACE = /\u2581/g;

/**
 * Inverse of GPT-2's `bytes_to_unicode`: printable Latin-1 bytes stand for themselves, the other 68 bytes
 * are shifted to U+0100..U+0143 so that every byte has a visible, non-whitespace character.
 */
const GPT2_BYTE_OF_CHAR = buildGpt2ByteTable();

function buildGpt2ByteTable(): Int16Array {
  const table = new Int16Array(0x144).fill(-1);
  let shifted = 0;
  for (let byte = 0; byte < 256; byte++) {
    const printable =
      (byte >= 0x21 && byte <= 0x7e) || (byte >= 0xa1 && byte <= 0xac) || (byte >= 0xae && byte <= 0xff);
    table[printable ? byte : 0x100 + shifted++] = byte;
  }
  return table;
}

/** Vocabularies whose token strings use SentencePiece conventions (`▁` for space, `<0xNN>` byte tokens). */
function isSentencePiece(model: string): boolean {
  // llama.cpp renders SPM ("llama"), UGM ("t5") and WPM ("bert") pieces with the same rules.
  return model === "llama" || model === "t5" || model === "bert";
}

/**
 * The bytes of one token. `type` is its `token_type` (undefined when the file has none).
 * - CONTROL, USER_DEFINED and UNKNOWN tokens stand for their literal text, as in llama.cpp.
 * - UNUSED tokens stand for nothing.
 * - gpt2: every character maps back through GPT-2's byte table; a character outside it (never seen in a
 *   well-formed vocabulary) is kept as its own UTF-8 rather than dropped, so nothing silently disappears.
 * - SentencePiece: `<0xNN>` byte tokens are one byte (also when the file has no token types, because
 *   every real SentencePiece vocabulary means a byte by them); `▁` is a space. No leading space is
 *   stripped: a generated token always follows the prompt, never starts a text.
 * - Any other model: the token string is UTF-8 text.
 */
export function tokenBytes(model: string, text: string, type: number | undefined): Uint8Array {
  if (type === TokenType.unused) return EMPTY;
  if (type === TokenType.control || type === TokenType.userDefined || type === TokenType.unknown) {
    return encoder.encode(text);
  }
  if (model === "gpt2") return gpt2Bytes(text);
  if (isSentencePiece(model)) {
    if (type === TokenType.byte || type === undefined) {
      const byte = BYTE_TOKEN.exec(text);
      if (byte !== null) return Uint8Array.of(Number.parseInt(byte[1]!, 16));
    }
    return encoder.encode(text.replace(SPM_SPACE, " "));
  }
  if (type === TokenType.byte) {
    const byte = BYTE_TOKEN.exec(text);
    if (byte !== null) return Uint8Array.of(Number.parseInt(byte[1]!, 16));
  }
  return encoder.encode(text);
}

function gpt2Bytes(text: string): Uint8Array {
  const out: number[] = [];
  for (const char of text) {
    const code = char.codePointAt(0)!;
    const byte = code < GPT2_BYTE_OF_CHAR.length ? GPT2_BYTE_OF_CHAR[code]! : -1;
    if (byte >= 0) out.push(byte);
    else for (const b of encoder.encode(char)) out.push(b);
  }
  return Uint8Array.from(out);
}

/** GPT-2's byte-to-character table, for building byte-level vocabularies (tests, fixtures). */
export function gpt2CharOfByte(byte: number): string {
  if (!Number.isInteger(byte) || byte < 0 || byte > 255) throw new RangeError(`not a byte: ${byte}`);
  return String.fromCharCode(GPT2_BYTE_OF_CHAR.indexOf(byte));
}
