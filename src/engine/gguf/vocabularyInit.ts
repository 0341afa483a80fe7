import type { VocabularyInit } from "../../detok/Vocabulary.ts";
import type { GgufEntry, GgufHeader } from "./readGgufHeader.ts";

function scalar(metadata: ReadonlyMap<string, GgufEntry>, key: string): unknown {
  const entry = metadata.get(key);
  return entry?.kind === "scalar" ? entry.value : undefined;
}

function id(metadata: ReadonlyMap<string, GgufEntry>, key: string): number | undefined {
  const value = scalar(metadata, key);
  return typeof value === "number" ? value : undefined;
}

/**
 * The tokenizer metadata of a checked header, as `Vocabulary.fromGguf` takes it: the file's vocabulary comes
 * from the same single read that checked it. Token strings were kept as latin1 (one char per byte) and are
 * decoded here as the UTF-8 they are.
 */
export function vocabularyInit(header: GgufHeader): VocabularyInit {
  const { metadata } = header;
  const tokens = metadata.get("tokenizer.ggml.tokens");
  const types = metadata.get("tokenizer.ggml.token_type");
  const model = scalar(metadata, "tokenizer.ggml.model");
  const addBos = scalar(metadata, "tokenizer.ggml.add_bos_token");
  const eom = id(metadata, "tokenizer.ggml.eom_token_id");
  const init: VocabularyInit = {
    model: typeof model === "string" ? model : "",
    tokens:
      tokens?.kind === "array" && tokens.items
        ? tokens.items.map((t) => Buffer.from(t as string, "latin1").toString("utf8"))
        : [],
    eog: eom === undefined ? [] : [eom],
  };
  if (types?.kind === "array" && types.items) init.tokenTypes = types.items as number[];
  const bos = id(metadata, "tokenizer.ggml.bos_token_id");
  const eos = id(metadata, "tokenizer.ggml.eos_token_id");
  const eot = id(metadata, "tokenizer.ggml.eot_token_id");
  if (bos !== undefined) init.bos = bos;
  if (eos !== undefined) init.eos = eos;
  if (eot !== undefined) init.eot = eot;
  if (typeof addBos === "boolean") init.addBos = addBos;
  return init;
}
