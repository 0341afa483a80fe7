import { statSync } from "node:fs";
import type { VocabularyInit } from "../detok/Vocabulary.ts";
import { SluiceError } from "../errors.ts";
import { checkHyperparameters } from "./gguf/checkHyperparameters.ts";
import { checkLlama } from "./gguf/checkLlama.ts";
import { checkTensorTable } from "./gguf/checkTensorTable.ts";
import { checkTokens } from "./gguf/checkTokens.ts";
import { MetadataReader } from "./gguf/MetadataReader.ts";
import { readGgufHeader } from "./gguf/readGgufHeader.ts";
import { vocabularyInit } from "./gguf/vocabularyInit.ts";

/**
 * Checks a GGUF file before llama.cpp (or node-llama-cpp's own reader) sees it, so that a malformed file is an
 * error and not a crash: llama.cpp aborts the whole process (an uncatchable GGML_ASSERT) on some bad
 * hyperparameters, and a corrupt count in the header makes a reader allocate without end.
 *
 * Reads only the header, metadata and tensor table (never tensor data), every count and length bounded by the
 * file's size, then checks: the format as llama.cpp's gguf.cpp reads it; every tensor's shape, type and data
 * range within the file; the hyperparameters llama.cpp reads for every architecture (and for attention
 * architectures, the head counts); a vocabulary of distinct tokens; and for the llama architecture every tensor a
 * block needs, with the shape and type the hyperparameters call for. See `gguf/` for each step.
 *
 * node-llama-cpp's readGgufFileInfo is not used here: it reads past the end of a file as zeros and loops as long
 * as a count says, so an absurd n_dims or array length keeps it reading (and its buffer growing) without end.
 * Once this check passes, it and llama.cpp read the file safely.
 *
 * @param path a local file.
 * @returns the architecture, the training context length (`<arch>.context_length`) and the tokenizer metadata
 *   (so the vocabulary is built from this one read of the file).
 * @throws SluiceError `model_invalid` whose message names the file, the field at fault, its value and what is
 *   wrong, or that the file is missing or unreadable.
 */
export async function checkGguf(
  path: string,
): Promise<{ architecture: string; contextLength: number; vocabulary: VocabularyInit }> {
  let isFile = false;
  try {
    isFile = statSync(path).isFile();
  } catch {
    // Missing, or a path we may not even stat: either way there is no file to load.
  }
  if (!isFile) {
    throw new SluiceError(
      "model_invalid",
      `Model file not found: ${path}. Pass the path of a local .gguf file.`,
    );
  }
  const header = readGgufHeader(path);
  const tensors = checkTensorTable(path, header);
  const hparams = checkHyperparameters(path, header.metadata, tensors.length);
  const vocabularySize = checkTokens(path, header.metadata);
  // A split model's other tensors are in the other files; its shapes are left to llama.cpp.
  if (hparams.architecture === "llama" && !hparams.split) {
    checkLlama(new MetadataReader(path, header.metadata), hparams, vocabularySize, tensors);
  }
  return {
    architecture: hparams.architecture,
    contextLength: hparams.contextLength,
    vocabulary: vocabularyInit(header),
  };
}
