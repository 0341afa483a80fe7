import { access } from "node:fs/promises";
import { join } from "node:path";
import type { Handler } from "../router.ts";
import type { ServerContext } from "../ServerContext.ts";
import { FALLBACK_INDEX, sendStaticFile } from "../staticFiles.ts";

/** GET / : the playground, or a page pointing at the API when it is not installed. */
export function indexRoute(server: ServerContext): Handler {
  return async ({ res }) => {
    const root = server.options.webRoot;
    const installed = await access(join(root, "index.html")).then(
      () => true,
      () => false,
    );
    if (installed) return sendStaticFile(res, root, "index.html");
    res.writeHead(200, {
      "Content-Type": "text/html; charset=utf-8",
      "Content-Length": Buffer.byteLength(FALLBACK_INDEX),
    });
    res.end(FALLBACK_INDEX);
  };
}

/** GET /web/<file> */
export function webRoute(server: ServerContext): Handler {
  return ({ res, params }) => sendStaticFile(res, server.options.webRoot, params["*"]!);
}
