import type { ChunkError } from "../types.ts";
import type { UpstreamFinish, UpstreamUsage } from "./upstreamEvent.ts";

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

/** How one choice of a finished attempt ended. */
export interface ChoiceFinish extends UpstreamFinish {
  /** The upstream's own `finish_reason` (OpenAI's `tool_calls` passes through to the client as it is). */
  finishReason?: string;
}

export type AttemptOutcome =
  | {
      kind: "finished";
      /** Choice 0's finish (or the first error among the choices). */
      finish: UpstreamFinish;
      /** Every choice's finish, by index (`n` entries). */
      choices: ChoiceFinish[];
      usage?: UpstreamUsage;
    }
  | { kind: "failed"; failure: UpstreamFailure }
  /** The consumer cancelled: the request was aborted. */
  | { kind: "aborted" };

export const unavailable = (message: string): UpstreamFailure => ({
  code: "upstream_unavailable",
  message,
  retryable: true,
  countsAgainstUpstream: true,
});

export const timeout = (why: string): UpstreamFailure => ({
  code: "upstream_timeout",
  message: `The upstream timed out: ${why}.`,
  retryable: true,
  countsAgainstUpstream: true,
});

export const disconnected = (message: string): UpstreamFailure => ({
  code: "upstream_disconnected",
  message: `The upstream's stream broke: ${message}.`,
  retryable: true,
  countsAgainstUpstream: true,
});

export const badResponse = (why: string): UpstreamFailure => ({
  code: "upstream_bad_response",
  message: `The upstream broke the streaming protocol: ${why}.`,
  retryable: true,
  countsAgainstUpstream: true,
});

export const upstreamError = (message: string): UpstreamFailure => ({
  code: "upstream_error",
  message,
  retryable: true,
  countsAgainstUpstream: true,
});

/** The failure an HTTP error status stands for: 429 busy, other 4xx (not 408) rejected, the rest errors. */
export function statusFailure(status: number, body: unknown, baseUrl: string): UpstreamFailure {
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
