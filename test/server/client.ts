import { request as httpRequest, type IncomingHttpHeaders } from "node:http";
import { connect, type Socket } from "node:net";
import { Worker } from "node:worker_threads";
import { createParser } from "eventsource-parser";
import OpenAI from "openai";
import { BUNDLED_MODEL_PATH } from "../../src/engine/modelPath.ts";
import type { RequestRecord } from "../../src/runtime/RequestState.ts";
import { Runtime } from "../../src/runtime/Runtime.ts";
import { createServer, type ServerOptions, type SluiceServer } from "../../src/server/index.ts";

export interface Served {
  server: SluiceServer;
  url: string;
}

export async function serve(runtime: Runtime, options: ServerOptions = {}): Promise<Served> {
  const server = createServer(runtime, options);
  const { url } = await server.listen(0, "127.0.0.1");
  return { server, url };
}

/** A real runtime (2 slots, 1 thread), a server over it, and the official client pointed at that server. */
export interface ModelServer {
  runtime: Runtime;
  served: Served;
  client: OpenAI;
  /** Closes the server, then the runtime. */
  close(): Promise<void>;
}

/** Starts a `ModelServer` on `model` (defaults to the bundled model) with `contextSize` (defaults to 512). */
export async function serveModel(
  options: { model?: string; contextSize?: number } = {},
): Promise<ModelServer> {
  const { model = BUNDLED_MODEL_PATH, contextSize = 512 } = options;
  const runtime = await Runtime.create({ model, slots: 2, threads: 1, contextSize });
  const served = await serve(runtime);
  const client = new OpenAI({ baseURL: `${served.url}/v1`, apiKey: "none", maxRetries: 0 });
  return {
    runtime,
    served,
    client,
    close: async () => {
      await served.server.close();
      await runtime.close();
    },
  };
}

/** One parsed SSE event: the JSON of a `data:` line, or the string "[DONE]". */
// biome-ignore lint/suspicious/noExplicitAny: chunks are checked field by field in the tests.
export type SseEvent = any;

export interface SseStream {
  /** Resolves with the status and headers as soon as they arrive. */
  head: Promise<{ status: number; headers: IncomingHttpHeaders }>;
  events: SseEvent[];
  comments: string[];
  /** Raw body text, for non-SSE answers. */
  raw: () => string;
  /** Resolves when the response ended or the connection closed (never rejects). */
  done: Promise<void>;
  /** Cut the connection now, like a client that went away. */
  destroy(): void;
  /** Stop / resume reading from the socket (a slow client). */
  pause(): void;
  resume(): void;
}

export interface PostOptions {
  headers?: Record<string, string>;
  onEvent?: (event: SseEvent, stream: SseStream) => void;
  onComment?: (comment: string, stream: SseStream) => void;
}

/** POSTs JSON over its own connection (no pooling) and parses the answer as SSE as it arrives. */
export function post(url: string, path: string, body: unknown, options: PostOptions = {}): SseStream {
  const text = typeof body === "string" ? body : JSON.stringify(body);
  const events: SseEvent[] = [];
  const comments: string[] = [];
  const chunks: Buffer[] = [];
  let resolveHead!: (value: { status: number; headers: IncomingHttpHeaders }) => void;
  const head = new Promise<{ status: number; headers: IncomingHttpHeaders }>((r) => {
    resolveHead = r;
  });
  let resolveDone!: () => void;
  const done = new Promise<void>((r) => {
    resolveDone = r;
  });
  let response: import("node:http").IncomingMessage | undefined;
  const req = httpRequest(`${url}${path}`, {
    method: "POST",
    agent: false,
    headers: { "content-type": "application/json", ...options.headers },
  });
  const stream: SseStream = {
    head,
    events,
    comments,
    raw: () => Buffer.concat(chunks).toString("utf8"),
    done,
    destroy: () => {
      req.destroy();
      resolveDone();
    },
    pause: () => response?.pause(),
    resume: () => response?.resume(),
  };
  const parser = createParser({
    onEvent: (message) => {
      const event = message.data === "[DONE]" ? "[DONE]" : JSON.parse(message.data);
      events.push(event);
      options.onEvent?.(event, stream);
    },
    onComment: (comment) => {
      comments.push(comment);
      options.onComment?.(comment, stream);
    },
  });
  req.on("response", (res) => {
    response = res;
    resolveHead({ status: res.statusCode ?? 0, headers: res.headers });
    res.on("data", (chunk: Buffer) => {
      chunks.push(chunk);
      parser.feed(chunk.toString("utf8"));
    });
    res.on("end", resolveDone);
    res.on("close", resolveDone);
    res.on("error", resolveDone);
  });
  req.on("error", () => resolveDone());
  req.on("close", () => resolveDone());
  req.end(text);
  return stream;
}

