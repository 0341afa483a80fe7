import {
  type ClientRequest,
  Agent as HttpAgent,
  request as httpRequest,
  type IncomingMessage,
} from "node:http";
import { Agent as HttpsAgent, request as httpsRequest } from "node:https";
import { type AttemptSink, EventStreamReader } from "./readEventStream.ts";
import {
  type AttemptOutcome,
  badResponse,
  statusFailure,
  timeout,
  type UpstreamFailure,
  unavailable,
} from "./upstreamFailure.ts";

export type { AttemptSink } from "./readEventStream.ts";
export type { AttemptOutcome, UpstreamErrorCode, UpstreamFailure } from "./upstreamFailure.ts";

export interface AttemptRequest {
  /** The upstream's base URL (`http://host:port`, no trailing slash). */
  baseUrl: string;
  /** `/v1/chat/completions` or `/v1/completions`. */
  path: string;
  /** Sent as `Authorization: Bearer <key>`. */
  apiKey?: string;
  /** The JSON body, already with `stream: true`. */
  body: string;
  /** The consumer's cancel: aborting it aborts the upstream request at once. */
  signal: AbortSignal;
  headersTimeoutMs: number;
  idleTimeoutMs: number;
  /** Choices the body asks for (`n`): the stream is complete when each has its finish reason. Defaults to 1. */
  choices?: number;
  /** Where kept-alive connections come from. Defaults to a process-wide keep-alive agent. */
  agents?: UpstreamAgents;
}

/** Keep-alive connection pools for upstream requests, one per protocol. */
export interface UpstreamAgents {
  http: HttpAgent;
  https: HttpsAgent;
}

/**
 * Connections kept alive between requests (no TCP handshake per request), Nagle off (each event goes out as
 * it is written), most recently used first (the one least likely to have been closed by the upstream).
 */
export function createUpstreamAgents(): UpstreamAgents {
  const options = { keepAlive: true, scheduling: "lifo" as const, noDelay: true };
  return { http: new HttpAgent(options), https: new HttpsAgent(options) };
}

let defaultAgents: UpstreamAgents | undefined;

/** How much of an error body is read to learn what went wrong. */
const ERROR_BODY_BYTES = 64 * 1024;

/** After the outcome is known, how long the rest of a stream (`[DONE]`) may take so its connection is kept. */
const TAIL_MS = 1000;

/** Socket errors that mean "the kept-alive connection was already closed": nothing reached the upstream. */
const STALE_SOCKET = new Set(["ECONNRESET", "EPIPE", "ECONNABORTED"]);

/**
 * One request to one upstream, streamed: resolves with how it ended and never rejects. It goes over node:http
 * with a keep-alive agent; the response's bytes are decoded as UTF-8 by a streaming decoder (a character cut
 * between two reads is held until its end arrives; invalid bytes become U+FFFD), eventsource-parser cuts the
 * text into events, and each event is read as an OpenAI chunk. Timers: no response headers within
 * `headersTimeoutMs`, or no byte at all for `idleTimeoutMs` (SSE comments count: Sluice sends keep-alives
 * while it reads a long prompt), fail it with `upstream_timeout`.
 *
 * A POST sent on a kept-alive connection the upstream had already closed fails before any response (reset):
 * nothing was generated, so it is sent once more on a fresh connection before it counts as a failure.
 */
