import { randomUUID } from "node:crypto";
import type { z } from "zod";
import type { GenerationRequest } from "../../types.ts";
import { readJsonBody } from "../body.ts";
import { renderChatRequest, toolCallPlan } from "../chatRequest.ts";
import { badRequest, fromZodError } from "../httpErrors.ts";
import { LogprobRenderer } from "../logprobs.ts";
import { chatShape, completionShape, type ShapeInit } from "../openaiShapes.ts";
import type { Handler, RouteContext } from "../router.ts";
import type { ServerContext } from "../ServerContext.ts";
import { type CompletionRequestBody, chatRequestSchema, completionRequestSchema, MAX_N } from "../schemas.ts";
import { serveGeneration } from "../serveGeneration.ts";
import { checkModel, samplingOf, wireNames } from "../toGenerationRequest.ts";

/** Most stop strings the runtime takes. */
const MAX_STOPS = 16;

/** Choices per slot a request may ask for: more would only queue behind each other. */
const CHOICES_PER_SLOT = 4;

/** POST /v1/completions */
export function completionsRoute(server: ServerContext): Handler {
  return async (context) => {
    const { body, model } = await readRequest(server, context, completionRequestSchema);
    const n = choicesOf(server, body.n);
    const id = `cmpl-${randomUUID()}`;
    // A one-element batch is the same single prompt.
    const prompt =
      Array.isArray(body.prompt) && body.prompt.length === 1 && typeof body.prompt[0] !== "number"
        ? body.prompt[0]!
        : (body.prompt as string | number[]);
    const includeUsage = body.stream_options?.include_usage === true;
    const continuousUsage = continuousUsageOf(body, () => promptTokenCount(server, prompt));
    const skipSpecial = body.skip_special_tokens ?? true;
    const logprobs = body.logprobs ?? undefined;
    const request: GenerationRequest = {
      ...samplingOf(body),
      prompt,
      ...(body.max_tokens != null ? { maxTokens: body.max_tokens } : {}),
      ...(logprobs !== undefined ? { logprobs } : {}),
    };
    await serveGeneration(server, context, {
      id,
      requests: fanOut(request, id, n),
      stream: body.stream === true,
      includeUsage,
      shape: completionShape({
        id,
        model,
        created: unixNow(),
        includeUsage,
        ...continuousUsage,
        strictFinishReason: server.options.strictFinishReason,
        ...(logprobs !== undefined ? { logprobs: renderer(server, skipSpecial) } : {}),
      }),
      ...(body.echo === true ? { echo: echoOf(server, prompt, skipSpecial) } : {}),
      logprobs: logprobs !== undefined,
      wireNames: wireNames(body),
    });
  };
}

/** POST /v1/chat/completions */
export function chatCompletionsRoute(server: ServerContext): Handler {
  return async (context) => {
    const { body, model } = await readRequest(server, context, chatRequestSchema);
    const n = choicesOf(server, body.n);
    const id = `chatcmpl-${randomUUID()}`;
    const { prompt: chat, tools } = renderChatRequest(server, body);
    const toolCalls = toolCallPlan(server, body, tools);
    const sampling = samplingOf(body);
    const userStops = typeof sampling.stop === "string" ? [sampling.stop] : (sampling.stop ?? []);
    // The caller's stop strings first: the format's own only fill what room is left.
    const stop = [...userStops, ...chat.stop].slice(0, MAX_STOPS);
    const stopTokenIds = [...new Set([...(sampling.stopTokenIds ?? []), ...chat.stopTokenIds])];
    const maxTokens = body.max_completion_tokens ?? body.max_tokens;
    const includeUsage = body.stream_options?.include_usage === true;
    // The rendered chat is token ids: the runtime reads exactly these.
    const continuousUsage = continuousUsageOf(body, () => chat.tokens.length);
    const logprobs = body.logprobs === true ? (body.top_logprobs ?? 0) : undefined;
    const request: GenerationRequest = {
      ...sampling,
      prompt: chat.tokens,
      stop,
      stopTokenIds,
      ...(maxTokens != null ? { maxTokens } : {}),
      ...(logprobs !== undefined ? { logprobs } : {}),
      ...(toolCalls?.grammar !== undefined ? { grammar: toolCalls.grammar } : {}),
    };
    await serveGeneration(server, context, {
      id,
      requests: fanOut(request, id, n),
      stream: body.stream === true,
      includeUsage,
      ...(toolCalls !== undefined ? { toolCalls: toolCalls.parser } : {}),
      shape: chatShape({
        id,
        model,
        created: unixNow(),
        includeUsage,
        ...continuousUsage,
        strictFinishReason: server.options.strictFinishReason,
        ...(logprobs !== undefined ? { logprobs: renderer(server, body.skip_special_tokens ?? true) } : {}),
      }),
      logprobs: logprobs !== undefined,
      // The grammar is the tool calls' when there is one (the schema refuses a response_format with it).
      wireNames: { ...wireNames(body), ...(toolCalls?.grammar !== undefined ? { grammar: "tools" } : {}) },
    });
  };
}

