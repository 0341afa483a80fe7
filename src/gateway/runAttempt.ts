import { createParser } from "eventsource-parser";
import type { ChunkError } from "../types.ts";
import { readUpstreamEvent, type UpstreamFinish, type UpstreamUsage } from "./upstreamEvent.ts";

/**
 * Why an attempt on one upstream failed, as the channel's error code. Every one of them is an upstream
 * failure (the gateway answers 502/503/504), except `upstream_rejected`: the upstream refused the request
 * itself (a 4xx), which is the client's to fix.
 */
export type UpstreamErrorCode =
  /** Nothing answered (connection refused or reset before the response), or no upstream is eligible. */
  | "upstream_unavailable"
  /** The upstream is at capacity (429). */
  | "upstream_busy"
  /** A 5xx, or an error event inside the stream. */
  | "upstream_error"
  /** A 4xx other than 429: the request is wrong for that upstream. */
  | "upstream_rejected"
  /** No response headers within `headersTimeoutMs`, or a silence longer than `idleTimeoutMs`. */
  | "upstream_timeout"
  /** The stream ended (connection closed, `[DONE]`) before a finish reason. */
  | "upstream_disconnected"
  /** The upstream cancelled the generation itself (it is shutting down, or its own deadline passed). */
  | "upstream_cancelled"
  /** Not an event stream, an event that is not JSON, or JSON of the wrong shape. */
  | "upstream_bad_response";

export interface UpstreamFailure extends ChunkError {
  code: UpstreamErrorCode;
  /** Whether another upstream may be tried (only ever done before the first token). */
  retryable: boolean;
  /** Whether the failure says something about the upstream's health (counts toward its circuit breaker). */
  countsAgainstUpstream: boolean;
  /** The upstream's HTTP status, when it answered with an error. */
  status?: number;
  /** The upstream's own error body (OpenAI's `{ error: {...} }`), when it sent one. */
  body?: unknown;
}

export type AttemptOutcome =
  | { kind: "finished"; finish: UpstreamFinish; usage?: UpstreamUsage }
  | { kind: "failed"; failure: UpstreamFailure }
  /** The consumer cancelled: the request was aborted. */
  | { kind: "aborted" };

export interface AttemptRequest {
  /** The upstream's base URL (`http://host:port`, no trailing slash). */
  baseUrl: string;
  /** `/v1/chat/completions` or `/v1/completions`. */
  path: string;
  /** Sent as `Authorization: Bearer <key>`. */
  apiKey?: string;
  /** The JSON body, already with `stream: true`. */
  body: string;
  /** The consumer's cancel: aborting it aborts the upstream request at once. */
  signal: AbortSignal;
  headersTimeoutMs: number;
  idleTimeoutMs: number;
}

export interface AttemptSink {
  /** The upstream answered 200 with an event stream. */
  accepted(): void;
  delta(text: string, tokenIds: readonly number[]): void;
  /** The model name the upstream reported (first one seen). */
  model?(name: string): void;
}

/** How much of an error body is read to learn what went wrong. */
const ERROR_BODY_BYTES = 64 * 1024;

/**
 * One request to one upstream, streamed: resolves with how it ended and never rejects. The response body
 * is bytes: a streaming TextDecoder turns them into text whatever the network split (a character cut
 * between two reads is held until its end arrives; invalid bytes become U+FFFD), eventsource-parser cuts
 * the text into events, and each event is read as an OpenAI chunk. Timers: no response headers within
 * `headersTimeoutMs`, or no byte at all for `idleTimeoutMs` (SSE comments count: Sluice sends keep-alives
 * while it reads a long prompt), fail it with `upstream_timeout`. The finish reason alone does not end it:
 * usage follows (the upstream is asked for it), then `[DONE]`; a stream that closes after the finish reason
 * but before `[DONE]` still counts as finished.
 */
