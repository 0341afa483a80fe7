import type { ChunkError, FinishReason } from "../types.ts";

/** Which OpenAI route a generation goes through: its chunks carry text in different fields. */
export type GenerationKind = "chat" | "completion";

/** Usage as an upstream reports it (OpenAI's `usage`, with `prompt_tokens_details.cached_tokens`). */
export interface UpstreamUsage {
  promptTokens: number;
  completionTokens: number;
  cachedTokens: number;
}

/** How an upstream said its generation ended. `cancelled` is the upstream's own cancel, not the consumer's. */
export interface UpstreamFinish {
  reason: FinishReason;
  stop?: string | number;
  error?: ChunkError;
}

/**
 * One choice's part of an upstream chunk. What an OpenAI-compatible proxy passes through untouched rides in
 * `toolCalls` and `logprobs` as the upstream sent them (the gateway re-renders only the envelope).
 */
export interface UpstreamChoice {
  index: number;
  /** Text delta (`delta.content`, or a completion's `text`); may be empty (role chunks, tool-call chunks). */
  text: string;
  /** Token ids of the delta when the upstream sends them (vLLM `token_ids`, llama-server `tokens`). */
  tokenIds: number[];
  /** Streamed tool-call fragments (`delta.tool_calls`: index, id, type, function name, argument pieces). */
  toolCalls?: ToolCallFragment[];
  /** The delta's log-probabilities: chat's `{ content: [...] }` or the legacy completions' arrays. */
  logprobs?: Logprobs;
  finish?: UpstreamFinish;
  /** The upstream's own `finish_reason` string (`tool_calls` stays `tool_calls` for the client). */
  finishReason?: string;
}

/** One `delta.tool_calls` entry as OpenAI streams it: the first fragment of a call has its id and name. */
export interface ToolCallFragment {
  index: number;
  id?: string;
  type?: string;
  function?: { name?: string; arguments?: string };
}

/** Chat's log-probabilities (`content` entries) or the legacy completions' parallel arrays. */
export type Logprobs =
  | { content: unknown[]; refusal?: unknown }
  | { tokens: unknown[]; token_logprobs: unknown[]; top_logprobs: unknown[]; text_offset: unknown[] };

/** One SSE `data:` event of an upstream, read. */
export type UpstreamEvent =
  | {
      kind: "chunk";
      /** The choices this chunk carries (none for a usage chunk), by their `index`. */
      choices: UpstreamChoice[];
      usage?: UpstreamUsage;
      /** The model the upstream named, when it did. */
      model?: string;
    }
  | { kind: "done" }
  /** An `{"error": …}` event: the upstream reports a failure inside the stream. */
  | { kind: "error"; error: ChunkError }
  /** Not JSON, or JSON of the wrong shape: the upstream broke the protocol. */
  | { kind: "malformed"; why: string };

const FINISH_REASONS: ReadonlySet<string> = new Set(["eos", "length", "stop", "cancelled", "error"]);

/**
 * Reads one SSE event's data as an OpenAI streaming chunk (chat or text completion; either field is
 * accepted, so a misrouted kind still reads). Pure: the producer decides what each event means for the
 * channel. Sluice upstreams say how they ended exactly (`sluice.reason`, `sluice.stop`); for the others
 * OpenAI's `finish_reason` is mapped: `stop` (end of generation or a stop string, which OpenAI does not tell
 * apart), `tool_calls` and `function_call` become `eos`, `length` stays, `content_filter` is an error.
 * Tool-call fragments and log-probabilities are kept as sent (shape-checked only as far as routing them by
 * choice needs).
 */
export function readUpstreamEvent(data: string): UpstreamEvent {
  if (data === "[DONE]") return { kind: "done" };
  let json: unknown;
  try {
    json = JSON.parse(data);
  } catch {
    return { kind: "malformed", why: `an event is not JSON: ${clip(data)}` };
  }
  if (!isObject(json)) return { kind: "malformed", why: `an event is not a JSON object: ${clip(data)}` };
  if (json.error !== undefined && json.error !== null) {
    const error = isObject(json.error) ? json.error : { message: String(json.error) };
    const code = typeof error.code === "string" ? error.code : "upstream_error";
    const message = typeof error.message === "string" ? error.message : "The upstream reported an error.";
    return { kind: "error", error: { code, message } };
  }
  const raw = json.choices;
  if (raw !== undefined && raw !== null && !Array.isArray(raw)) {
    return { kind: "malformed", why: `"choices" is not an array: ${clip(data)}` };
  }
  const choices: UpstreamChoice[] = [];
  for (const c of raw ?? []) {
    const choice = readChoice(c, json.tokens, json.sluice);
    if (typeof choice === "string") return { kind: "malformed", why: `${choice}: ${clip(data)}` };
    choices.push(choice);
  }
  const event: UpstreamEvent = { kind: "chunk", choices };
  const usage = readUsage(json.usage);
  if (usage !== undefined) event.usage = usage;
  if (typeof json.model === "string") event.model = json.model;
  return event;
}