/**
 * `n`, checked against this server: at most `CHOICES_PER_SLOT` per slot (and `MAX_N`), since choices beyond
 * that only wait for each other's slots.
 */
function choicesOf(server: ServerContext, n: number | null | undefined): number {
  const wanted = n ?? 1;
  const most = Math.min(MAX_N, CHOICES_PER_SLOT * server.runtime.engine.info.slots);
  if (wanted > most) {
    throw badRequest(
      "invalid_request",
      `n is ${wanted}, but this server gives at most ${most} choices per request (${CHOICES_PER_SLOT} per slot, ${server.runtime.engine.info.slots} slots); ask for fewer or send several requests.`,
      "n",
    );
  }
  return wanted;
}

/**
 * One runtime request per choice: choice 0 has the response's id, choice i the id `<id>-<i>`. With a seed,
 * choice i samples with seed + i (mod 2^32), so choices differ yet the whole response is reproducible.
 */
function fanOut(request: GenerationRequest, id: string, n: number): (GenerationRequest & { id: string })[] {
  return Array.from({ length: n }, (_, i) => ({
    ...request,
    id: i === 0 ? id : `${id}-${i}`,
    ...(request.seed !== undefined && i > 0 ? { seed: (request.seed + i) % 2 ** 32 } : {}),
  }));
}

/**
 * vLLM's `stream_options.continuous_usage_stats`: usage on every chunk of a stream that asked for
 * `include_usage` too (vLLM ignores it otherwise; so does Sluice). `promptTokens` is called once, after the
 * request is accepted.
 */
function continuousUsageOf(
  body: Pick<CompletionRequestBody, "stream" | "stream_options">,
  promptTokens: () => number,
): Pick<ShapeInit, "continuousUsage"> {
  const options = body.stream_options;
  const on =
    body.stream === true && options?.include_usage === true && options.continuous_usage_stats === true;
  return on ? { continuousUsage: { promptTokens } } : {};
}

/**
 * The prompt's token count as the runtime reads it: token ids as given; text tokenized as the runtime does
 * (control-token text as plain text, BOS in front when the model wants one). Called after the runtime accepted
 * the prompt, so the text fits the context.
 */
function promptTokenCount(server: ServerContext, prompt: string | readonly number[]): number {
  if (typeof prompt !== "string") return prompt.length;
  const { engine } = server.runtime;
  const bos = engine.info.addBos && engine.info.vocabulary.bos !== undefined ? 1 : 0;
  return bos + engine.tokenize(prompt, { special: false }).length;
}

function renderer(server: ServerContext, skipSpecialTokens: boolean): LogprobRenderer {
  return new LogprobRenderer(server.runtime.engine.info.vocabulary, skipSpecialTokens);
}

/**
 * The prompt as text, for `echo`: a text prompt as sent; token ids as their bytes (UTF-8, invalid sequences
 * as U+FFFD), control tokens left out unless `skip_special_tokens` is false, as in generated text.
 */
function echoOf(server: ServerContext, prompt: string | readonly number[], skipSpecial: boolean): string {
  if (typeof prompt === "string") return prompt;
  const { vocabulary } = server.runtime.engine.info;
  const parts = prompt
    .filter((id) => !(skipSpecial && vocabulary.isSpecial(id)))
    .map((id) => vocabulary.bytesOf(id));
  return new TextDecoder().decode(Buffer.concat(parts));
}

/** The request body, parsed by its schema, for the model this server serves (4xx otherwise). */
async function readRequest<T extends { model?: string | undefined }>(
  server: ServerContext,
  context: RouteContext,
  schema: z.ZodType<T>,
): Promise<{ body: T; model: string }> {
  const parsed = schema.safeParse(await readJsonBody(context.req, server.options.maxBodyBytes));
  if (!parsed.success) throw fromZodError(parsed.error);
  return { body: parsed.data, model: checkModel(server, parsed.data.model) };
}

function unixNow(): number {
  return Math.floor(Date.now() / 1000);
}
