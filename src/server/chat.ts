import type { ChatTemplate, ChatTurn, ToolDefinition } from "../engine/ChatTemplate.ts";
import type { Engine } from "../engine/Engine.ts";
import { SluiceError } from "../errors.ts";
import type { ChatMessage } from "./schemas.ts";
import { HERMES_TOOL_CALLS, type ToolCallFormat } from "./toolCalls.ts";

/** A chat rendered for the runtime: token ids, plus what ends the assistant's turn. */
export interface ChatPrompt {
  tokens: number[];
  stopTokenIds: number[];
  stop: string[];
}

/** How `ChatFormatter.format` renders the messages. */
export interface FormatOptions {
  /**
   * Functions offered to the model (the `function` of each OpenAI `tools` entry), rendered by the model's
   * template. Needs `toolCalls`: throws `invalid_request` otherwise. Defaults to none.
   */
  tools?: readonly ToolDefinition[];
  /**
   * When the last message is the assistant's, continue it rather than open a new turn (llama-server's
   * assistant prefill, vLLM's `continue_final_message`). Ignored otherwise. Defaults to false.
   */
  continueFinal?: boolean;
}

export interface ChatFormatter {
  /** `template`: the model's Jinja chat template; `chatml` and `plain`: the fallbacks (see README.md). */
  readonly kind: "template" | "chatml" | "plain";
  /**
   * How this model writes tool calls, when its template renders tools (it reads `tools` and shows them to the
   * model) in a format Sluice parses (Hermes `<tool_call>` tags); undefined when it has no tool support: the
   * fallbacks never do.
   */
  readonly toolCalls: ToolCallFormat | undefined;
  /**
   * Renders the messages for generation. Throws `SluiceError` `invalid_request` when the template refuses them,
   * when `tools` are given without `toolCalls`, or when a final assistant message to continue calls tools.
   */
  format(messages: readonly ChatMessage[], options?: FormatOptions): ChatPrompt;
}

/**
 * Picks how chats are rendered: the engine's chat template (the GGUF's `tokenizer.chat_template`, or `template`
 * when given) when it has one that runs, else ChatML when the vocabulary has its control tokens, else a plain
 * `role: content` transcript.
 */
export function createChatFormatter(engine: Engine, template?: string): ChatFormatter {
  const bos = engine.info.vocabulary.bos;
  const addBos = engine.info.addBos && bos !== undefined;
  const withBos = (tokens: number[]) => (addBos && tokens[0] !== bos ? [bos!, ...tokens] : tokens);
  const chatTemplate = engine.chatTemplate(template);
  if (chatTemplate) {
    const toolCalls = toolCallFormat(chatTemplate);
    return {
      kind: "template",
      toolCalls,
      format(messages, options = {}) {
        if (options.tools !== undefined && options.tools.length > 0 && toolCalls === undefined) noTools();
        return chatTemplate.render(messages.map(toTurn), options);
      },
    };
  }
  const start = controlToken(engine, "<|im_start|>");
  const end = controlToken(engine, "<|im_end|>");
  if (start !== undefined && end !== undefined) return chatMlFormatter(engine, start, end, withBos);
  return plainFormatter(engine, withBos);
}

/** The message as a template turn: `developer` is OpenAI's newer name for `system`; text parts are joined. */
export function toTurn(message: ChatMessage): ChatTurn {
  const role = message.role === "developer" ? "system" : message.role;
  const turn: ChatTurn = { role, content: text(message) };
  if (message.tool_calls != null && message.tool_calls.length > 0) {
    turn.toolCalls = message.tool_calls.map((call) => ({
      id: call.id,
      name: call.function.name,
      arguments: call.function.arguments,
    }));
  }
  if (message.tool_call_id != null) turn.toolCallId = message.tool_call_id;
  if (message.name != null) turn.name = message.name;
  return turn;
}

/**
 * The template's tool-call format: it must read `tools`, show them to the model (a rendering with a tool is
 * longer than one without) and teach Hermes `<tool_call>` tags.
 */
