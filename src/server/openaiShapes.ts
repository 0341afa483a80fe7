import type { FinishReason, GenerationResult, Timings } from "../types.ts";

/** OpenAI's finish_reason for each runtime reason (`cancelled` and `error` are Sluice's additions). */
export function finishReason(reason: FinishReason): "stop" | "length" | "cancelled" | "error" {
  switch (reason) {
    case "eos":
    case "stop":
      return "stop";
    default:
      return reason;
  }
}

/** The `sluice` object on the final chunk (and on non-streaming responses). */
export interface SluiceExtension {
  reason: FinishReason;
  stop?: string | number;
  timings: Timings;
  /** Measured when the request was cancelled while the client was still there (DELETE, deadline, shutdown). */
  cancel?: { stepsToFree: number; msToFree: number; msToTerminal: number };
}

/** The JSON of one kind of response (text completion or chat), built per request. */
export interface ResponseShape {
  /** An event before the first delta (chat: the assistant role), if the format has one. */
  opening(): string | undefined;
  /** A content delta. Built by concatenation: this runs once per token. */
  delta(text: string): string;
  /** The one chunk with `finish_reason`. */
  finish(result: GenerationResult, extension: SluiceExtension): string;
  /** The usage chunk of `stream_options.include_usage`. */
  usage(result: GenerationResult): string;
  /** The whole non-streaming response. */
  body(result: GenerationResult, extension: SluiceExtension): unknown;
}

export interface ShapeInit {
  id: string;
  model: string;
  /** Unix seconds. */
  created: number;
  includeUsage: boolean;
}

function usageOf(result: GenerationResult) {
  const { promptTokens, completionTokens, cachedTokens } = result.usage;
  return {
    prompt_tokens: promptTokens,
    completion_tokens: completionTokens,
    total_tokens: promptTokens + completionTokens,
    // OpenAI's field for prompt tokens served from the prompt cache.
    prompt_tokens_details: { cached_tokens: cachedTokens },
  };
}

function envelope(init: ShapeInit, object: string) {
  return { id: init.id, object, created: init.created, model: init.model };
}

export function completionShape(init: ShapeInit): ResponseShape {
  const head = JSON.stringify(envelope(init, "text_completion")).slice(0, -1);
  const usageNull = init.includeUsage ? ',"usage":null' : "";
  const prefix = `${head},"choices":[{"text":`;
  const suffix = `,"index":0,"logprobs":null,"finish_reason":null}]${usageNull}}`;
  return {
    opening: () => undefined,
    delta: (text) => prefix + JSON.stringify(text) + suffix,
    finish: (result, extension) =>
      JSON.stringify({
        ...envelope(init, "text_completion"),
        choices: [{ text: "", index: 0, logprobs: null, finish_reason: finishReason(result.reason) }],
        ...(init.includeUsage ? { usage: null } : {}),
        timings: result.timings,
        sluice: extension,
      }),
    usage: (result) =>
      JSON.stringify({ ...envelope(init, "text_completion"), choices: [], usage: usageOf(result) }),
    body: (result, extension) => ({
      ...envelope(init, "text_completion"),
      choices: [{ text: result.text, index: 0, logprobs: null, finish_reason: finishReason(result.reason) }],
      usage: usageOf(result),
      timings: result.timings,
      sluice: extension,
    }),
  };
}

export function chatShape(init: ShapeInit): ResponseShape {
  const head = JSON.stringify({ ...envelope(init, "chat.completion.chunk"), system_fingerprint: null }).slice(
    0,
    -1,
  );
  const usageNull = init.includeUsage ? ',"usage":null' : "";
  const prefix = `${head},"choices":[{"index":0,"delta":{"content":`;
  const suffix = `},"logprobs":null,"finish_reason":null}]${usageNull}}`;
  const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) =>
    JSON.stringify({
      ...envelope(init, "chat.completion.chunk"),
      system_fingerprint: null,
      choices,
      ...extra,
    });
  return {
    opening: () =>
      chunk([{ index: 0, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null }], {
        ...(init.includeUsage ? { usage: null } : {}),
      }),
    delta: (text) => prefix + JSON.stringify(text) + suffix,
    finish: (result, extension) =>
      chunk([{ index: 0, delta: {}, logprobs: null, finish_reason: finishReason(result.reason) }], {
        ...(init.includeUsage ? { usage: null } : {}),
        timings: result.timings,
        sluice: extension,
      }),
    usage: (result) => chunk([], { usage: usageOf(result) }),
    body: (result, extension) => ({
      ...envelope(init, "chat.completion"),
      system_fingerprint: null,
      choices: [
        {
          index: 0,
          message: { role: "assistant", content: result.text, refusal: null },
          logprobs: null,
          finish_reason: finishReason(result.reason),
        },
      ],
      usage: usageOf(result),
      timings: result.timings,
      sluice: extension,
    }),
  };
}
