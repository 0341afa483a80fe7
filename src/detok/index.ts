/**
 * Detokenization: the byte-exact path from generated token ids to stream text.
 *
 * Vocabulary (token → bytes, precomputed) → Utf8Decoder (streaming, never cuts a character) → special-token
 * filter → StopMatcher (holds back only a possible stop prefix) → emission interval. OutputProcessor wires
 * them per request; the runtime drives it once per generated token.
 */
export {
  type OutputDelta,
  OutputProcessor,
  type OutputProcessorOptions,
  type StopHit,
} from "./OutputProcessor.ts";
export { StopMatcher } from "./StopMatcher.ts";
export { gpt2CharOfByte, TokenType, tokenBytes } from "./tokenBytes.ts";
export { Utf8Decoder } from "./Utf8Decoder.ts";
export { Vocabulary, type VocabularyInit } from "./Vocabulary.ts";
