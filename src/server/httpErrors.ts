import { type ServerResponse, STATUS_CODES } from "node:http";
import type { z } from "zod";
import { SluiceError } from "../errors.ts";

/** OpenAI's error `type` values (clients branch on them). */
export type OpenAIErrorType =
  | "invalid_request_error"
  | "authentication_error"
  | "not_found_error"
  | "rate_limit_error"
  | "server_error";

/** An error that already knows its HTTP status and OpenAI error shape. Thrown by handlers, sent by the router. */
export class HttpError extends Error {
  override readonly name = "HttpError";
  constructor(
    readonly status: number,
    readonly type: OpenAIErrorType,
    readonly code: string,
    message: string,
    readonly param: string | null = null,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }

  toJSON(): { error: { message: string; type: string; param: string | null; code: string } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

export const badRequest = (code: string, message: string, param: string | null = null) =>
  new HttpError(400, "invalid_request_error", code, message, param);

/** Who is asking (origin, host) is not allowed to: 403, whatever the key. */
export const forbidden = (code: string, message: string) =>
  new HttpError(403, "invalid_request_error", code, message);

/** The client did not send its request in time; the connection is closed after the answer. */
export const requestTimeout = (message: string) =>
  new HttpError(408, "invalid_request_error", "request_timeout", message);

/** The connection is over the server's limit: it gets this one answer, then is closed. */
export const tooManyConnections = (limit: number) =>
  new HttpError(
    503,
    "server_error",
    "too_many_connections",
    `The server already holds its limit of ${limit} connections; retry shortly or reuse a connection.`,
    null,
    { "Retry-After": "1", Connection: "close" },
  );

/** SluiceError codes become HTTP statuses here and only here. */
export function fromSluiceError(error: SluiceError): HttpError {
  const param = error.param === undefined ? null : toWireParam(error.param);
  switch (error.code) {
    case "invalid_request":
      return new HttpError(
        400,
        "invalid_request_error",
        "invalid_request",
        rewordParams(error.message),
        param,
      );
    case "prompt_too_long":
      return new HttpError(
        400,
        "invalid_request_error",
        "context_length_exceeded",
        rewordParams(error.message),
        param,
      );
    case "queue_full":
      return new HttpError(429, "rate_limit_error", "queue_full", error.message, null, {
        "Retry-After": "1",
      });
    case "runtime_closed":
      return new HttpError(503, "server_error", "runtime_closed", error.message);
    default:
      return new HttpError(500, "server_error", error.code, error.message);
  }
}

/** Anything a handler threw, as an HttpError (unknown failures are 500s that keep their message). */
export function toHttpError(error: unknown): HttpError {
  if (error instanceof HttpError) return error;
  if (error instanceof SluiceError) return fromSluiceError(error);
  const message = error instanceof Error ? error.message : String(error);
  return new HttpError(500, "server_error", "internal_error", `Internal error: ${message}`);
}

/** Every schema issue as `field: what is wrong`, so the client learns all of them at once. */
export function fromZodError(error: z.ZodError): HttpError {
  const issues = error.issues.flatMap((issue) => specific(issue, []));
  const lines = issues.slice(0, 8).map(({ issue, path }) => {
    const at = path.join(".");
    if (issue.code === "unrecognized_keys") {
      const keys = issue.keys.map((k) => (at ? `${at}.${k}` : k));
      return `${keys.join(", ")}: not a supported field (check the spelling; Sluice rejects fields it would otherwise ignore)`;
    }
    return at ? `${at}: ${issue.message}` : issue.message;
  });
  const first = issues[0];
  const param =
    first === undefined
      ? null
      : first.issue.code === "unrecognized_keys"
        ? [...first.path, first.issue.keys[0]].join(".")
        : first.path.join(".") || null;
  return badRequest("invalid_request", `Invalid request: ${lines.join("; ")}.`, param);
}

type Issue = z.core.$ZodIssue;

/**
 * A union that failed inside the one alternative whose type matched (e.g. an array of content parts with a
 * bad part) is reported by that alternative's own issues, which say what is actually wrong.
 */
function specific(issue: Issue, base: readonly PropertyKey[]): { issue: Issue; path: string[] }[] {
  const path = [...base, ...issue.path];
  if (issue.code === "invalid_union") {
    const deeper = issue.errors.filter(
      (branch) => !branch.some((i) => i.code === "invalid_type" && i.path.length === 0),
    );
    if (deeper.length === 1) return deeper[0]!.flatMap((i) => specific(i, path));
  }
  return [{ issue, path: path.map(String) }];
}

export function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  const text = JSON.stringify(body);
  res.writeHead(status, {
    "Content-Type": "application/json; charset=utf-8",
    "Content-Length": Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

export function sendError(res: ServerResponse, error: HttpError): void {
  sendJson(res, error.status, error.toJSON(), error.headers);
}

/**
 * The whole HTTP/1.1 response for `error`, for the few answers written straight to a socket, where node
 * has no response object (a request it could not parse, a request that timed out). Always the last
 * response on its connection.
 */
export function rawResponse(error: HttpError): Buffer {
  const body = JSON.stringify(error.toJSON());
  const headers = {
    "Content-Type": "application/json; charset=utf-8",
    "Content-Length": String(Buffer.byteLength(body)),
    ...error.headers,
    Connection: "close",
  };
  const lines = Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`);
  return Buffer.from(
    `HTTP/1.1 ${error.status} ${STATUS_CODES[error.status] ?? ""}\r\n${lines.join("")}\r\n${body}`,
    "utf8",
  );
}

// The runtime names its options in camelCase; the wire names are OpenAI's.
const WIRE_NAMES: Record<string, string> = {
  maxTokens: "max_tokens",
  topK: "top_k",
  topP: "top_p",
  minP: "min_p",
  streamInterval: "stream_interval",
  skipSpecialTokens: "skip_special_tokens",
  stopTokenIds: "stop",
  ignoreEos: "ignore_eos",
};

function toWireParam(param: string): string {
  return WIRE_NAMES[param] ?? param;
}

function rewordParams(message: string): string {
  return message.replace(/\b(maxTokens|topK|topP|minP|streamInterval|skipSpecialTokens|ignoreEos)\b/g, (m) =>
    toWireParam(m),
  );
}
