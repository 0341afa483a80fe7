import { readFile } from "node:fs/promises";
import type { ServerResponse } from "node:http";
import { extname, resolve, sep } from "node:path";
import { HttpError } from "./httpErrors.ts";
import { decodeSegment } from "./requestTarget.ts";

const CONTENT_TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".json": "application/json; charset=utf-8",
  ".txt": "text/plain; charset=utf-8",
  ".woff2": "font/woff2",
};

const notFound = (path: string) =>
  new HttpError(404, "not_found_error", "not_found", `No file ${JSON.stringify(path)} under /web/.`);

/**
 * Sends `relative` (percent-encoded, from the URL) from `root`. Only known file types, only inside root:
 * `..` (raw or encoded), absolute paths and NUL bytes all end in 404; malformed percent-encoding in 400.
 */
export async function sendStaticFile(res: ServerResponse, root: string, relative: string): Promise<void> {
  const decoded = decodeSegment(relative, "path");
  const base = resolve(root);
  const path = resolve(base, decoded);
  const type = CONTENT_TYPES[extname(path).toLowerCase()];
  if (decoded.includes("\0") || !path.startsWith(base + sep) || type === undefined) throw notFound(decoded);
  let content: Buffer;
  try {
    content = await readFile(path);
  } catch {
    throw notFound(decoded);
  }
  res.writeHead(200, {
    "Content-Type": type,
    "Content-Length": content.length,
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
  });
  res.end(content);
}

/** `/` when the playground is not installed: where to go instead. */
export const FALLBACK_INDEX = `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Sluice</title></head>
<body style="font-family: system-ui, sans-serif; max-width: 40rem; margin: 2rem auto">
<h1>Sluice</h1>
<p>The web playground is not installed here. The OpenAI-compatible API is:</p>
<ul>
<li><code>POST /v1/completions</code>, <code>POST /v1/chat/completions</code> (add <code>"stream": true</code> for SSE)</li>
<li><code>GET /v1/models</code>, <code>GET /v1/slots</code>, <code>DELETE /v1/requests/:id</code></li>
<li><code>GET /health</code>, <code>GET /metrics</code> (Prometheus)</li>
</ul>
</body>
</html>
`;
