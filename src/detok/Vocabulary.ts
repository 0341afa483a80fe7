import { SluiceError } from "../errors.ts";
import { TokenType, tokenBytes } from "./tokenBytes.ts";

export interface VocabularyInit {
  /**
   * `tokenizer.ggml.model`: "gpt2" (byte-level BPE) or "llama" (SentencePiece: "▁" = space, "<0xNN>" byte
   * tokens; "t5" and "bert" follow the same rules, as in llama.cpp); others: token strings are UTF-8 text.
   */
  model: string;
  tokens: readonly string[];
  /**
   * `tokenizer.ggml.token_type`: 1 NORMAL, 2 UNKNOWN, 3 CONTROL, 4 USER_DEFINED, 5 UNUSED, 6 BYTE.
   * Missing = all NORMAL.
   */
  tokenTypes?: readonly number[];
  bos?: number;
  eos?: number;
  eot?: number;
  /** Extra end-of-generation ids (e.g. from the engine's own isEogToken). */
  eog?: readonly number[];
  /** Defaults to true for "llama" (SentencePiece) vocabularies and false otherwise, like llama.cpp. */
  addBos?: boolean;
}

/** Control-token texts that end a generation even when the file does not say so, as llama.cpp detects them. */
const EOG_MARKERS = new Set([
  "<|endoftext|>",
  "<|im_end|>",
  "<|eot_id|>",
  "<|eom_id|>",
  "<|end|>",
  "<end_of_turn>",
  "<|end_of_text|>",
  "</s>",
]);

const EMPTY = new Uint8Array(0);
const SPECIAL = 1;
const EOG = 2;

/**
 * A model's vocabulary as the detokenizer needs it: every token's bytes, its text when those bytes are a
 * complete UTF-8 string on their own, and which tokens are special or end a generation. Everything is
 * computed once, so the per-token path only indexes arrays.
 *
 * Out-of-range (or non-integer) ids are not an error here: they stand for no bytes and no text, are not
 * special and do not end a generation. The hot path never throws; callers that care validate ids upstream.
 */
export class Vocabulary {
  readonly size: number;
  readonly bos: number | undefined;
  readonly eos: number | undefined;
  readonly addBos: boolean;
  readonly eogIds: readonly number[];
  /**
   * Most UTF-8 bytes of text one token can stand for (at least 4, the longest character, which an unknown-token
   * fallback may cover alone): a text of B bytes needs at least B / maxTokenBytes tokens, which bounds a prompt's
   * token count before it is tokenized.
   */
  readonly maxTokenBytes: number;
  readonly #strings: readonly string[];
  readonly #bytes: Uint8Array[];
  readonly #texts: (string | undefined)[];
  readonly #flags: Uint8Array;

  private constructor(init: VocabularyInit) {
    const { model, tokens, tokenTypes } = init;
    this.size = tokens.length;
    this.#strings = tokens.slice();
    this.bos = init.bos;
    this.eos = init.eos;
    this.addBos = init.addBos ?? model === "llama";

    const pieces = tokens.map((text, id) => tokenBytes(model, text, tokenTypes?.[id]));
    // One backing buffer for the whole table: a large vocabulary then costs views, not 100k ArrayBuffers.
    const total = pieces.reduce((sum, piece) => sum + piece.length, 0);
    // Control tokens count by their literal text: a prompt parsed with special tokens may use them.
    this.maxTokenBytes = pieces.reduce((most, piece) => Math.max(most, piece.length), 4);
    const backing = new Uint8Array(total);
    const fatal = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
    this.#bytes = [];
    this.#texts = [];
    let offset = 0;
    for (const piece of pieces) {
      backing.set(piece, offset);
      this.#bytes.push(backing.subarray(offset, offset + piece.length));
      offset += piece.length;
      this.#texts.push(completeText(fatal, piece));
    }

    this.#flags = new Uint8Array(this.size);
    const eog = new Set<number>();
    for (const id of [init.eos, init.eot, ...(init.eog ?? [])]) if (id !== undefined) eog.add(id);
    for (let id = 0; id < this.size; id++) {
      if (tokenTypes?.[id] !== TokenType.control) continue;
      this.#flags[id]! |= SPECIAL;
      if (EOG_MARKERS.has(tokens[id]!)) eog.add(id);
    }
    for (const id of eog) this.#flags[id]! |= EOG;
    this.eogIds = [...eog].sort((a, b) => a - b);
  }

  /** Builds a vocabulary from GGUF tokenizer metadata. Throws `model_invalid` when it cannot be used. */
  static fromGguf(init: VocabularyInit): Vocabulary {
    validate(init);
    return new Vocabulary(init);
  }

