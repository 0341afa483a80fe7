import type { StreamChannel } from "../channel/index.ts";
import { SluiceError } from "../errors.ts";
import type { GenerationRequest, GenerationResult, TokenLogprob } from "../types.ts";
import type { AccessRecord } from "./accessLog.ts";
import type { Caller } from "./auth.ts";
import { sendJson } from "./httpErrors.ts";
import type { Choice, ResponseShape, SluiceExtension, WireFinishReason } from "./openaiShapes.ts";
import type { RouteContext } from "./router.ts";
import type { ServerContext } from "./ServerContext.ts";
import { SseWriter } from "./sse.ts";
import { type ToolCallOutput, ToolCallParser, type ToolCallParserOptions } from "./ToolCallParser.ts";
import { inWireTerms } from "./toGenerationRequest.ts";
import type { ToolCallDelta } from "./toolCalls.ts";

export interface GenerationPlan {
  /** The response's id: the `X-Request-Id` header, every chunk's `id`, choice 0's runtime request id. */
  id: string;
  /**
   * One runtime request per choice (`n`), each with its own unique id; choice i is `requests[i]`. Choice 0's
   * id is the response's.
   */
  requests: (GenerationRequest & { id: string })[];
  stream: boolean;
  includeUsage: boolean;
  shape: ResponseShape;
  /** Text put in front of every choice's own (completions' `echo`: the prompt). */
  echo?: string;
  /** The request asked for log-probabilities: deltas carry them (off the plain text path). */
  logprobs: boolean;
  /** Runtime field names → the body's, for refusals (see `inWireTerms`). */
  wireNames: Record<string, string>;
  /**
   * Chat with tools: each choice's text is read by its own `ToolCallParser`, made with these; its calls go out
   * as `tool_calls` and a choice with calls that ended by itself finishes with `tool_calls`.
   */
  toolCalls?: ToolCallParserOptions;
}

/** Cancel reasons the server passes to the channel (visible in logs and to observers). */
export const ServerCancel = {
  disconnected: "client disconnected",
  deadline: "server deadline",
  shutdown: "server shutting down",
  /** Another choice of the same request was cancelled (a DELETE names the request, not one choice). */
  sibling: "another choice of the request was cancelled",
  /** `DELETE /v1/requests/:id`. */
  deleted: "cancelled by DELETE /v1/requests/:id",
} as const;

/**
 * The end record of a cancelled request comes when its slot is free: at most one step after the terminal
 * chunk. Bounded anyway so that a stalled engine cannot hold a response open forever.
 */
const RECORD_WAIT_MS = 30_000;

/**
 * Runs the generations of one HTTP response (one per choice), streaming or not. The client going away at any
 * point (queued, prefilling, decoding, holding back a stop-string prefix, backed up) cancels every choice at
 * once, and the runtime frees their slots within one step. A cancel of one choice (DELETE of the request's
 * id, which is choice 0's) cancels all of them: the request is one thing to its client.
 */
export async function serveGeneration(
  server: ServerContext,
  { req, res, caller, access }: RouteContext,
  plan: GenerationPlan,
): Promise<void> {
  if (server.closing)
    throw new SluiceError("runtime_closed", "The server is shutting down; retry elsewhere.");
  access.id = plan.id;
  const channels = submit(server, plan, caller.key);
  const cancelAll = (reason: string) => {
    for (const channel of channels) channel.cancel(reason);
  };
  if (channels.length > 1) {
    for (const channel of channels) {
      void channel.result.then((result) => {
        if (result.reason === "cancelled") cancelAll(ServerCancel.sibling);
      });
    }
  }
  // The response's close, not the request's: the request closes as soon as its body is read.
  const onClose = () => {
    if (!res.writableFinished) cancelAll(ServerCancel.disconnected);
  };
  res.on("close", onClose);
  if (res.destroyed || req.socket.destroyed) onClose();
  const { requestTimeoutMs } = server.options;
  const deadline =
    requestTimeoutMs === undefined
      ? undefined
      : setTimeout(() => cancelAll(ServerCancel.deadline), requestTimeoutMs);
  try {
    if (plan.stream) await stream(server, res, channels, plan, access);
    else await respond(server, res, channels, plan, access);
  } finally {
    clearTimeout(deadline);
    res.off("close", onClose);
    for (const request of plan.requests) server.generations.delete(request.id);
  }
}

/**
 * Submits every choice's request. A refusal (a bad field, a full queue) cancels the choices already
 * submitted, so a request is accepted whole or not at all; the refusal speaks the body's field names.
 */
function submit(server: ServerContext, plan: GenerationPlan, owner: Caller["key"]): StreamChannel[] {
  const channels: StreamChannel[] = [];
  try {
    for (const request of plan.requests) {
      const channel = server.runtime.generate(request);
      channels.push(channel);
      server.generations.set(request.id, {
        channel,
        owner,
        ended: server.runtime.endRecord(request.id),
        cancel: (reason) => cancelChoices(channels, reason),
      });
    }
  } catch (error) {
    for (const channel of channels) channel.cancel(ServerCancel.disconnected);
    for (const request of plan.requests) server.generations.delete(request.id);
    throw inWireTerms(error, plan.wireNames);
  }
  return channels;
}

