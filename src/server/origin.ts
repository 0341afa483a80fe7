import type { IncomingMessage } from "node:http";
import { forbidden } from "./httpErrors.ts";

/**
 * Refuses a request that a browser sends on behalf of a page from another origin (403
 * `origin_not_allowed`), so that a web page cannot make a visitor's browser use this server. Such a
 * request carries `Origin` (every cross-origin fetch, every POST, even the "simple" ones that need no
 * preflight), or at least `Sec-Fetch-Site: cross-site` / `same-site`. A page is allowed when its origin
 * is the server's own (the same host and port as the request's `Host`, as the playground's is) or is
 * listed in `allowed` (`["*"]`: every origin). Clients that are not browsers (curl, SDKs) send neither
 * header and are not affected; the Content-Type plays no part, so `curl -d` keeps working.
 * Top-level navigations (a link to the playground) are let through: the page they open is the server's own.
 */
export function checkOrigin(
  req: IncomingMessage,
  host: string | undefined,
  allowed: readonly string[],
): void {
  if (allowed[0] === "*") return;
  const origin = req.headers.origin;
  if (origin !== undefined) {
    const normalized = normalize(origin);
    if (normalized !== undefined && (sameHost(normalized, host) || allowed.includes(normalized))) return;
    throw forbidden(
      "origin_not_allowed",
      `Requests from pages at ${JSON.stringify(origin)} are not allowed: only the server's own pages may call it from a browser. ` +
        "To allow that origin, start the server with --allowed-origin <origin> (allowedOrigins).",
    );
  }
  const site = req.headers["sec-fetch-site"];
  if ((site === "cross-site" || site === "same-site") && req.headers["sec-fetch-mode"] !== "navigate") {
    throw forbidden(
      "origin_not_allowed",
      `A ${site} request from a browser page is not allowed: only the server's own pages may call it from a browser.`,
    );
  }
}

/** The origin as `new URL()` serializes it, or undefined for `null` and anything unreadable. */
function normalize(origin: string): string | undefined {
  try {
    const url = new URL(origin);
    return url.protocol === "http:" || url.protocol === "https:" ? url.origin : undefined;
  } catch {
    return undefined;
  }
}

/** Whether the page's origin names the host the request was sent to: the server's own page. */
function sameHost(origin: string, host: string | undefined): boolean {
  return host !== undefined && new URL(origin).host === host;
}