export async function runAttempt(request: AttemptRequest, sink: AttemptSink): Promise<AttemptOutcome> {
  const controller = new AbortController();
  let timedOut: string | undefined;
  const onAbort = () => controller.abort(request.signal.reason);
  if (request.signal.aborted) return { kind: "aborted" };
  request.signal.addEventListener("abort", onAbort, { once: true });
  let timer = setTimeout(() => {
    timedOut = `no response headers within ${request.headersTimeoutMs} ms (headersTimeoutMs)`;
    controller.abort(timedOut);
  }, request.headersTimeoutMs);
  const ended = (failure: UpstreamFailure | undefined): AttemptOutcome => {
    if (request.signal.aborted) return { kind: "aborted" };
    if (timedOut !== undefined) return { kind: "failed", failure: timeout(timedOut) };
    return failure === undefined ? { kind: "aborted" } : { kind: "failed", failure };
  };
  try {
    let response: Response;
    try {
      response = await fetch(`${request.baseUrl}${request.path}`, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          accept: "text/event-stream",
          ...(request.apiKey !== undefined ? { authorization: `Bearer ${request.apiKey}` } : {}),
        },
        body: request.body,
        signal: controller.signal,
      });
    } catch (error) {
      return ended(unavailable(`cannot reach ${request.baseUrl}: ${causeOf(error)}`));
    }
    if (response.status !== 200) {
      const body = await readErrorBody(response);
      return ended(statusFailure(response.status, body, request.baseUrl));
    }
    const type = response.headers.get("content-type") ?? "";
    if (!type.includes("text/event-stream") || response.body === null) {
      await response.body?.cancel().catch(() => {});
      return ended(badResponse(`answered 200 with ${type || "no content type"}, not an event stream`));
    }
    sink.accepted();
    const idle = () => {
      timedOut = `silent for ${request.idleTimeoutMs} ms (idleTimeoutMs)`;
      controller.abort(timedOut);
    };
    clearTimeout(timer);
    timer = setTimeout(idle, request.idleTimeoutMs);
    return await readEventStream(response.body, sink, () => timer.refresh(), ended);
  } finally {
    clearTimeout(timer);
    request.signal.removeEventListener("abort", onAbort);
  }
}

/**
 * Reads an upstream's event stream (bytes, split anywhere) to its outcome, calling `sink.delta` for each
 * text delta before the finish reason. `activity` is called on every read (the idle timer); `ended` turns a
 * failure into the outcome (by default, the failure itself). Exported for the decoder's property tests.
 */
export async function readEventStream(
  body: ReadableStream<Uint8Array>,
  sink: AttemptSink,
  activity: () => void = () => {},
  ended: (failure: UpstreamFailure | undefined) => AttemptOutcome = (failure) =>
    failure === undefined ? { kind: "aborted" } : { kind: "failed", failure },
): Promise<AttemptOutcome> {
  const decoder = new TextDecoder("utf-8");
  let finish: UpstreamFinish | undefined;
  let usage: UpstreamUsage | undefined;
  let done = false;
  let failure: UpstreamFailure | undefined;
  let named = false;
  const parser = createParser({
    onEvent: ({ data }) => {
      if (done || failure !== undefined) return;
      const event = readUpstreamEvent(data);
      switch (event.kind) {
        case "done":
          done = true;
          return;
        case "malformed":
          failure = badResponse(event.why);
          return;
        case "error":
          // Sluice sends its finish chunk (reason error) and then the error itself: keep the error's words.
          failure = upstreamError(`${event.error.code}: ${event.error.message}`);
          return;
        case "chunk":
          if (!named && event.model !== undefined && sink.model !== undefined) {
            named = true;
            sink.model(event.model);
          }
          // Text after the finish reason would contradict it; an upstream that sends it is ignored.
          if (finish === undefined) sink.delta(event.text, event.tokenIds);
          if (event.finish !== undefined) finish ??= event.finish;
          if (event.usage !== undefined) usage = event.usage;
      }
    },
    onError: (error) => {
      if (error.type === "max-buffer-size-exceeded") failure ??= badResponse(error.message);
    },
  });
  const reader = body.getReader();
  try {
    for (;;) {
      let read: ReadableStreamReadResult<Uint8Array>;
      try {
        read = await reader.read();
      } catch (error) {
        // Cut mid-stream: by the consumer (aborted), a timer, or the network.
        if (finish !== undefined) break;
        return ended(disconnected(`the connection broke mid-stream (${causeOf(error)})`));
      }
      activity();
      if (read.done) {
        parser.feed(decoder.decode());
        // A last event without its blank line still counts.
        parser.reset({ consume: true });
        break;
      }
      parser.feed(decoder.decode(read.value, { stream: true }));
      // An error finish is followed by the error event that says what went wrong: wait for it.
      const complete = finish !== undefined && usage !== undefined && finish.reason !== "error";
      if (failure !== undefined || done || complete) break;
    }
  } finally {
    // Whatever is left (the [DONE] after the usage, or a stream abandoned on a bad event) is not read.
    reader.cancel().catch(() => {});
  }
  if (failure !== undefined && finish === undefined) return ended(failure);
  if (finish === undefined) {
    return ended(
      disconnected(
        done
          ? "the stream ended ([DONE]) without a finish reason"
          : "the stream ended without a finish reason",
      ),
    );
  }
  return finishedOutcome(finish, usage, failure);
}