/** /metrics as `name{labels}` → value. */
export async function scrape(
  url: string,
  headers: Record<string, string> = {},
): Promise<Map<string, number>> {
  const res = await fetch(`${url}/metrics`, { headers });
  if (res.status !== 200) throw new Error(`/metrics answered ${res.status}`);
  const text = await res.text();
  const values = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line.startsWith("#") || line.trim() === "") continue;
    const space = line.lastIndexOf(" ");
    values.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return values;
}

/** Polls /metrics (bounded, yielding between tries) until nothing holds a slot or waits for one. */
export async function idle(url: string, headers: Record<string, string> = {}): Promise<Map<string, number>> {
  for (let attempt = 0; attempt < 400; attempt++) {
    const m = await scrape(url, headers);
    if (
      m.get("sluice_slots_busy") === 0 &&
      m.get("sluice_requests_active") === 0 &&
      m.get("sluice_requests_queued") === 0
    )
      return m;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  throw new Error("the runtime never became idle: a slot is still held");
}

/** Every cancel so far freed its slot within one step, according to /metrics. */
export function cancelsWithinOneStep(m: Map<string, number>): { count: number; withinOne: number } {
  return {
    count: m.get("sluice_cancel_latency_steps_count") ?? -1,
    withinOne: m.get('sluice_cancel_latency_steps_bucket{le="1"}') ?? -2,
  };
}

/** Collects the runtime's end records, and waits for the one of a given request id. */
export class Ends {
  readonly records = new Map<string, RequestRecord>();
  readonly #waiting = new Map<string, (record: RequestRecord) => void>();

  constructor(runtime: Runtime) {
    runtime.observe((event) => {
      if (event.type !== "end") return;
      this.records.set(event.record.id, event.record);
      this.#waiting.get(event.record.id)?.(event.record);
    });
  }

  of(id: string): Promise<RequestRecord> {
    const known = this.records.get(id);
    if (known) return Promise.resolve(known);
    return new Promise((resolve) => this.#waiting.set(id, resolve));
  }
}

/** The text of content deltas (completion or chat). */
export function textOf(events: SseEvent[]): string {
  return events
    .filter((e) => e !== "[DONE]" && e.choices?.length > 0)
    .map((e) => e.choices[0].text ?? e.choices[0].delta?.content ?? "")
    .join("");
}

/** A small deterministic PRNG (mulberry32), so a failing random schedule can be replayed. */
export function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** One response read off a raw socket. */
export interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

export interface RawExchange {
  responses: RawResponse[];
  /** Bytes after the last whole response (a response cut short). */
  rest: string;
  /** How the connection ended: the server closed it, or it was reset. */
  ending: "closed" | "reset";
}

/**
 * Writes `bytes` on a fresh connection and collects what comes back until the connection closes (never
 * rejects). The answers are split by Content-Length: enough for the server's own responses, which always
 * carry one (`headOnly` for answers to HEAD). Like an HTTP client, it closes its side once it has read a
 * response with `Connection: close`, unless `stayOpen` (a client that goes on sending, or stalls).
 * `onSocket` gets the socket, to write more or watch it.
 */
export function rawExchange(
  url: string,
  bytes: string | Buffer,
  options: { onSocket?: (socket: Socket) => void; headOnly?: boolean; stayOpen?: boolean } = {},
): Promise<RawExchange> {
  const { hostname, port } = new URL(url);
  const headOnly = options.headOnly ?? false;
  return new Promise((resolve) => {
    const socket = connect(Number(port), hostname.replace(/^\[(.*)\]$/, "$1"));
    const chunks: Buffer[] = [];
    let ending: RawExchange["ending"] = "closed";
    socket.on("data", (chunk) => {
      chunks.push(chunk);
      if (options.stayOpen) return;
      const { responses } = splitResponses(Buffer.concat(chunks), headOnly);
      if (responses.some((r) => r.headers.connection === "close")) socket.end();
    });
    socket.on("error", (error: NodeJS.ErrnoException) => {
      if (error.code === "ECONNRESET" || error.code === "EPIPE") ending = "reset";
    });
    socket.on("close", () => {
      const { responses, rest } = splitResponses(Buffer.concat(chunks), headOnly);
      resolve({ responses, rest, ending });
    });
    socket.write(bytes);
    options.onSocket?.(socket);
  });
}

function splitResponses(data: Buffer, headOnly: boolean): { responses: RawResponse[]; rest: string } {
  const responses: RawResponse[] = [];
  let at = 0;
  for (;;) {
    const end = data.indexOf("\r\n\r\n", at);
    if (end < 0) break;
    const [statusLine, ...lines] = data.subarray(at, end).toString("latin1").split("\r\n");
    const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine ?? "")?.[1]);
    if (!Number.isInteger(status)) break;
    const headers: Record<string, string> = {};
    for (const line of lines) {
      const colon = line.indexOf(":");
      headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
    }
    const length = headOnly ? 0 : Number(headers["content-length"] ?? 0);
    if (end + 4 + length > data.length) break;
    responses.push({ status, headers, body: data.subarray(end + 4, end + 4 + length).toString("utf8") });
    at = end + 4 + length;
  }
  return { responses, rest: data.subarray(at).toString("latin1") };
}

