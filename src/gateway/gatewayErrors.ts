import { HttpError, type OpenAIErrorType } from "../server/httpErrors.ts";
import type { ChunkError } from "../types.ts";

/**
 * A generation that failed before anything was sent to the client, as its HTTP answer: the upstream's own
 * 4xx (status, message and code passed through) when it refused the request; 503 when no upstream could
 * take it (all ejected, all busy, shutting down); 504 for an upstream that timed out; 502 for every other
 * upstream failure (5xx, broken stream, protocol error).
 */
export function upstreamHttpError(
  error: ChunkError | undefined,
  rejected: { status: number; body: unknown } | undefined,
): HttpError {
  const code = error?.code ?? "upstream_error";
  const message = error?.message ?? "The upstream failed.";
  if (code === "upstream_rejected" && rejected !== undefined) {
    const inner = (
      rejected.body as { error?: { code?: unknown; param?: unknown; type?: unknown } } | undefined
    )?.error;
    // The gateway's own key problems are not the client's: an upstream 401/403 is the gateway's misconfiguration.
    if (rejected.status === 401 || rejected.status === 403) {
      return new HttpError(
        502,
        "server_error",
        "upstream_rejected",
        `The upstream refused the gateway's credentials: ${message}`,
      );
    }
    return new HttpError(
      rejected.status,
      typeOf(rejected.status),
      typeof inner?.code === "string" ? inner.code : "upstream_rejected",
      message,
      typeof inner?.param === "string" ? inner.param : null,
    );
  }
  switch (code) {
    case "upstream_unavailable":
    case "upstream_busy":
    case "runtime_closed":
      return new HttpError(503, "server_error", code, message, null, { "Retry-After": "1" });
    case "upstream_timeout":
      return new HttpError(504, "server_error", code, message);
    default:
      return new HttpError(502, "server_error", code, message);
  }
}

function typeOf(status: number): OpenAIErrorType {
  if (status === 404) return "not_found_error";
  if (status === 429) return "rate_limit_error";
  return status >= 500 ? "server_error" : "invalid_request_error";
}