export function runAttempt(request: AttemptRequest, sink: AttemptSink): Promise<AttemptOutcome> {
  if (request.signal.aborted) return Promise.resolve({ kind: "aborted" });
  const agents = request.agents ?? (defaultAgents ??= createUpstreamAgents());
  return new Promise<AttemptOutcome>((resolve) => {
    const url = new URL(`${request.baseUrl}${request.path}`);
    const https = url.protocol === "https:";
    let req: ClientRequest;
    let timedOut: string | undefined;
    let done = false;
    let freshRetry = false;
    const ended = (failure: UpstreamFailure | undefined): AttemptOutcome => {
      if (request.signal.aborted) return { kind: "aborted" };
      if (timedOut !== undefined) return { kind: "failed", failure: timeout(timedOut) };
      return failure === undefined ? { kind: "aborted" } : { kind: "failed", failure };
    };
    const settle = (outcome: AttemptOutcome, keep = false) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      request.signal.removeEventListener("abort", onAbort);
      if (!keep) req.destroy();
      resolve(outcome);
    };
    const onAbort = () => settle({ kind: "aborted" });
    request.signal.addEventListener("abort", onAbort, { once: true });
    let timer = setTimeout(() => {
      timedOut = `no response headers within ${request.headersTimeoutMs} ms (headersTimeoutMs)`;
      settle(ended(undefined));
    }, request.headersTimeoutMs);

    const send = (fresh: boolean) => {
      const headers: Record<string, string | number> = {
        "content-type": "application/json",
        accept: "text/event-stream",
        "content-length": Buffer.byteLength(request.body),
      };
      if (request.apiKey !== undefined) headers.authorization = `Bearer ${request.apiKey}`;
      const options = {
        method: "POST",
        headers,
        // A retry after a stale socket goes on a connection of its own.
        agent: fresh ? false : https ? agents.https : agents.http,
        ...(fresh ? { noDelay: true } : {}),
      };
      req = https ? httpsRequest(url, options) : httpRequest(url, options);
      req.on("error", (error: NodeJS.ErrnoException) => {
        if (done) return;
        const stale = !fresh && !freshRetry && req.reusedSocket && STALE_SOCKET.has(error.code ?? "");
        if (stale) {
          freshRetry = true;
          send(true);
          return;
        }
        settle(ended(unavailable(`cannot reach ${request.baseUrl}: ${error.code ?? error.message}`)));
      });
      req.on("response", (res) => onResponse(req, res));
      req.end(request.body);
    };

    const onResponse = (current: ClientRequest, res: IncomingMessage) => {
      if (done || current !== req) {
        res.resume();
        return;
      }
      if (res.statusCode !== 200) {
        void readErrorBody(res).then((body) =>
          settle(ended(statusFailure(res.statusCode ?? 0, body, request.baseUrl))),
        );
        return;
      }
      const type = res.headers["content-type"] ?? "";
      if (!type.includes("text/event-stream")) {
        settle(ended(badResponse(`answered 200 with ${type || "no content type"}, not an event stream`)));
        return;
      }
      sink.accepted();
      const idle = () => {
        timedOut = `silent for ${request.idleTimeoutMs} ms (idleTimeoutMs)`;
        settle(ended(undefined));
      };
      clearTimeout(timer);
      timer = setTimeout(idle, request.idleTimeoutMs);
      const reader = new EventStreamReader(sink, request.choices ?? 1);
      let finished = false;
      res.setEncoding("utf8");
      res.on("data", (text: string) => {
        if (done) return;
        timer.refresh();
        reader.feed(text);
        if (!reader.settled) return;
        // Whatever is left (the [DONE] after the usage) is read and dropped, so the connection is kept alive.
        const tail = setTimeout(() => res.destroy(), TAIL_MS);
        tail.unref();
        res.once("end", () => clearTimeout(tail));
        settle(reader.outcome(undefined, ended), true);
      });
      res.on("end", () => {
        finished = true;
        if (done) return;
        reader.end();
        settle(reader.outcome(undefined, ended), true);
      });
      res.on("close", () => {
        if (finished || done) return;
        settle(reader.outcome("the connection closed", ended));
      });
      res.on("error", () => {});
    };

    send(false);
  });
}

async function readErrorBody(res: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of res as AsyncIterable<Buffer>) {
      chunks.push(chunk);
      size += chunk.length;
      if (size >= ERROR_BODY_BYTES) {
        res.destroy();
        break;
      }
    }
  } catch {
    // A body cut short says what it says so far.
  }
  const text = Buffer.concat(chunks).toString("utf8");
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}