/** One choice of a chunk, or why it is malformed. */
function readChoice(c: unknown, tokens: unknown, sluice: unknown): UpstreamChoice | string {
  if (!isObject(c)) return "a choice is not an object";
  const index = c.index === undefined ? 0 : c.index;
  if (typeof index !== "number" || !Number.isInteger(index) || index < 0 || index > 1000)
    return "a choice's index is not a small integer";
  const delta = isObject(c.delta) ? c.delta : undefined;
  const content = delta !== undefined ? delta.content : c.text;
  if (content !== undefined && content !== null && typeof content !== "string")
    return "the delta text is not a string";
  const choice: UpstreamChoice = {
    index,
    text: (content as string | null | undefined) ?? "",
    tokenIds: ids(c.token_ids) ?? (index === 0 ? ids(tokens) : undefined) ?? [],
  };
  const calls = delta?.tool_calls;
  if (calls !== undefined && calls !== null) {
    if (!Array.isArray(calls) || !calls.every(isFragment))
      return "delta.tool_calls is not a list of tool calls";
    if (calls.length > 0) choice.toolCalls = calls;
  }
  if (isObject(c.logprobs)) {
    const lp = c.logprobs;
    if (Array.isArray(lp.content)) choice.logprobs = lp as Logprobs;
    else if (Array.isArray(lp.tokens) && Array.isArray(lp.token_logprobs)) choice.logprobs = lp as Logprobs;
  }
  if (typeof c.finish_reason === "string") {
    choice.finishReason = c.finish_reason;
    // The `sluice` object speaks for choice 0 of a streamed chunk (one finish chunk per choice, each its own).
    choice.finish = mapFinish(c.finish_reason, sluice);
  }
  return choice;
}

function isFragment(value: unknown): value is ToolCallFragment {
  if (!isObject(value) || typeof value.index !== "number") return false;
  const f = value.function;
  if (f === undefined) return true;
  return (
    isObject(f) &&
    (f.name === undefined || typeof f.name === "string") &&
    (f.arguments === undefined || typeof f.arguments === "string")
  );
}

function mapFinish(reason: string, sluice: unknown): UpstreamFinish {
  // A Sluice upstream says exactly how it ended, the stop string included.
  if (isObject(sluice) && typeof sluice.reason === "string" && FINISH_REASONS.has(sluice.reason)) {
    const finish: UpstreamFinish = { reason: sluice.reason as FinishReason };
    if (typeof sluice.stop === "string" || typeof sluice.stop === "number") finish.stop = sluice.stop;
    return finish;
  }
  switch (reason) {
    case "length":
      return { reason: "length" };
    case "cancelled":
      return { reason: "cancelled" };
    case "error":
      return { reason: "error" };
    case "content_filter":
      return {
        reason: "error",
        error: { code: "content_filter", message: "The upstream's content filter stopped the generation." },
      };
    default:
      return { reason: "eos" };
  }
}

function readUsage(value: unknown): UpstreamUsage | undefined {
  if (!isObject(value)) return undefined;
  const count = (v: unknown) => (typeof v === "number" && Number.isFinite(v) && v >= 0 ? v : 0);
  const details = isObject(value.prompt_tokens_details) ? value.prompt_tokens_details : {};
  return {
    promptTokens: count(value.prompt_tokens),
    completionTokens: count(value.completion_tokens),
    cachedTokens: count(details.cached_tokens),
  };
}

function ids(value: unknown): number[] | undefined {
  if (!Array.isArray(value)) return undefined;
  return value.every((v) => Number.isInteger(v)) ? (value as number[]) : undefined;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function clip(text: string): string {
  return JSON.stringify(text.length > 120 ? `${text.slice(0, 120)}…` : text);
}
