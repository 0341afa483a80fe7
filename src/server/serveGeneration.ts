import type { StreamChannel } from "../channel/index.ts";
import { SluiceError } from "../errors.ts";
import type { GenerationRequest, GenerationResult } from "../types.ts";
import type { AccessRecord } from "./accessLog.ts";
import { sendJson } from "./httpErrors.ts";
import type { ResponseShape, SluiceExtension } from "./openaiShapes.ts";
import type { RouteContext } from "./router.ts";
import type { ServerContext } from "./ServerContext.ts";
import { SseWriter } from "./sse.ts";

export interface GenerationPlan {
  request: GenerationRequest & { id: string };
  stream: boolean;
  includeUsage: boolean;
  shape: ResponseShape;
}

/** Cancel reasons the server passes to the channel (visible in logs and to observers). */
export const ServerCancel = {
  disconnected: "client disconnected",
  deadline: "server deadline",
  shutdown: "server shutting down",
} as const;

/**
 * The end record of a cancelled request comes when its slot is free: at most one step after the terminal
 * chunk. Bounded anyway so that a stalled engine cannot hold a response open forever.
 */
const RECORD_WAIT_MS = 30_000;

/**
 * Runs one generation for one HTTP response, streaming or not. The client going away at any point (queued,
 * prefilling, decoding, holding back a stop-string prefix, backed up) cancels the generation at once, and
 * the runtime frees its slot within one step.
 */
export async function serveGeneration(
  server: ServerContext,
  { req, res, caller, access }: RouteContext,
  plan: GenerationPlan,
): Promise<void> {
  if (server.closing)
    throw new SluiceError("runtime_closed", "The server is shutting down; retry elsewhere.");
  const { id } = plan.request;
  access.id = id;
  const channel = server.runtime.generate(plan.request);
  server.generations.set(id, { channel, owner: caller.key, ended: server.runtime.endRecord(id) });
  // The response's close, not the request's: the request closes as soon as its body is read.
  const onClose = () => {
    if (!res.writableFinished) channel.cancel(ServerCancel.disconnected);
  };
  res.on("close", onClose);
  if (res.destroyed || req.socket.destroyed) onClose();
  const { requestTimeoutMs } = server.options;
  const deadline =
    requestTimeoutMs === undefined
      ? undefined
      : setTimeout(() => channel.cancel(ServerCancel.deadline), requestTimeoutMs);
  try {
    if (plan.stream) await stream(server, res, channel, plan, access);
    else await respond(server, res, channel, plan, access);
  } finally {
    clearTimeout(deadline);
    res.off("close", onClose);
    server.generations.delete(id);
  }
}

async function stream(
  server: ServerContext,
  res: RouteContext["res"],
  channel: StreamChannel,
  plan: GenerationPlan,
  access: AccessRecord,
): Promise<void> {
  const { shape } = plan;
  const sse = new SseWriter(res, server.options.keepAliveMs, { "X-Request-Id": plan.request.id });
  server.metrics.streamOpened();
  try {
    const opening = shape.opening();
    if (opening !== undefined) sse.data(opening);
    for await (const chunk of channel) {
      if (chunk.text.length === 0 || !sse.open) continue;
      // Backed up: stop pulling. The channel merges what the runtime produces meanwhile, so a slow client
      // costs one growing string, not a queue of events.
      if (!sse.data(shape.delta(chunk.text))) await sse.writable();
    }
    const result = await channel.result;
    record(access, result);
    if (!sse.open) return;
    const extension = await extensionOf(server, result, access);
    if (!sse.open) return;
    sse.data(shape.finish(result, extension));
    if (plan.includeUsage) sse.data(shape.usage(result));
    if (result.reason === "error") {
      sse.data(
        JSON.stringify({
          error: {
            message: result.error?.message ?? "The generation failed.",
            type: "server_error",
            code: result.error?.code ?? "engine_error",
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

async function respond(
  server: ServerContext,
  res: RouteContext["res"],
  channel: StreamChannel,
  plan: GenerationPlan,
  access: AccessRecord,
): Promise<void> {
  const result = await channel.result;
  record(access, result);
  if (res.destroyed) return;
  const extension = await extensionOf(server, result, access);
  if (res.destroyed) return;
  const headers = { "X-Request-Id": plan.request.id };
  if (result.reason === "error") {
    sendJson(
      res,
      500,
      {
        error: {
          message: result.error?.message ?? "The generation failed.",
          type: "server_error",
          param: null,
          code: result.error?.code ?? "engine_error",
        },
        id: plan.request.id,
      },
      headers,
    );
    return;
  }
  sendJson(res, 200, plan.shape.body(result, extension), headers);
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
    access.cancelMs = cancel.msToFree;
    extension.cancel = {
      stepsToFree: cancel.stepsToFree,
      msToFree: cancel.msToFree,
      msToTerminal: cancel.msToTerminal,
    };
  }
  return extension;
}

/** The request's figures for the access log. */
function record(access: AccessRecord, result: GenerationResult): void {
  access.promptTokens = result.usage.promptTokens;
  access.completionTokens = result.usage.completionTokens;
  access.cachedTokens = result.usage.cachedTokens;
  if (result.usage.completionTokens > 0) access.ttftMs = result.timings.firstTokenMs;
  access.finishReason = result.reason;
}

/** The promise's value, or undefined when it takes longer than `ms` (a bound, never a wait for its own sake). */
function withinMs<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}
