import type { IncomingMessage, ServerResponse } from "node:http";
import cors from "cors";

/** Methods the API answers; a preflight lists them all. */
const METHODS = ["GET", "HEAD", "POST", "DELETE", "OPTIONS"];

/** Request headers always allowed, whatever a preflight asks for. */
const HEADERS = ["Authorization", "Content-Type", "x-api-key"];

/** Response headers a page may read: the request id (to cancel) and when to retry. */
const EXPOSED = ["X-Request-Id", "Retry-After"];

/** How long a browser may reuse a preflight answer (seconds; Chromium caps it at 2 h). */
const MAX_AGE_S = 600;

/**
 * CORS for the pages of `origins` (normalized origins, or `["*"]`) and the server's own pages, through the
 * `cors` package. Sets `Access-Control-Allow-Origin` (the page's origin, with `Vary: Origin`) and
 * `Access-Control-Expose-Headers` on every response to such a page, errors and streams included, and the
 * preflight headers on an `OPTIONS`. Resolves with whether the request is a preflight of such a page,
 * which the caller answers (204) once the page is known to be allowed.
 *
 * Whether a page may call the server at all is `checkOrigin`'s decision (every CORS origin is an allowed
 * origin): call this after it, so a refused page gets its 403 and no CORS headers.
 */
export function createCors(
  origins: readonly string[],
): (req: IncomingMessage, res: ServerResponse) => Promise<boolean> {
  const any = origins[0] === "*";
  const middleware = cors<IncomingMessage>((req, callback) => {
    const origin = req.headers.origin;
    const allowed = origin !== undefined && (any || origins.includes(normalize(origin)) || own(req, origin));
    const requested = req.headers["access-control-request-headers"];
    callback(null, {
      // Reflecting the origin rather than "*" keeps one answer per origin, which Vary: Origin tells caches.
      origin: allowed,
      methods: METHODS,
      // Also whatever else the page asks to send (SDKs add their own x-… headers): the page is allowed.
      allowedHeaders: requested === undefined ? HEADERS : [...HEADERS, requested],
      exposedHeaders: EXPOSED,
      maxAge: MAX_AGE_S,
      // The preflight's answer is the caller's, after its own checks.
      preflightContinue: true,
    });
  });
  return (req, res) =>
    new Promise<boolean>((resolve, reject) => {
      middleware(req, res, (error?: unknown) => {
        if (error) {
          reject(error);
          return;
        }
        resolve(req.method === "OPTIONS" && res.hasHeader("Access-Control-Allow-Origin"));
      });
    });
}

function normalize(origin: string): string {
  try {
    return new URL(origin).origin;
  } catch {
    return "";
  }
}

/** The server's own page (the playground): the origin names the host the request was sent to. */
function own(req: IncomingMessage, origin: string): boolean {
  try {
    return req.headers.host !== undefined && new URL(origin).host === req.headers.host.toLowerCase();
  } catch {
    return false;
  }
}
