import type { FinishReason, GenerationResult, Timings, TokenLogprob } from "../types.ts";
import type { LogprobRenderer } from "./logprobs.ts";

/** The finish_reason values Sluice sends: OpenAI's, plus `cancelled` and `error` unless strict. */
export type WireFinishReason = "stop" | "length" | "tool_calls" | "cancelled" | "error";

/**
 * OpenAI's finish_reason for each runtime reason. `cancelled` and `error` are Sluice's additions; `strict`
 * (the `strictFinishReason` option) sends `stop` for both, since strictly typed clients accept only OpenAI's
 * values (`sluice.reason` keeps the runtime's reason, and an `error` is followed by the error event anyway).
 */
export function finishReason(reason: FinishReason, strict = false): WireFinishReason {
  switch (reason) {
    case "eos":
    case "stop":
      return "stop";
    case "length":
      return "length";
    default:
      return strict ? "stop" : reason;
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

/**
 * What one streamed delta of one choice carries, for the general path (`deltaOf`): text, the log-probabilities
 * of its tokens, tool-call fragments (chat: OpenAI's `delta.tool_calls` entries, as given). Plain text takes
 * the fast path (`delta`) instead.
 */
export interface ChoiceDelta {
  content?: string;
  /** The runtime's entries for the delta's tokens; rendered only when the request asked for them. */
  logprobs?: readonly TokenLogprob[];
  toolCalls?: readonly unknown[];
}

/** What a choice's finish chunk may still carry, and a finish_reason that overrides the result's. */
export interface ChoiceRest extends ChoiceDelta {
  finishReason?: WireFinishReason;
}

/** One choice of a whole (non-streaming) response. */
export interface Choice {
  result: GenerationResult;
  extension: SluiceExtension;
  /**
   * The choice's text when it is not the result's own (completions' `echo` puts the prompt in front; chat:
   * null when the output was all tool calls).
   */
  text?: string | null;
  /** Chat: the message's `tool_calls` (OpenAI's shape), when the output was parsed into calls. */
  toolCalls?: readonly unknown[];
  /** Overrides the finish_reason derived from the result (e.g. `tool_calls`). */
  finishReason?: WireFinishReason;
}

/** The JSON of one kind of response (text completion or chat), built per request; `index`: the choice. */
export interface ResponseShape {
  /** An event before the first delta of a choice (chat: the assistant role), if the format has one. */
  opening(index: number): string | undefined;
  /**
   * A text delta. Built by concatenation: this runs once per token. `completionTokens`: the choice's tokens
   * so far, for continuous usage (see `ShapeInit.continuousUsage`); ignored without it.
   */
  delta(text: string, index: number, completionTokens?: number): string;
  /** Any delta (log-probabilities, tool calls): one JSON.stringify, off the plain text path. */
  deltaOf(index: number, delta: ChoiceDelta, completionTokens?: number): string;
  /**
   * The one chunk of a choice with `finish_reason`; `rest`: log-probabilities of tokens that reached no
   * text delta (a stop string's, a partial character's), or a last tool-call fragment. With continuous
   * usage its `usage` counts the choice's whole result.
   */
  finish(index: number, result: GenerationResult, extension: SluiceExtension, rest?: ChoiceRest): string;
  /** The usage chunk of `stream_options.include_usage`, over every choice. */
  usage(results: readonly GenerationResult[]): string;
  /** The whole non-streaming response; `choices[i]` is choice i. */
  body(choices: readonly Choice[]): unknown;
}

export interface ShapeInit {
  id: string;
  model: string;
  /** Unix seconds. */
  created: number;
  includeUsage: boolean;
  /**
   * vLLM's `stream_options.continuous_usage_stats` (taken with `include_usage` only, as vLLM does): every
   * streamed chunk carries `usage` instead of null, for its choice so far: the prompt's tokens and the
   * choice's completion tokens up to and including that chunk. As in vLLM each choice counts its own tokens
   * (with `n` > 1 a chunk's count is its choice's); the final usage chunk still sums them over all choices.
   */
  continuousUsage?: {
    /** The prompt's token count: asked for once, when the first chunk is built (the request is accepted). */
    promptTokens(): number;
  };
  /** Only OpenAI's finish_reason values (see `finishReason`). Defaults to false. */
  strictFinishReason?: boolean;
  /** Set when the request asked for log-probabilities: responses carry them in the route's shape. */
  logprobs?: LogprobRenderer;
}

/**
 * Usage over every choice of one request, as OpenAI counts it: the prompt once (every choice reads the same
 * one), the completion tokens of all choices.
 */
function usageOf(results: readonly GenerationResult[]) {
  const first = results[0]!.usage;
  let completionTokens = 0;
  for (const result of results) completionTokens += result.usage.completionTokens;
  return {
    prompt_tokens: first.promptTokens,
    completion_tokens: completionTokens,
    total_tokens: first.promptTokens + completionTokens,
    // OpenAI's field for prompt tokens served from the prompt cache.
    prompt_tokens_details: { cached_tokens: first.cachedTokens },
  };
}

/** Continuous usage of one response: the prompt counted once, a choice's completion tokens per chunk. */
class RunningUsage {
  readonly #source: NonNullable<ShapeInit["continuousUsage"]>;
  #prompt: number | undefined;

  constructor(source: NonNullable<ShapeInit["continuousUsage"]>) {
    this.#source = source;
  }

  get #promptTokens(): number {
    this.#prompt ??= this.#source.promptTokens();
    return this.#prompt;
  }

  of(completionTokens: number) {
    const prompt = this.#promptTokens;
    return {
      prompt_tokens: prompt,
      completion_tokens: completionTokens,
      total_tokens: prompt + completionTokens,
    };
  }

  /** The same as JSON text, by concatenation (the plain text path runs once per token). */
  json(completionTokens: number): string {
    const prompt = this.#promptTokens;
    return `{"prompt_tokens":${prompt},"completion_tokens":${completionTokens},"total_tokens":${prompt + completionTokens}}`;
  }
}

function runningUsage(init: ShapeInit): RunningUsage | undefined {
  const source = init.continuousUsage;
  return init.includeUsage && source !== undefined ? new RunningUsage(source) : undefined;
}

/**
 * A streamed chunk's `usage` field, for a choice with `completionTokens` so far: its running usage with
 * continuous usage, null with `include_usage` alone, absent otherwise.
 */
function chunkUsage(init: ShapeInit, running: RunningUsage | undefined) {
  if (running !== undefined) {
    return (completionTokens: number | undefined) => ({ usage: running.of(completionTokens ?? 0) });
  }
  const none = init.includeUsage ? { usage: null } : {};
  return (_completionTokens?: number) => none;
}

function envelope(init: ShapeInit, object: string) {
  return { id: init.id, object, created: init.created, model: init.model };
}

/** Per-index strings built once: choice 0 of a one-choice request costs what it always did. */
function perIndex(build: (index: number) => string): (index: number) => string {
  const built: string[] = [];
  return (index) => (built[index] ??= build(index));
}

/**
 * Timings and the extension: top-level for one choice (as always); with several, each choice carries its
 * own `sluice` object and the top level keeps choice 0's.
 */
function extensions(choices: readonly Choice[]) {
  return { timings: choices[0]!.result.timings, sluice: choices[0]!.extension };
}

export function completionShape(init: ShapeInit): ResponseShape {
  const head = JSON.stringify(envelope(init, "text_completion")).slice(0, -1);
  const usageNull = init.includeUsage ? ',"usage":null' : "";
  const strict = init.strictFinishReason === true;
  const prefix = `${head},"choices":[{"text":`;
  const running = runningUsage(init);
  const choiceEnd = perIndex((index) => `,"index":${index},"logprobs":null,"finish_reason":null}]`);
  const suffix = perIndex((index) => `${choiceEnd(index)}${usageNull}}`);
  const usageAt = chunkUsage(init, running);
  const renderer = init.logprobs;
  // Where each choice's next token starts in its text (the legacy shape's text_offset).
  const offsets: number[] = [];
  const legacy = (index: number, logprobs: readonly TokenLogprob[] | undefined) => {
    if (renderer === undefined) return null;
    const { logprobs: value, end } = renderer.legacy(logprobs ?? [], offsets[index] ?? 0);
    offsets[index] = end;
    return value;
  };
  const chunk = (
    choice: Record<string, unknown>,
    completionTokens: number | undefined,
    extra: Record<string, unknown> = {},
  ) =>
    JSON.stringify({
      ...envelope(init, "text_completion"),
      choices: [choice],
      ...usageAt(completionTokens),
      ...extra,
    });
  return {
    opening: () => undefined,
    delta: (text, index, completionTokens) =>
      running === undefined
        ? prefix + JSON.stringify(text) + suffix(index)
        : `${prefix}${JSON.stringify(text)}${choiceEnd(index)},"usage":${running.json(completionTokens ?? 0)}}`,
    deltaOf: (index, delta, completionTokens) =>
      chunk(
        {
          text: delta.content ?? "",
          index,
          logprobs: legacy(index, delta.logprobs),
          finish_reason: null,
        },
        completionTokens,
      ),
    finish: (index, result, extension, rest) =>
      chunk(
        {
          text: rest?.content ?? "",
          index,
          logprobs: rest?.logprobs?.length ? legacy(index, rest.logprobs) : null,
          finish_reason: rest?.finishReason ?? finishReason(result.reason, strict),
        },
        result.usage.completionTokens,
        { timings: result.timings, sluice: extension },
      ),
    usage: (results) =>
      JSON.stringify({ ...envelope(init, "text_completion"), choices: [], usage: usageOf(results) }),
    body: (choices) => ({
      ...envelope(init, "text_completion"),
      choices: choices.map((choice, index) => ({
        text: choice.text === undefined ? choice.result.text : (choice.text ?? ""),
        index,
        logprobs: renderer === undefined ? null : renderer.legacy(choice.result.logprobs ?? [], 0).logprobs,
        finish_reason: choice.finishReason ?? finishReason(choice.result.reason, strict),
        ...(choices.length > 1 ? { sluice: choice.extension } : {}),
      })),
      usage: usageOf(choices.map((c) => c.result)),
      ...extensions(choices),
    }),
  };
}

export function chatShape(init: ShapeInit): ResponseShape {
  const head = JSON.stringify({ ...envelope(init, "chat.completion.chunk"), system_fingerprint: null }).slice(
    0,
    -1,
  );
  const usageNull = init.includeUsage ? ',"usage":null' : "";
  const strict = init.strictFinishReason === true;
  const prefix = perIndex((index) => `${head},"choices":[{"index":${index},"delta":{"content":`);
  const choiceEnd = `},"logprobs":null,"finish_reason":null}]`;
  const suffix = `${choiceEnd}${usageNull}}`;
  const running = runningUsage(init);
  const usageAt = chunkUsage(init, running);
  const renderer = init.logprobs;
  const logprobsOf = (entries: readonly TokenLogprob[] | undefined) =>
    renderer === undefined ? null : { content: renderer.chat(entries ?? []), refusal: null };
  const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) =>
    JSON.stringify({
      ...envelope(init, "chat.completion.chunk"),
      system_fingerprint: null,
      choices,
      ...extra,
    });
  return {
    opening: (index) =>
      chunk(
        [{ index, delta: { role: "assistant", content: "" }, logprobs: null, finish_reason: null }],
        usageAt(0),
      ),
    delta: (text, index, completionTokens) =>
      running === undefined
        ? prefix(index) + JSON.stringify(text) + suffix
        : `${prefix(index)}${JSON.stringify(text)}${choiceEnd},"usage":${running.json(completionTokens ?? 0)}}`,
    deltaOf: (index, delta, completionTokens) =>
      chunk(
        [
          {
            index,
            delta: {
              ...(delta.content !== undefined ? { content: delta.content } : {}),
              ...(delta.toolCalls !== undefined ? { tool_calls: delta.toolCalls } : {}),
            },
            logprobs: delta.logprobs === undefined ? null : logprobsOf(delta.logprobs),
            finish_reason: null,
          },
        ],
        usageAt(completionTokens),
      ),
    finish: (index, result, extension, rest) =>
      chunk(
        [
          {
            index,
            delta: {
              ...(rest?.content ? { content: rest.content } : {}),
              ...(rest?.toolCalls !== undefined ? { tool_calls: rest.toolCalls } : {}),
            },
            logprobs: rest?.logprobs?.length ? logprobsOf(rest.logprobs) : null,
            finish_reason: rest?.finishReason ?? finishReason(result.reason, strict),
          },
        ],
        { ...usageAt(result.usage.completionTokens), timings: result.timings, sluice: extension },
      ),
    usage: (results) => chunk([], { usage: usageOf(results) }),
    body: (choices) => ({
      ...envelope(init, "chat.completion"),
      system_fingerprint: null,
      choices: choices.map((choice, index) => ({
        index,
        message: {
          role: "assistant",
          content: choice.text === undefined ? choice.result.text : choice.text,
          refusal: null,
          ...(choice.toolCalls !== undefined ? { tool_calls: choice.toolCalls } : {}),
        },
        logprobs: logprobsOf(choice.result.logprobs),
        finish_reason: choice.finishReason ?? finishReason(choice.result.reason, strict),
        ...(choices.length > 1 ? { sluice: choice.extension } : {}),
      })),
      usage: usageOf(choices.map((c) => c.result)),
      ...extensions(choices),
    }),
  };
}
