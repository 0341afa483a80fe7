import type { ToolDefinition } from "../engine/ChatTemplate.ts";
import type { GrammarSpec } from "../types.ts";
import type { ChatPrompt } from "./chat.ts";
import { badRequest } from "./httpErrors.ts";
import type { ServerContext } from "./ServerContext.ts";
import type { ApplyTemplateRequestBody, ChatRequestBody } from "./schemas.ts";
import type { ToolCallParserOptions } from "./ToolCallParser.ts";
import { type ToolChoice, toolCallGrammar } from "./toolCalls.ts";

/** The prompt of a chat request, and the functions it offers (empty when none). */
export interface RenderedChatRequest {
  prompt: ChatPrompt;
  tools: ToolDefinition[];
}

/**
 * Renders a chat request's prompt as the chat route generates from it: its messages, the functions of
 * `tools` (whatever `tool_choice` says: with `none` the model still sees them, as llama-server renders
 * them), and a trailing assistant message continued or answered (see `continueFinal`). /apply-template shows
 * the same prompt. Throws a 400 when tools are given to a model whose template cannot render them, or when
 * the continuation fields contradict the messages.
 */
export function renderChatRequest(
  server: ServerContext,
  body: Pick<
    ApplyTemplateRequestBody,
    "messages" | "tools" | "continue_final_message" | "add_generation_prompt"
  >,
): RenderedChatRequest {
  const tools = (body.tools ?? []).map(
    (tool): ToolDefinition => ({
      name: tool.function.name,
      ...(tool.function.description != null ? { description: tool.function.description } : {}),
      ...(tool.function.parameters != null ? { parameters: tool.function.parameters } : {}),
    }),
  );
  const prompt = server.chat().format(body.messages, {
    ...(tools.length > 0 ? { tools } : {}),
    continueFinal: continueFinal(body),
  });
  return { prompt, tools };
}

/** How one chat request's output is read for tool calls: none, or a grammar and a parser per choice. */
export interface ToolCallPlan {
  /** Holds calls to the offered functions (absent for `auto` on an engine without grammars). */
  grammar?: GrammarSpec;
  /** One `ToolCallParser` per choice is made with these. */
  parser: ToolCallParserOptions;
}

/**
 * The tool-call plan of a chat request whose `tools` were rendered: none without tools or with
 * `tool_choice: "none"` (no grammar, and the output is all content, as llama-server does); otherwise the
 * grammar of `toolCallGrammar` (`auto` lazily from `<tool_call>`, `required` and a named function from the
 * first token; one call unless `parallel_tool_calls`, default true) and a parser for the model's format.
 * Throws a 400 for a named function not in `tools`, or a function whose parameters cannot be enforced.
 */
export function toolCallPlan(
  server: ServerContext,
  body: Pick<ChatRequestBody, "tool_choice" | "parallel_tool_calls">,
  tools: readonly ToolDefinition[],
): ToolCallPlan | undefined {
  const choice: ToolChoice | "none" = body.tool_choice ?? "auto";
  if (tools.length === 0 || choice === "none") return undefined;
  const format = server.chat().toolCalls;
  // renderChatRequest refused tools for a template without tool support already.
  if (format === undefined) return undefined;
  const parser: ToolCallParserOptions = { format, tools };
  const { engine } = server.runtime;
  // Without grammars, auto still works: the model's calls are parsed, only not held to their schemas.
  if (choice === "auto" && (!engine.info.capabilities.grammar || engine.grammarText === undefined)) {
    return { parser };
  }
  return { grammar: toolCallGrammar(engine, tools, choice, body.parallel_tool_calls ?? true), parser };
}

/**
 * Whether the last message is continued rather than answered in a new turn (assistant prefill). By default a
 * trailing assistant message is continued, as llama-server does (unless it calls tools); vLLM's fields say it
 * explicitly:
 * `continue_final_message: true` continues (the last message must be the assistant's), and
 * `add_generation_prompt: true` (or `continue_final_message: false`) opens a new turn after it.
 */
function continueFinal(
  body: Pick<ApplyTemplateRequestBody, "messages" | "continue_final_message" | "add_generation_prompt">,
): boolean {
  const last = body.messages.at(-1)!;
  const isAssistant = last.role === "assistant";
  if (body.continue_final_message === true && !isAssistant) {
    throw badRequest(
      "invalid_request",
      `continue_final_message continues the last message, which must be the assistant's; it is the ${last.role}'s.`,
      "continue_final_message",
    );
  }
  // A final assistant message that calls tools is answered by default: its calls cannot be continued.
  const callsTools = (last.tool_calls?.length ?? 0) > 0;
  const continues =
    body.continue_final_message ?? (isAssistant && !callsTools && body.add_generation_prompt !== true);
  if (!continues && body.add_generation_prompt === false) {
    throw badRequest(
      "invalid_request",
      "add_generation_prompt: false is supported only with a final assistant message to continue (continue_final_message); remove it to open the assistant's turn.",
      "add_generation_prompt",
    );
  }
  return continues;
}