/** Cancels every choice still running; true when there was one. */
function cancelChoices(channels: readonly StreamChannel[], reason: string): boolean {
  let running = false;
  for (const channel of channels) {
    if (channel.finished) continue;
    running = true;
    channel.cancel(reason);
  }
  return running;
}

async function stream(
  server: ServerContext,
  res: RouteContext["res"],
  channels: readonly StreamChannel[],
  plan: GenerationPlan,
  access: AccessRecord,
): Promise<void> {
  const sse = new SseWriter(res, server.options.keepAliveMs, { "X-Request-Id": plan.id });
  server.metrics.streamOpened();
  try {
    const results = await Promise.all(
      channels.map((channel, index) => streamChoice(server, sse, channel, index, plan, access)),
    );
    record(access, results);
    if (!sse.open) return;
    if (plan.includeUsage) sse.data(plan.shape.usage(results));
    const failed = results.find((result) => result.reason === "error");
    if (failed !== undefined) {
      sse.data(
        JSON.stringify({
          error: {
            message: failed.error?.message ?? "The generation failed.",
            type: "server_error",
            code: failed.error?.code ?? "engine_error",
          },
        }),
      );
    }
    sse.end();
  } finally {
    sse.dispose();
    server.metrics.streamClosed();
  }
}

/**
 * One choice's events on the shared stream: its opening, its deltas (interleaved with the other choices'
 * as they come), its one finish chunk. Resolves with its result.
 */
async function streamChoice(
  server: ServerContext,
  sse: SseWriter,
  channel: StreamChannel,
  index: number,
  plan: GenerationPlan,
  access: AccessRecord,
): Promise<GenerationResult> {
  const { shape } = plan;
  const opening = shape.opening(index);
  if (opening !== undefined) sse.data(opening);
  if (plan.echo) sse.data(shape.delta(plan.echo, index, 0));
  // Log-probabilities of tokens whose text has not gone out yet (a partial character, a control token).
  let pending: TokenLogprob[] | undefined;
  const parser = plan.toolCalls === undefined ? undefined : new ToolCallParser(plan.toolCalls);
  let calls = 0;
  // The choice's tokens so far, for continuous usage: a chunk held back is counted by the next one sent.
  let tokens = 0;
  for await (const chunk of channel) {
    if (!sse.open) continue;
    tokens += chunk.tokenIds.length;
    let sent: boolean;
    if (parser !== undefined) {
      if (plan.logprobs && chunk.logprobs?.length) (pending ??= []).push(...chunk.logprobs);
      if (chunk.text.length === 0) continue;
      const out = parser.push(chunk.text);
      calls += countCalls(out.calls);
      // Held back (a possible tag start, a call's head): its tokens' log-probabilities wait with it.
      if (out.content === "" && out.calls.length === 0) continue;
      sent = sendParsed(sse, shape, index, out, pending, tokens);
      pending = undefined;
    } else if (plan.logprobs) {
      if (chunk.text.length === 0) {
        if (chunk.logprobs?.length) (pending ??= []).push(...chunk.logprobs);
        continue;
      }
      const logprobs =
        pending === undefined ? (chunk.logprobs ?? []) : [...pending, ...(chunk.logprobs ?? [])];
      pending = undefined;
      sent = sse.data(shape.deltaOf(index, { content: chunk.text, logprobs }, tokens));
    } else {
      if (chunk.text.length === 0) continue;
      sent = sse.data(shape.delta(chunk.text, index, tokens));
    }
    // Backed up: stop pulling. The channel merges what the runtime produces meanwhile, so a slow client
    // costs one growing string, not a queue of events.
    if (!sent) await sse.writable();
  }
  const result = await channel.result;
  if (!sse.open) return result;
  let finishReason: WireFinishReason | undefined;
  if (parser !== undefined) {
    // What the parser held back (a possible tag start, trailing whitespace, a call without its close tag).
    const out = parser.end();
    calls += countCalls(out.calls);
    if (out.content !== "" || out.calls.length > 0) {
      sendParsed(sse, shape, index, out, pending, tokens);
      pending = undefined;
    }
    finishReason = toolCallsFinish(calls, result);
  }
  const extension = await extensionOf(server, result, access);
  if (!sse.open) return result;
  const rest = {
    ...(pending === undefined ? {} : { logprobs: pending }),
    ...(finishReason === undefined ? {} : { finishReason }),
  };
  sse.data(shape.finish(index, result, extension, Object.keys(rest).length > 0 ? rest : undefined));
  return result;
}

/** Calls a batch of deltas announces (the first delta of each call carries its id). */
function countCalls(deltas: readonly ToolCallDelta[]): number {
  let n = 0;
  for (const delta of deltas) if (delta.id !== undefined) n++;
  return n;
}