function finishedOutcome(
  finish: UpstreamFinish,
  usage: UpstreamUsage | undefined,
  failure: UpstreamFailure | undefined,
): AttemptOutcome {
  if (finish.reason === "cancelled") {
    return {
      kind: "failed",
      failure: {
        code: "upstream_cancelled",
        message: "The upstream cancelled the generation (it may be shutting down).",
        retryable: true,
        countsAgainstUpstream: false,
      },
    };
  }
  if (finish.reason === "error") {
    const error = finish.error ??
      (failure !== undefined ? { code: failure.code, message: failure.message } : undefined) ?? {
        code: "upstream_error",
        message: "The upstream ended the generation with an error.",
      };
    return { kind: "finished", finish: { ...finish, error }, ...(usage ? { usage } : {}) };
  }
  return { kind: "finished", finish, ...(usage ? { usage } : {}) };
}

async function readErrorBody(response: Response): Promise<unknown> {
  try {
    const reader = response.body?.getReader();
    if (reader === undefined) return undefined;
    const chunks: Uint8Array[] = [];
    let size = 0;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      size += value.length;
      if (size >= ERROR_BODY_BYTES) {
        await reader.cancel().catch(() => {});
        break;
      }
    }
    const text = Buffer.concat(chunks).toString("utf8");
    try {
      return JSON.parse(text);
    } catch {
      return text;
    }
  } catch {
    return undefined;
  }
}

function statusFailure(status: number, body: unknown, baseUrl: string): UpstreamFailure {
  const said = messageOf(body);
  const what = `${baseUrl} answered ${status}${said ? `: ${said}` : ""}`;
  if (status === 429) {
    return {
      code: "upstream_busy",
      message: what,
      status,
      body,
      retryable: true,
      countsAgainstUpstream: false,
    };
  }
  if (status >= 400 && status < 500 && status !== 408) {
    return {
      code: "upstream_rejected",
      message: said || what,
      status,
      body,
      retryable: false,
      countsAgainstUpstream: false,
    };
  }
  return {
    code: "upstream_error",
    message: what,
    status,
    body,
    retryable: true,
    countsAgainstUpstream: true,
  };
}

function messageOf(body: unknown): string {
  if (typeof body === "string") return body.slice(0, 300);
  if (typeof body === "object" && body !== null) {
    const error = (body as { error?: unknown }).error;
    if (
      typeof error === "object" &&
      error !== null &&
      typeof (error as { message?: unknown }).message === "string"
    )
      return (error as { message: string }).message;
    if (typeof error === "string") return error;
  }
  return "";
}

const unavailable = (message: string): UpstreamFailure => ({
  code: "upstream_unavailable",
  message,
  retryable: true,
  countsAgainstUpstream: true,
});

const timeout = (why: string): UpstreamFailure => ({
  code: "upstream_timeout",
  message: `The upstream timed out: ${why}.`,
  retryable: true,
  countsAgainstUpstream: true,
});

const disconnected = (message: string): UpstreamFailure => ({
  code: "upstream_disconnected",
  message: `The upstream's stream broke: ${message}.`,
  retryable: true,
  countsAgainstUpstream: true,
});

const badResponse = (why: string): UpstreamFailure => ({
  code: "upstream_bad_response",
  message: `The upstream broke the streaming protocol: ${why}.`,
  retryable: true,
  countsAgainstUpstream: true,
});

const upstreamError = (message: string): UpstreamFailure => ({
  code: "upstream_error",
  message,
  retryable: true,
  countsAgainstUpstream: true,
});

function causeOf(error: unknown): string {
  const cause = (error as { cause?: { code?: string; message?: string } })?.cause;
  if (cause?.code) return cause.code;
  if (cause?.message) return cause.message;
  return error instanceof Error ? error.message : String(error);
}
