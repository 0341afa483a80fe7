import type { FinishReason, GenerationResult } from "../types.ts";
import type { GenerationKind } from "./upstreamEvent.ts";

/** OpenAI's finish_reason for a channel reason (`cancelled` and `error` are Sluice's additions). */
function finishReason(reason: FinishReason): string {
  return reason === "eos" || reason === "stop" ? "stop" : reason;
}

function usageOf(result: GenerationResult) {
  const { promptTokens, completionTokens, cachedTokens } = result.usage;
  return {
    prompt_tokens: promptTokens,
    completion_tokens: completionTokens,
    total_tokens: promptTokens + completionTokens,
    prompt_tokens_details: { cached_tokens: cachedTokens },
  };
}

/** The `sluice` object: the exact reason (a gateway in front of this one maps it back), stop, timings. */
function extension(result: GenerationResult) {
  return {
    reason: result.reason,
    ...(result.stop !== undefined ? { stop: result.stop } : {}),
    timings: result.timings,
  };
}

/** The JSON the gateway sends its client, re-rendered from the channel (chat or text completion). */
export interface GatewayShape {
  opening(): string | undefined;
  delta(text: string): string;
  finish(result: GenerationResult): string;
  usage(result: GenerationResult): string;
  body(result: GenerationResult): unknown;
}

export function gatewayShape(
  kind: GenerationKind,
  init: { id: string; model: () => string; created: number; includeUsage: boolean },
): GatewayShape {
  const chat = kind === "chat";
  const envelope = (object: string) => ({
    id: init.id,
    object,
    created: init.created,
    model: init.model(),
    ...(chat ? { system_fingerprint: null } : {}),
  });
  const chunkObject = chat ? "chat.completion.chunk" : "text_completion";
  const usageNull = init.includeUsage ? { usage: null } : {};
  const choice = (text: string | undefined, finish: string | null) =>
    chat
      ? {
          index: 0,
          delta: text === undefined ? {} : { content: text },
          logprobs: null,
          finish_reason: finish,
        }
      : { text: text ?? "", index: 0, logprobs: null, finish_reason: finish };
  return {
    opening: () =>
      chat
        ? JSON.stringify({
            ...envelope(chunkObject),
            choices: [
              { index: 0, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null },
            ],
            ...usageNull,
          })
        : undefined,
    delta: (text) =>
      JSON.stringify({ ...envelope(chunkObject), choices: [choice(text, null)], ...usageNull }),
    finish: (result) =>
      JSON.stringify({
        ...envelope(chunkObject),
        choices: [choice(undefined, finishReason(result.reason))],
        ...usageNull,
        sluice: extension(result),
      }),
    usage: (result) => JSON.stringify({ ...envelope(chunkObject), choices: [], usage: usageOf(result) }),
    body: (result) => ({
      ...envelope(chat ? "chat.completion" : "text_completion"),
      choices: [
        chat
          ? {
              index: 0,
              message: { role: "assistant", content: result.text, refusal: null },
              logprobs: null,
              finish_reason: finishReason(result.reason),
            }
          : { text: result.text, index: 0, logprobs: null, finish_reason: finishReason(result.reason) },
      ],
      usage: usageOf(result),
      sluice: extension(result),
    }),
  };
}
