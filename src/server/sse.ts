import type { ServerResponse } from "node:http";

const DONE = "data: [DONE]\n\n";
const KEEP_ALIVE = ": keep-alive\n\n";

/**
 * One Server-Sent Events response. Writes report backpressure (false: wait for `writable()` before pulling
 * more, so the channel coalesces instead of the socket buffering), and a keep-alive comment goes out
 * whenever the stream has been silent for `keepAliveMs`.
 */
export class SseWriter {
  readonly #res: ServerResponse;
  readonly #keepAlive: ReturnType<typeof setTimeout>;
  #waiting: Promise<void> | undefined;

  constructor(res: ServerResponse, keepAliveMs: number, headers: Record<string, string>) {
    this.#res = res;
    res.writeHead(200, {
      "Content-Type": "text/event-stream; charset=utf-8",
      "Cache-Control": "no-cache, no-transform",
      Connection: "keep-alive",
      // Reverse proxies (nginx) would otherwise buffer the stream.
      "X-Accel-Buffering": "no",
      ...headers,
    });
    // Headers now: the client learns the request id (for DELETE) before the first token.
    res.flushHeaders();
    this.#keepAlive = setTimeout(this.#ping, keepAliveMs);
    this.#keepAlive.unref();
  }

  /** Whether the client can still receive anything. */
  get open(): boolean {
    return !this.#res.destroyed && !this.#res.writableEnded;
  }

  /** Writes one `data:` event (JSON text). Returns false when the socket is backed up. */
  data(json: string): boolean {
    return this.#write(`data: ${json}\n\n`);
  }

  /** Resolves when the socket can take more, or when the client is gone. */
  writable(): Promise<void> {
    const res = this.#res;
    if (!res.writableNeedDrain || !this.open) return Promise.resolve();
    this.#waiting ??= new Promise<void>((resolve) => {
      const done = () => {
        res.off("drain", done);
        res.off("close", done);
        this.#waiting = undefined;
        resolve();
      };
      res.on("drain", done);
      res.on("close", done);
    });
    return this.#waiting;
  }

  /** `data: [DONE]` and the end of the response. */
  end(): void {
    clearTimeout(this.#keepAlive);
    if (this.open) this.#res.end(DONE);
  }

  /** Stops the keep-alive timer without writing (the client is gone). */
  dispose(): void {
    clearTimeout(this.#keepAlive);
  }

  #write(text: string): boolean {
    if (!this.open) return true;
    this.#keepAlive.refresh();
    return this.#res.write(text);
  }

  readonly #ping = (): void => {
    if (!this.open) return;
    // Not while backed up: bytes are already queued, and more would only grow the buffer.
    if (!this.#res.writableNeedDrain) this.#res.write(KEEP_ALIVE);
    this.#keepAlive.refresh();
  };
}