/**
 * A choice's parsed output as OpenAI streams it: its content in one delta, then each tool-call piece in a
 * delta of its own (a call's first carries its index, id, type and name with `arguments: ""`, the next ones
 * fragments of its arguments). `logprobs`, when asked for, ride with the first of them; `completionTokens`
 * (continuous usage) is the choice's count with all of them. Returns whether the socket took everything
 * (false: backed up).
 */
function sendParsed(
  sse: SseWriter,
  shape: ResponseShape,
  index: number,
  out: ToolCallOutput,
  logprobs: readonly TokenLogprob[] | undefined,
  completionTokens: number,
): boolean {
  let carried = logprobs;
  let sent = true;
  if (out.content !== "") {
    sent = sse.data(
      shape.deltaOf(
        index,
        { content: out.content, ...(carried ? { logprobs: carried } : {}) },
        completionTokens,
      ),
    );
    carried = undefined;
  }
  for (const call of out.calls) {
    sent =
      sse.data(
        shape.deltaOf(
          index,
          { toolCalls: [call], ...(carried ? { logprobs: carried } : {}) },
          completionTokens,
        ),
      ) && sent;
    carried = undefined;
  }
  return sent;
}

/** `tool_calls` for a choice that called functions and ended by itself (end of generation, a stop). */
function toolCallsFinish(calls: number, result: GenerationResult): WireFinishReason | undefined {
  return calls > 0 && (result.reason === "eos" || result.reason === "stop") ? "tool_calls" : undefined;
}

async function respond(
  server: ServerContext,
  res: RouteContext["res"],
  channels: readonly StreamChannel[],
  plan: GenerationPlan,
  access: AccessRecord,
): Promise<void> {
  const results = await Promise.all(channels.map((channel) => channel.result));
  record(access, results);
  if (res.destroyed) return;
  const extensions = await Promise.all(results.map((result) => extensionOf(server, result, access)));
  if (res.destroyed) return;
  const headers = { "X-Request-Id": plan.id };
  const failed = results.find((result) => result.reason === "error");
  if (failed !== undefined) {
    sendJson(
      res,
      500,
      {
        error: {
          message: failed.error?.message ?? "The generation failed.",
          type: "server_error",
          param: null,
          code: failed.error?.code ?? "engine_error",
        },
        id: plan.id,
      },
      headers,
    );
    return;
  }
  const choices = results.map(
    (result, i): Choice => ({
      result,
      extension: extensions[i]!,
      ...(plan.echo ? { text: plan.echo + result.text } : {}),
      ...(plan.toolCalls !== undefined ? parsedChoice(result, plan.toolCalls) : {}),
    }),
  );
  sendJson(res, 200, plan.shape.body(choices), headers);
}

/**
 * A whole choice read for tool calls: `content` null when the output was all calls (as OpenAI sends it),
 * `tool_calls` when there were any, and `finish_reason: "tool_calls"` when it then ended by itself.
 */
function parsedChoice(
  result: GenerationResult,
  options: ToolCallParserOptions,
): Pick<Choice, "text" | "toolCalls" | "finishReason"> {
  const parser = new ToolCallParser(options);
  const content = parser.push(result.text).content;
  const end = parser.end();
  const text = content + end.content;
  if (end.toolCalls.length === 0) return { text };
  const finishReason = toolCallsFinish(end.toolCalls.length, result);
  return {
    text: text === "" ? null : text,
    toolCalls: end.toolCalls,
    ...(finishReason !== undefined ? { finishReason } : {}),
  };
}

/** For a cancel, waits for the slot to be free so the client learns the measured cancel latency. */
async function extensionOf(
  server: ServerContext,
  result: GenerationResult,
  access: AccessRecord,
): Promise<SluiceExtension> {
  const extension: SluiceExtension = {
    reason: result.reason,
    ...(result.stop !== undefined ? { stop: result.stop } : {}),
    timings: result.timings,
  };
  if (result.reason !== "cancelled") return extension;
  const ended = server.generations.get(result.id)?.ended;
  const cancel = ended === undefined ? undefined : (await withinMs(ended, RECORD_WAIT_MS))?.cancel;
  if (cancel !== undefined) {
    access.cancelMs = Math.max(access.cancelMs ?? 0, cancel.msToFree);
    extension.cancel = {
      stepsToFree: cancel.stepsToFree,
      msToFree: cancel.msToFree,
      msToTerminal: cancel.msToTerminal,
    };
  }
  return extension;
}

/**
 * The request's figures for the access log: the prompt once, the completion tokens of every choice, choice
 * 0's time to first token and finish reason.
 */
function record(access: AccessRecord, results: readonly GenerationResult[]): void {
  const first = results[0]!;
  access.promptTokens = first.usage.promptTokens;
  access.completionTokens = results.reduce((sum, result) => sum + result.usage.completionTokens, 0);
  access.cachedTokens = first.usage.cachedTokens;
  if (first.usage.completionTokens > 0) access.ttftMs = first.timings.firstTokenMs;
  access.finishReason = first.reason;
}

/** The promise's value, or undefined when it takes longer than `ms` (a bound, never a wait for its own sake). */
function withinMs<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}
