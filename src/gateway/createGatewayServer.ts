import { randomUUID } from "node:crypto";
import type { Server } from "node:http";
import { SluiceError } from "../errors.ts";
import type { AccessRecord } from "../server/accessLog.ts";
import { readJsonBody } from "../server/body.ts";
import { HttpTransport, type ListenAddress } from "../server/HttpTransport.ts";
import { badRequest, HttpError, sendJson } from "../server/httpErrors.ts";
import { ServerMetrics } from "../server/metrics.ts";
import { type RouteContext, Router } from "../server/router.ts";
import {
  type ResolvedServerOptions,
  resolveServerOptions,
  type ServerOptions,
} from "../server/ServerOptions.ts";
import { SseWriter } from "../server/sse.ts";
import type { TargetEnd } from "./GenerationTarget.ts";
import { upstreamHttpError } from "./gatewayErrors.ts";
import { ResponseRelay } from "./ResponseRelay.ts";
import { choicesOf } from "./streamFromUpstream.ts";
import type { UpstreamPool } from "./UpstreamPool.ts";
import type { GenerationKind } from "./upstreamEvent.ts";

const STARTED = Math.floor(Date.now() / 1000);

/** Options that name or render a local model, which a gateway has none of. */
const MODEL_OPTIONS = [
  "servedModelNames",
  "modelName",
  "strictModelName",
  "chatTemplate",
  "webRoot",
] as const;

/**
 * Options of `createGatewayServer`: the HTTP options of `createServer` (keys, origins, CORS, hosts, limits,
 * timeouts, access log), with the same defaults and checks; the options about a local model are refused.
 */
export type GatewayServerOptions = Omit<ServerOptions, (typeof MODEL_OPTIONS)[number]>;

/** Cancel reasons the gateway passes to the channel. */
const GatewayCancel = {
  disconnected: "client disconnected",
  deadline: "server deadline",
  shutdown: "server shutting down",
} as const;

/**
 * Sluice as a gateway: the OpenAI-compatible HTTP API over an `UpstreamPool` instead of a local model.
 * `/v1/chat/completions` and `/v1/completions` (streaming or not) are forwarded to one upstream with the
 * client's body (streamed upstream, re-rendered here), so every stream ends with exactly one finish chunk and
 * `[DONE]`, and a client going away aborts the upstream request at once. `/v1/models` is the union of the
 * upstreams' models, `/v1/upstreams` the pool's state, `/health` 200 while an upstream can take requests,
 * `/metrics` the pool's metrics. The request checks are the server's (CORS, connection cap, request-target,
 * Host, Origin, route, key). The pool stays the caller's to close.
 */
export class GatewayServer {
  readonly http: Server;
  readonly pool: UpstreamPool;
  readonly options: Readonly<ResolvedServerOptions>;
  readonly #metrics: ServerMetrics;
  readonly #transport: HttpTransport;
  readonly #generations = new Set<AbortController>();

