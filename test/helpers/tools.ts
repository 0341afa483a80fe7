import type OpenAI from "openai";
import type { ToolDefinition } from "../../src/engine/ChatTemplate.ts";

const GET_VERSE = {
  name: "get_verse",
  description: "Gets a verse of the King James Bible.",
  parameters: {
    type: "object",
    properties: { book: { type: "string" }, chapter: { type: "integer" }, verse: { type: "integer" } },
    required: ["book", "chapter", "verse"],
  },
};

const COUNT_VERSES = {
  name: "count_verses",
  description: "Counts the verses of a chapter.",
  parameters: {
    type: "object",
    properties: { book: { type: "string" }, chapter: { type: "integer" } },
    required: ["book", "chapter"],
  },
};

/** The two functions the tool-call tests offer the chat model, in the library's shape. */
export const VERSE_TOOLS: ToolDefinition[] = [GET_VERSE, COUNT_VERSES];

/** `VERSE_TOOLS` as OpenAI's `tools` entries (`{ type: "function", function }`). */
export const VERSE_FUNCTION_TOOLS: OpenAI.Chat.Completions.ChatCompletionFunctionTool[] = [
  GET_VERSE,
  COUNT_VERSES,
].map((fn) => ({ type: "function", function: fn }));
