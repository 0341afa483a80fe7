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

/** One SSE `data:` event of an upstream, read. */
export type UpstreamEvent =
  | {
      kind: "chunk";
      /** Text delta; may be empty (role chunks, usage chunks). */
      text: string;
      /** Token ids of the delta when the upstream sends them (vLLM `token_ids`, llama-server `tokens`). */
      tokenIds: number[];
      finish?: UpstreamFinish;
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
  const choices = json.choices;
  if (choices !== undefined && !Array.isArray(choices)) {
    return { kind: "malformed", why: `"choices" is not an array: ${clip(data)}` };
  }
  const choice = choices?.find((c) => isObject(c) && (c.index === undefined || c.index === 0));
  if (choices !== undefined && choices.length > 0 && !isObject(choice)) {
    return { kind: "malformed", why: `no choice with index 0: ${clip(data)}` };
  }
  let text = "";
  let tokenIds: number[] = [];
  let finish: UpstreamFinish | undefined;
  if (isObject(choice)) {
    const delta = isObject(choice.delta) ? choice.delta.content : undefined;
    const raw = typeof delta === "string" ? delta : choice.text;
    if (raw !== undefined && raw !== null && typeof raw !== "string") {
      return { kind: "malformed", why: `the delta text is not a string: ${clip(data)}` };
    }
    text = raw ?? "";
    tokenIds = ids(choice.token_ids) ?? ids(json.tokens) ?? [];
    if (typeof choice.finish_reason === "string") finish = mapFinish(choice.finish_reason, json.sluice);
  }
  const event: UpstreamEvent = { kind: "chunk", text, tokenIds };
  if (finish !== undefined) event.finish = finish;
  const usage = readUsage(json.usage);
  if (usage !== undefined) event.usage = usage;
  if (typeof json.model === "string") event.model = json.model;
  return event;
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