/**
 * `fetch()` from a worker thread: a client with its own event loop, as a real one is, so that what it
 * sees does not depend on the server's turn of the loop (in the same thread, a reset can be lost in the
 * race). Resolves with the status and body, or with the error's message and cause code.
 */
export async function fetchFromWorker(
  url: string,
  init: { method: string; bodyBytes?: number; headers?: Record<string, string> },
): Promise<{ status: number; body: string } | { error: string; cause: string | undefined }> {
  const worker = new Worker(
    `const { parentPort, workerData } = require("node:worker_threads");
    const { url, init } = workerData;
    const body = init.bodyBytes === undefined ? undefined : new Uint8Array(init.bodyBytes).fill(97);
    fetch(url, { method: init.method, headers: init.headers, body }).then(
      async (res) => parentPort.postMessage({ status: res.status, body: await res.text() }),
      (error) => parentPort.postMessage({ error: String(error), cause: error.cause && error.cause.code }),
    );`,
    { eval: true, workerData: { url, init } },
  );
  try {
    return await new Promise((resolve, reject) => {
      worker.once("message", resolve);
      worker.once("error", reject);
    });
  } finally {
    await worker.terminate();
  }
}

export interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  text: string;
  // biome-ignore lint/suspicious/noExplicitAny: bodies are checked field by field.
  json: any;
}

/**
 * One request with any headers (fetch() will not send Host, Origin or Sec-Fetch-* as given), on its own
 * connection; `host` connects to another address than the URL's (a non-loopback interface).
 */
export function send(
  url: string,
  path: string,
  options: { method?: string; headers?: Record<string, string>; body?: unknown; host?: string } = {},
): Promise<Answer> {
  const { hostname, port } = new URL(url);
  const body =
    options.body === undefined
      ? undefined
      : typeof options.body === "string"
        ? options.body
        : JSON.stringify(options.body);
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        host: options.host ?? hostname,
        port,
        path,
        method: options.method ?? (body === undefined ? "GET" : "POST"),
        headers: {
          ...(body === undefined ? {} : { "content-type": "application/json" }),
          ...options.headers,
        },
        agent: false,
      },
      (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (chunk) => {
          text += chunk;
        });
        res.on("end", () => {
          let json: unknown;
          try {
            json = JSON.parse(text);
          } catch {
            json = undefined;
          }
          resolve({ status: res.statusCode!, headers: res.headers, text, json });
        });
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}
