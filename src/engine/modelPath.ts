import { fileURLToPath } from "node:url";

/** The model that ships with Sluice: a small llama trained on the King James Bible (see models/MODEL_CARD.md). */
export const BUNDLED_MODEL_PATH = fileURLToPath(new URL("../../models/kjv-tiny.gguf", import.meta.url));

/**
 * The bundled chat model: kjv-tiny fine-tuned on chat and tool-call transcripts, with a ChatML-style chat template
 * (Hermes-style `<tool_call>` tags) in its GGUF (see models/MODEL_CARD.md).
 */
export const BUNDLED_CHAT_MODEL_PATH = fileURLToPath(new URL("../../models/kjv-chat.gguf", import.meta.url));