  constructor(pool: UpstreamPool, options: GatewayServerOptions = {}) {
    for (const name of MODEL_OPTIONS) {
      if ((options as Record<string, unknown>)[name] !== undefined) {
        throw new SluiceError(
          "invalid_option",
          `createGatewayServer: ${name} is about a local model; a gateway serves its upstreams' models (leave it out).`,
          { param: name },
        );
      }
    }
    const resolved = resolveServerOptions(options);
    this.options = resolved;
    this.pool = pool;
    // The server's own metrics: the process's (CPU, memory, event-loop lag, GC), HTTP traffic, open
    // streams, and the local engine's runtime figures when the pool has one.
    this.#metrics = new ServerMetrics(() => pool.local);
    const router = new Router()
      .add("POST", "/v1/chat/completions", (c) => this.#generate("chat", c))
      .add("POST", "/v1/completions", (c) => this.#generate("completion", c))
      .add("GET", "/v1/models", ({ res }) =>
        sendJson(res, 200, { object: "list", data: pool.models().map(modelObject) }),
      )
      .add("GET", "/v1/models/:model", ({ res, params }) => {
        const id = params.model!;
        if (!pool.models().includes(id)) {
          throw new HttpError(
            404,
            "not_found_error",
            "model_not_found",
            `No upstream serves the model ${JSON.stringify(id)}.`,
            "model",
          );
        }
        sendJson(res, 200, modelObject(id));
      })
      .add("GET", "/v1/upstreams", ({ res }) => sendJson(res, 200, { object: "list", data: pool.snapshot() }))
      .add("GET", "/metrics", async ({ res }) => {
        const [own, gateway] = await Promise.all([this.#metrics.render(), pool.metrics.render()]);
        res.writeHead(200, { "Content-Type": this.#metrics.contentType });
        res.end(`${own}\n${gateway}`);
      })
      .add("GET", "/health", (c) => this.#health(c), { auth: false })
      .add("GET", "/health/ready", (c) => this.#health(c), { auth: false })
      .add("GET", "/health/live", ({ res }) => sendJson(res, 200, { status: "alive" }), { auth: false });
    this.#transport = new HttpTransport({ options: resolved, router, metrics: this.#metrics });
    this.http = this.#transport.http;
  }

  /** Starts listening. Defaults: port 8080, host 127.0.0.1. */
  listen(port = 8080, host = "127.0.0.1"): Promise<ListenAddress> {
    return this.#transport.listen(port, host);
  }

  /**
   * Stops accepting connections and cancels every open generation (its upstream request is aborted; with
   * `graceful`, the default, each stream gets its `cancelled` finish chunk and `[DONE]`). Idempotent.
   */
  close(options: { graceful?: boolean } = {}): Promise<void> {
    return this.#transport.close(options.graceful ?? true, () => {
      for (const abort of this.#generations) abort.abort(GatewayCancel.shutdown);
    });
  }

  #health({ res }: RouteContext): void {
    const upstreams = this.pool.snapshot();
    const eligible = upstreams.filter((u) => u.eligible).length;
    const status = this.#transport.closing ? "shutting_down" : eligible > 0 ? "ok" : "no_upstream";
    sendJson(res, status === "ok" ? 200 : 503, { status, upstreams: { eligible, total: upstreams.length } });
  }

  async #generate(kind: GenerationKind, { req, res, access }: RouteContext): Promise<void> {
    if (this.#transport.closing)
      throw new SluiceError("runtime_closed", "The gateway is shutting down; retry elsewhere.");
    const body = await readJsonBody(req, this.options.maxBodyBytes);
    if (typeof body !== "object" || body === null || Array.isArray(body)) {
      throw badRequest("invalid_request", "The request body must be a JSON object.");
    }
    const b = body as Record<string, unknown>;
    const stream = b.stream === true;
    const streamOptions = b.stream_options as { include_usage?: unknown } | undefined;
    const id = `${kind === "chat" ? "chatcmpl" : "cmpl"}-${randomUUID()}`;
    access.id = id;
    const relay = new ResponseRelay({
      kind,
      id,
      model: typeof b.model === "string" ? b.model : undefined,
      created: Math.floor(Date.now() / 1000),
      stream,
      includeUsage: stream && streamOptions?.include_usage === true,
      choices: choicesOf(b),
      strictFinishReason: this.options.strictFinishReason,
    });
    const abort = new AbortController();
    this.pool.dispatch(b, relay, { kind, signal: abort.signal });
    this.#generations.add(abort);
    const onClose = () => {
      if (!res.writableFinished) abort.abort(GatewayCancel.disconnected);
    };
    res.on("close", onClose);
    if (res.destroyed || req.socket.destroyed) onClose();
    const { requestTimeoutMs } = this.options;
    const deadline =
      requestTimeoutMs === undefined
        ? undefined
        : setTimeout(() => abort.abort(GatewayCancel.deadline), requestTimeoutMs);
    try {
      // Until an upstream accepts, a failure can still be an HTTP status (502/503/504, or the upstream's 4xx).
      await relay.accepted$;
      if (!stream || relay.isEnded) {
        const how = await relay.ended;
        record(access, relay);
        const error = relay.error;
        if (error !== undefined && !relay.delivered) throw upstreamHttpError(error, rejectedOf(how));
        if (!stream) {
          if (res.destroyed) return;
          if (error !== undefined) throw upstreamHttpError(error, rejectedOf(how));
          sendJson(res, 200, relay.body(), { "X-Request-Id": id });
          return;
        }
      }
      const sse = new SseWriter(res, this.options.keepAliveMs, { "X-Request-Id": id });
      this.#metrics.streamOpened();
      try {
        relay.start(sse);
        await relay.finishStream();
        record(access, relay);
      } finally {
        sse.dispose();
        this.#metrics.streamClosed();
      }
    } finally {
      clearTimeout(deadline);
      res.off("close", onClose);
      this.#generations.delete(abort);
    }
  }
}

function modelObject(id: string) {
  return { id, object: "model", created: STARTED, owned_by: "upstream" };
}

function record(access: AccessRecord, relay: ResponseRelay): void {
  const usage = relay.usage;
  access.promptTokens = usage.promptTokens;
  access.completionTokens = usage.completionTokens;
  access.cachedTokens = usage.cachedTokens;
  if (usage.completionTokens > 0) access.ttftMs = relay.timings.firstTokenMs;
}

function rejectedOf(how: TargetEnd): { status: number; body: unknown } | undefined {
  return how.kind === "error" ? how.rejected : undefined;
}

/**
 * The OpenAI-compatible API over a pool of upstreams (see `GatewayServer`). Throws `invalid_option` for a
 * wrong option. Call `listen()` to start; `close()` the server, then the pool.
 */
export function createGatewayServer(pool: UpstreamPool, options: GatewayServerOptions = {}): GatewayServer {
  return new GatewayServer(pool, options);
}
