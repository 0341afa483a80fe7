import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

/**
 * A scripted OpenAI-compatible upstream on loopback, for the faults a real server cannot be made to commit
 * on demand (bytes split mid-character, a dropped connection, a malformed event, a 500, slow headers).
 * Never a stand-in for a real server in a claim about behaviour with real upstreams.
 */
export interface Scripted {
  url: string;
  /** Bodies of the generation requests received, parsed. */
  bodies: Record<string, unknown>[];
  /** Resolves when the n-th generation request's connection closed (0-based). */
  closed(n: number): Promise<void>;
  close(): Promise<void>;
}

export type Script = (
  req: IncomingMessage,
  res: ServerResponse,
  body: Record<string, unknown>,
) => void | Promise<void>;

export async function startScripted(script: Script, health: () => number = () => 200): Promise<Scripted> {
  const bodies: Record<string, unknown>[] = [];
  const closes: { promise: Promise<void>; resolve: () => void }[] = [];
  const closeOf = (n: number) => {
    while (closes.length <= n) {
      let resolve!: () => void;
      const promise = new Promise<void>((r) => (resolve = r));
      closes.push({ promise, resolve });
    }
    return closes[n]!;
  };
  const server = createServer((req, res) => {
    if (req.method === "GET") {
      const status = health();
      res.writeHead(status, { "content-type": "application/json" });
      res.end(
        req.url === "/v1/models" ? JSON.stringify({ object: "list", data: [{ id: "scripted" }] }) : "{}",
      );
      return;
    }
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as Record<string, unknown>;
      const n = bodies.length;
      bodies.push(body);
      res.on("close", () => closeOf(n).resolve());
      void Promise.resolve(script(req, res, body)).catch(() => res.destroy());
    });
  });
  server.keepAliveTimeout = 100;
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    bodies,
    closed: (n) => closeOf(n).promise,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export const SSE_HEADERS = { "content-type": "text/event-stream", "cache-control": "no-cache" };

/** A text-completion chunk's SSE event. */
export function textEvent(text: string, finish: string | null = null): string {
  return `data: ${JSON.stringify({ id: "cmpl-s", object: "text_completion", model: "scripted", choices: [{ index: 0, text, finish_reason: finish }] })}\n\n`;
}

/** The usage chunk and [DONE]. */
export function endEvents(prompt = 4, completion = 1): string {
  return `data: ${JSON.stringify({ choices: [], usage: { prompt_tokens: prompt, completion_tokens: completion } })}\n\ndata: [DONE]\n\n`;
}

/** Writes `data` and resolves once it is handed to the kernel. */
export function write(res: ServerResponse, data: string | Uint8Array): Promise<void> {
  return new Promise((resolve) => res.write(data, () => resolve()));
}
