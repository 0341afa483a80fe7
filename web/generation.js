import { deleteRequest, errorOf } from "./api.js";
import { readSse } from "./sse.js";

/**
 * @typedef {{ stepsToFree: number, msToFree: number, msToTerminal: number }} CancelLatency
 * @typedef {{
 *   reason: string,
 *   stop?: string | number,
 *   timings: { firstTokenMs: number, tokensPerSecond: number },
 *   cancel?: CancelLatency,
 * }} SluiceExtension
 * @typedef {"sending" | "waiting" | "streaming" | "stopping" | "done"} Phase
 */

const ORDER = ["sending", "waiting", "streaming", "stopping", "done"];

/** What the status line says in each phase before done (what done says depends on the view). */
export const PHASE_TEXT = {
  sending: "sending",
  waiting: "waiting for the first token",
  streaming: "streaming",
  stopping: "stopping",
};

/**
 * One streamed generation: a completion pane's run or a chat reply. Its phase only moves forward:
 * sending → waiting (headers in, no token yet) → streaming → done; "stopping" may come in at any point
 * before done. The view that owns it sets "done" itself, when the stream has ended.
 */
export class Generation {
  /** @type {Phase} */ phase = "sending";
  controller = new AbortController();
  /** @type {string | undefined} the server's request id */ id;
  startedAt = performance.now();
  /** @type {number | undefined} */ firstAt;
  /** @type {number | undefined} */ lastAt;
  /** Text chunks received so far. */
  chunks = 0;
  /**
   * Completion tokens so far: the server's count when its chunks carry `usage` (vLLM's continuous usage: with
   * speculative decoding a chunk may hold several tokens), else one per text chunk (a server without it, such
   * as an upstream behind the gateway).
   */
  tokens = 0;
  /** Whether `tokens` is the server's count (a chunk carried `usage`) rather than the chunks'. */
  #counted = false;
  /** Whether text chunks carried the count (not only the final usage chunk): tokens per step are known. */
  #stepsCounted = false;
  /** `tokens` when the first and the latest text chunk arrived, for the live rate. */
  #firstTokens = 0;
  #lastTokens = 0;
  /** @type {string | undefined} */ finishReason;
  /** @type {SluiceExtension | undefined} */ sluice;
  /** Whether Stop closed the connection itself (the DELETE did not get through). */
  aborted = false;
  /** @type {string | undefined} */ error;
  /** @type {() => void} */ #changed;

  /** @param {() => void} changed called when the phase moves, to repaint */
  constructor(changed) {
    this.#changed = changed;
  }

  /** @param {Phase} phase */
  advance(phase) {
    if (ORDER.indexOf(phase) <= ORDER.indexOf(this.phase)) return;
    this.phase = phase;
    this.#changed();
  }

  /**
   * Counts one chunk of text as it arrives, for the live figures.
   * @param {unknown} [completionTokens] the chunk's `usage.completion_tokens`, when it has one
   */
  chunk(completionTokens) {
    const at = performance.now();
    this.chunks++;
    this.count(completionTokens);
    if (typeof completionTokens === "number") this.#stepsCounted = true;
    if (this.firstAt === undefined) {
      this.firstAt = at;
      this.#firstTokens = this.tokens;
    }
    this.lastAt = at;
    this.#lastTokens = this.tokens;
  }

  /**
   * Takes the server's count from any chunk, with text or not (a finish chunk, the usage chunk); without
   * one, the count stays one per text chunk until a chunk brings one.
   * @param {unknown} completionTokens the chunk's `usage.completion_tokens`, when it has one
   */
  count(completionTokens) {
    if (typeof completionTokens === "number") {
      this.tokens = completionTokens;
      this.#counted = true;
    } else if (!this.#counted) this.tokens = this.chunks;
  }

  /**
   * Tokens per second measured in the page: the tokens that arrived after the first text chunk, over the
   * time since it, once there are two chunks.
   */
  get liveRate() {
    const { chunks, firstAt, lastAt } = this;
    return chunks > 1 && firstAt !== undefined && lastAt !== undefined && lastAt > firstAt
      ? ((this.#lastTokens - this.#firstTokens) * 1000) / (lastAt - firstAt)
      : undefined;
  }

  /**
   * Tokens per text chunk, when the chunks carry the server's count: above 1 when steps accept several
   * tokens (speculative decoding) or the stream merged deltas; undefined when only chunks are counted.
   */
  get tokensPerStep() {
    return this.#stepsCounted ? this.#lastTokens / this.chunks : undefined;
  }

  /**
   * Sends the request with `start` and hands every `data:` event of its stream to `onEvent` until `[DONE]`.
   * Never throws: a failure is left in `error` (our own abort, Stop's fallback, is a cancel, not a failure).
   * @param {(signal: AbortSignal) => Promise<Response>} start
   * @param {(event: any) => void} onEvent
   */
  async stream(start, onEvent) {
    try {
      const response = await start(this.controller.signal);
      if (!response.ok || response.body === null) throw new Error(await errorOf(response));
      this.id = response.headers.get("X-Request-Id") ?? undefined;
      this.advance("waiting");
      for await (const data of readSse(response.body)) {
        if (data === "[DONE]") break;
        onEvent(JSON.parse(data));
      }
      if (this.finishReason === undefined && this.error === undefined) {
        this.error = "The stream ended without a finish reason.";
      }
    } catch (error) {
      if (!this.aborted) this.error = error instanceof Error ? error.message : String(error);
    }
  }

  /**
   * Stops the generation through the server (DELETE), and the stream goes on being read: its last chunk
   * carries the finish reason and the measured cancel latency. Closing the connection (which the server
   * also takes as a cancel) is only the fallback.
   */
  async stop() {
    if (this.phase === "done" || this.phase === "stopping") return;
    this.advance("stopping");
    if (this.id !== undefined) {
      try {
        const status = await deleteRequest(this.id);
        // 404: it finished by itself meanwhile, and its own last chunk is already on the way.
        if (status === 200 || status === 404) return;
      } catch {
        // The DELETE did not get through: fall back below.
      }
    }
    this.aborted = true;
    this.controller.abort();
  }
}

/**
 * `render`, at most once per frame however often the returned function is called: token chunks can arrive
 * hundreds per second, the numbers need repainting once per frame at most.
 * @param {() => void} render
 * @returns {() => void}
 */
export function oncePerFrame(render) {
  let queued = false;
  return () => {
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => {
      queued = false;
      render();
    });
  };
}

/**
 * @param {Element} element
 * @param {string} text
 */
export function setText(element, text) {
  // Writing the same text again would make screen readers announce it again.
  if (element.textContent !== text) element.textContent = text;
}
