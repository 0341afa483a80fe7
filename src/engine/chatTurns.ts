/**
 * Chat turns as Sluice takes them, and as chat templates read them: the variables llama.cpp and HF pass
 * (OpenAI's message and tool shapes).
 */

/** An assistant turn's call of a tool (OpenAI's `tool_calls` entry, flattened). */
export interface ChatToolCall {
  /** The call's id, which the `tool` turn answering it names in `toolCallId`. */
  id: string;
  /** The function called. */
  name: string;
  /**
   * The arguments as JSON text, as OpenAI sends them. The template gets them parsed when they are a JSON
   * object (as llama.cpp passes them: many templates write `arguments | tojson`), else as this text.
   */
  arguments: string;
}

/** One chat turn as a template renders it. */
export interface ChatTurn {
  role: "system" | "user" | "assistant" | "tool";
  /** The turn's text: "" for an assistant turn that only calls tools. */
  content: string;
  /** An assistant turn's tool calls. */
  toolCalls?: readonly ChatToolCall[];
  /** A `tool` turn: the id of the call it answers. */
  toolCallId?: string;
  /** The author's name (OpenAI's `name`; on a `tool` turn, the function's name). */
  name?: string;
}

/** A function the model may call (the `function` of OpenAI's `tools` entry). */
export interface ToolDefinition {
  name: string;
  description?: string | null;
  /** The arguments' JSON schema. Defaults to an object with no properties (a function without arguments). */
  parameters?: Readonly<Record<string, unknown>> | null;
}

/** The message fields a template reads (OpenAI's shape). */
export interface TemplateMessage {
  role: string;
  content: string | null;
  tool_calls?: { id: string; type: "function"; function: { name: string; arguments: unknown } }[];
  tool_call_id?: string;
  name?: string;
}

/** OpenAI's message shape, with `text` applied to every message text (the markers, or the text itself). */
export function templateMessages(turns: readonly ChatTurn[], text: (s: string) => string): TemplateMessage[] {
  return turns.map((turn) => {
    const calls = turn.toolCalls ?? [];
    // OpenAI (and llama.cpp) send `content: null` for an assistant turn that only calls tools.
    const message: TemplateMessage = {
      role: turn.role,
      content: turn.content === "" && calls.length > 0 ? null : text(turn.content),
    };
    if (calls.length > 0) {
      message.tool_calls = calls.map((call) => ({
        id: call.id,
        type: "function",
        function: { name: call.name, arguments: templateArguments(call.arguments, text) },
      }));
    }
    if (turn.toolCallId !== undefined) message.tool_call_id = turn.toolCallId;
    if (turn.name !== undefined) message.name = turn.name;
    return message;
  });
}

/**
 * A JSON object's arguments as the object (its string values through `text`; its keys are the function's
 * parameter names, markup that templates may look up), anything else as its text.
 */
function templateArguments(json: string, text: (s: string) => string): unknown {
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch {
    return text(json);
  }
  return isPlainObject(value) ? mapStrings(value, text) : text(json);
}

function mapStrings(value: unknown, text: (s: string) => string): unknown {
  if (typeof value === "string") return text(value);
  if (Array.isArray(value)) return value.map((item) => mapStrings(item, text));
  if (isPlainObject(value)) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, mapStrings(v, text)]));
  }
  return value;
}

/** Every key of the arguments' JSON object, nested ones included (none when it is not one). */
export function argumentKeys(json: string): string[] {
  const keys: string[] = [];
  const walk = (value: unknown) => {
    if (Array.isArray(value)) value.forEach(walk);
    else if (isPlainObject(value)) {
      for (const [key, item] of Object.entries(value)) {
        keys.push(key);
        walk(item);
      }
    }
  };
  try {
    walk(JSON.parse(json));
  } catch {
    // Not JSON: the template gets it as text.
  }
  return keys;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

export function templateTool(tool: ToolDefinition) {
  const fn: Record<string, unknown> = { name: tool.name };
  if (tool.description != null) fn.description = tool.description;
  fn.parameters = tool.parameters ?? { type: "object", properties: {} };
  return { type: "function", function: fn };
}