  /**
   * Reads the tokenizer metadata of a GGUF file (not its weights) and builds the vocabulary.
   * Throws `model_load_failed` when the file cannot be read and `model_invalid` when it has no usable
   * tokenizer.
   */
  static async fromGgufFile(path: string): Promise<Vocabulary> {
    // Loaded lazily: building a vocabulary from metadata in hand should not pull in the native engine.
    const { readGgufFileInfo } = await import("node-llama-cpp");
    let metadata: unknown;
    try {
      const info = await readGgufFileInfo(path, {
        readTensorInfo: false,
        sourceType: "filesystem",
        logWarnings: false,
        ignoreKeys: ["tokenizer.ggml.merges", "tokenizer.ggml.scores"],
      });
      metadata = info.metadata;
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      // A file system error (no such file, no permission) is a load failure; anything else is a bad file.
      const code = isSystemError(error) ? "model_load_failed" : "model_invalid";
      throw new SluiceError(code, `cannot read GGUF metadata from ${path}: ${reason}`, { cause: error });
    }
    const ggml = (metadata as { tokenizer?: { ggml?: Record<string, unknown> } }).tokenizer?.ggml;
    if (ggml === undefined) {
      throw new SluiceError(
        "model_invalid",
        `${path} has no tokenizer.ggml metadata: Sluice needs the vocabulary to turn token ids into text`,
      );
    }
    const eog = [ggml.eom_token_id].filter((id): id is number => typeof id === "number");
    return Vocabulary.fromGguf({
      model: ggml.model as string,
      tokens: ggml.tokens as string[],
      tokenTypes: ggml.token_type as number[] | undefined,
      bos: optionalNumber(ggml.bos_token_id),
      eos: optionalNumber(ggml.eos_token_id),
      eot: optionalNumber(ggml.eot_token_id),
      eog,
      addBos: typeof ggml.add_bos_token === "boolean" ? ggml.add_bos_token : undefined,
    });
  }

  /** The exact bytes a token stands for (control tokens: the UTF-8 of their literal text). */
  bytesOf(id: number): Uint8Array {
    return this.#bytes[id] ?? EMPTY;
  }

  /**
   * The token's text when its bytes are complete, valid UTF-8 by themselves, else undefined. Decoding such
   * a token with no bytes pending gives exactly this string, so the detokenizer can skip the decoder.
   */
  textOf(id: number): string | undefined {
    return this.#texts[id];
  }

  /** Control tokens (token_type 3): removed from text when skipSpecialTokens. USER_DEFINED stay text. */
  isSpecial(id: number): boolean {
    return ((this.#flags[id] ?? 0) & SPECIAL) !== 0;
  }

  /** End-of-generation: eos, eot, the `eog` list, and control tokens whose text is a known EOG marker. */
  isEog(id: number): boolean {
    return ((this.#flags[id] ?? 0) & EOG) !== 0;
  }

  /** The literal token string, for debugging and tests ("" for out-of-range ids). */
  tokenString(id: number): string {
    return this.#strings[id] ?? "";
  }
}

function completeText(fatal: TextDecoder, bytes: Uint8Array): string | undefined {
  try {
    return fatal.decode(bytes);
  } catch {
    return undefined;
  }
}

function isSystemError(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" && code.startsWith("E");
}

function optionalNumber(value: unknown): number | undefined {
  return typeof value === "number" ? value : undefined;
}

function validate(init: VocabularyInit): void {
  const invalid = (message: string) => new SluiceError("model_invalid", message);
  if (typeof init.model !== "string" || init.model === "") {
    throw invalid("tokenizer.ggml.model is missing: cannot tell how token strings map to bytes");
  }
  const { tokens, tokenTypes } = init;
  if (!Array.isArray(tokens) || tokens.length === 0) {
    throw invalid("tokenizer.ggml.tokens is missing or empty: the model file carries no vocabulary");
  }
  for (let id = 0; id < tokens.length; id++) {
    if (typeof tokens[id] !== "string") throw invalid(`tokenizer.ggml.tokens[${id}] is not a string`);
  }
  if (tokenTypes !== undefined) {
    if (!Array.isArray(tokenTypes) || tokenTypes.length !== tokens.length) {
      throw invalid(
        `tokenizer.ggml.token_type has ${Array.isArray(tokenTypes) ? tokenTypes.length : "no"} entries ` +
          `for ${tokens.length} tokens: it must have one per token`,
      );
    }
  }
  const checkId = (name: string, id: number | undefined) => {
    if (id !== undefined && !(Number.isInteger(id) && id >= 0 && id < tokens.length)) {
      throw invalid(`${name} is ${id}, outside the vocabulary of ${tokens.length} tokens`);
    }
  };
  checkId("bos token id", init.bos);
  checkId("eos token id", init.eos);
  checkId("eot token id", init.eot);
  for (const id of init.eog ?? []) checkId("end-of-generation token id", id);
}
