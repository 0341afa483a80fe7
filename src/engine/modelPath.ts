import { fileURLToPath } from "node:url";

/** The model that ships with Sluice: a small llama trained on the King James Bible (see models/MODEL_CARD.md). */
export const BUNDLED_MODEL_PATH = fileURLToPath(new URL("../../models/kjv-tiny.gguf", import.meta.url));