function toolCallFormat(template: ChatTemplate): ToolCallFormat | undefined {
  const source = template.source;
  if (source === undefined || !/\btools\b/.test(source) || !source.includes(HERMES_TOOL_CALLS.open)) {
    return undefined;
  }
  try {
    const turns: ChatTurn[] = [{ role: "user", content: "Hello" }];
    const probe: ToolDefinition = {
      name: "probe_tool",
      description: "Probe.",
      parameters: { type: "object", properties: { text: { type: "string" } } },
    };
    const without = template.render(turns).tokens.length;
    return template.render(turns, { tools: [probe] }).tokens.length > without ? HERMES_TOOL_CALLS : undefined;
  } catch {
    return undefined;
  }
}

function noTools(): never {
  throw new SluiceError(
    "invalid_request",
    "This model's chat template has no tool support (it does not render tools, or not with Hermes <tool_call> tags), so the model cannot be offered any: remove tools, or serve the model with a chatTemplate that renders them.",
    { param: "tools" },
  );
}

function text(message: ChatMessage): string {
  const { content } = message;
  if (content == null) return "";
  return typeof content === "string" ? content : content.map((part) => part.text as string).join("");
}

/** Id of a control token, when the vocabulary has it as one token. */
function controlToken(engine: Engine, marker: string): number | undefined {
  try {
    const ids = engine.tokenize(marker, { special: true });
    return ids.length === 1 && engine.info.vocabulary.isSpecial(ids[0]!) ? ids[0] : undefined;
  } catch {
    return undefined;
  }
}

/** Role names as the fallbacks write them (`developer` is OpenAI's newer name for `system`). */
function roleName(message: ChatMessage): string {
  return message.role === "developer" ? "system" : message.role;
}

/** A message's text for the fallbacks: its content, then its tool calls in Hermes tags. */
function body(message: ChatMessage): string {
  const calls = (message.tool_calls ?? []).map(
    (call) =>
      `<tool_call>\n{"name": ${JSON.stringify(call.function.name)}, "arguments": ${call.function.arguments}}\n</tool_call>`,
  );
  return [text(message), ...calls].filter((part) => part !== "").join("\n");
}

/**
 * The messages to render and whether the last is an assistant message to continue. Throws when that message
 * calls tools: its calls would be cut off.
 */
function continued(
  messages: readonly ChatMessage[],
  options: FormatOptions,
): { messages: readonly ChatMessage[]; final: ChatMessage | undefined } {
  if (options.tools !== undefined && options.tools.length > 0) noTools();
  const last = messages.at(-1);
  if (options.continueFinal !== true || last?.role !== "assistant") return { messages, final: undefined };
  if ((last.tool_calls?.length ?? 0) > 0) {
    throw new SluiceError(
      "invalid_request",
      "The final assistant message calls tools, so it cannot be continued: drop its tool_calls, or add the tool results after it.",
      { param: "messages" },
    );
  }
  return { messages: messages.slice(0, -1), final: last };
}

function chatMlFormatter(
  engine: Engine,
  start: number,
  end: number,
  withBos: (tokens: number[]) => number[],
): ChatFormatter {
  const plain = (s: string) => engine.tokenize(s, { special: false });
  const newline = plain("\n");
  return {
    kind: "chatml",
    toolCalls: undefined,
    format(all, options = {}) {
      const { messages, final } = continued(all, options);
      const tokens: number[] = [];
      for (const message of messages) {
        // Markers are the only control tokens: message text is tokenized as text, so a user cannot forge a turn.
        tokens.push(start, ...plain(`${roleName(message)}\n`));
        const content = body(message);
        if (content.length > 0) tokens.push(...plain(content));
        tokens.push(end, ...newline);
      }
      tokens.push(start, ...plain("assistant\n"));
      // A continued message stays open: no end marker after its text.
      if (final !== undefined && text(final) !== "") tokens.push(...plain(text(final)));
      return { tokens: withBos(tokens), stopTokenIds: [end], stop: [] };
    },
  };
}

function plainFormatter(engine: Engine, withBos: (tokens: number[]) => number[]): ChatFormatter {
  return {
    kind: "plain",
    toolCalls: undefined,
    format(all, options = {}) {
      const { messages, final } = continued(all, options);
      const transcript = messages.map((m) => `${roleName(m)}: ${body(m)}\n`).join("");
      const open = final === undefined || text(final) === "" ? "assistant:" : `assistant: ${text(final)}`;
      const tokens = engine.tokenize(`${transcript}${open}`, { special: false });
      return { tokens: withBos(tokens), stopTokenIds: [], stop: ["\nuser:", "\nsystem:"] };
    },
  };
}
