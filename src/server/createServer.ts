import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from "node:http";
import type { AddressInfo } from "node:net";
import type { Logger } from "pino";
import type { Runtime } from "../runtime/Runtime.ts";
import { type AccessRecord, createLogger, logAccess } from "./accessLog.ts";
import { ANONYMOUS, ApiKeys } from "./auth.ts";
import { bodyPending, ClientGone, sendErrorUnread } from "./body.ts";
import { type ChatFormatter, createChatFormatter } from "./chat.ts";
import { ConnectionGuard } from "./connections.ts";
import { createCors } from "./cors.ts";
import { checkHost } from "./host.ts";
import { HttpError, sendError, toHttpError, tooManyConnections } from "./httpErrors.ts";
import { ServerMetrics } from "./metrics.ts";
import { checkOrigin } from "./origin.ts";
import { Readiness, type ReadinessState } from "./Readiness.ts";
import { parseRequestTarget } from "./requestTarget.ts";
import { Router } from "./router.ts";
import { chatCompletionsRoute, completionsRoute } from "./routes/generation.ts";
import { healthRoute, liveRoute } from "./routes/health.ts";
import { cancelRoute, metricsRoute, modelRoute, modelsRoute, slotsRoute } from "./routes/info.ts";
import { applyTemplateRoute, detokenizeRoute, tokenizeRoute } from "./routes/tokenizer.ts";
import { indexRoute, webRoute } from "./routes/web.ts";
import type { ServerContext } from "./ServerContext.ts";
import { type ResolvedServerOptions, resolveServerOptions, type ServerOptions } from "./ServerOptions.ts";
import { ServerCancel } from "./serveGeneration.ts";

/** How long close() lets open streams deliver their terminal chunk before it cuts their connections. */
const CLOSE_GRACE_MS = 2000;

/** A refused body is read and dropped up to this size (or maxBodyBytes) so that the client sees the answer. */
const DRAIN_BYTES = 16 * 1024 * 1024;

export interface ListenAddress {
  port: number;
  host: string;
  /** `http://host:port` */
  url: string;
}

/**
 * The OpenAI-compatible HTTP server over one runtime, which may still be loading: until it is ready,
 * `/health` answers 503 `loading` and the routes that need the model 503 `model_loading`. The runtime
 * stays the caller's to close.
 */
export class SluiceServer {
  /** The underlying node:http server. */
  readonly http: Server;
  readonly #context: ServerContext;
  readonly #readiness: Readiness;
  readonly #router: Router;
  readonly #keys: ApiKeys;
  readonly #connections: ConnectionGuard;
  readonly #cors: ReturnType<typeof createCors>;
  readonly #logger: Logger;
  /** Every request being handled, so close() can wait for all of them. */
  readonly #inflight = new Set<Promise<void>>();
  #closing = false;
  #closed: Promise<void> | undefined;

  constructor(runtime: Runtime | Promise<Runtime>, options: ServerOptions = {}) {
    const resolved = resolveServerOptions(options);
    const server = this;
    const readiness = new Readiness(runtime);
    this.#readiness = readiness;
    let chat: ChatFormatter | undefined;
    this.#context = {
      get runtime() {
        return readiness.runtime;
      },
      readiness,
      options: resolved,
      metrics: new ServerMetrics(() => readiness.current),
      generations: new Map(),
      chat: () => {
        chat ??= createChatFormatter(readiness.runtime.engine, resolved.chatTemplate);
        return chat;
      },
      modelNames: () =>
        resolved.servedModelNames.length > 0
          ? resolved.servedModelNames
          : [readiness.runtime.engine.info.model],
      get closing() {
        return server.#closing;
      },
    };
    this.#router = routes(this.#context);
    this.#keys = new ApiKeys(resolved.apiKeys, resolved.adminApiKey);
    this.#cors = createCors(resolved.corsOrigins);
    this.#logger = createLogger(resolved.logLevel, resolved.logDestination);
    this.http = createHttpServer(
      {
        noDelay: true,
        // A missing Host is answered in OpenAI's shape by checkHost, not with node's empty 400.
        requireHostHeader: false,
        headersTimeout: resolved.headersTimeoutMs,
        // Node's requestTimeout counts from the request's first byte to the end of its body.
        requestTimeout: resolved.bodyTimeoutMs,
        keepAliveTimeout: resolved.idleTimeoutMs,
        // Node checks the two timeouts above on this interval: a tenth of the shorter one, within 10-1000 ms.
        connectionsCheckingInterval: Math.min(1000, Math.max(10, Math.floor(resolved.headersTimeoutMs / 10))),
      },
      (req, res) => this.#track(req, res),
    );
    // Node answers an Expect it does not know with an empty 417 unless this is listened to.
    this.http.on("checkExpectation", (req: IncomingMessage, res: ServerResponse) =>
      this.#track(
        req,
        res,
        new HttpError(
          417,
          "invalid_request_error",
          "expectation_failed",
          `Expect: ${req.headers.expect} is not supported; only Expect: 100-continue is.`,
        ),
      ),
    );
    this.#connections = new ConnectionGuard(this.http, resolved, (status) =>
      this.#context.metrics.countHttp("unmatched", status),
    );
  }

  get options(): Readonly<ResolvedServerOptions> {
    return this.#context.options;
  }

  /** The served model names, the main one first; throws until the model is loaded when none were given. */
  get modelNames(): readonly string[] {
    return this.#context.modelNames();
  }

  /** Loading, ready (with the runtime) or failed (with the error): what `/health` reports. */
  get readiness(): ReadinessState {
    return this.#readiness.state;
  }

  /** Reports the model's load progress (0..1) for `/health` while the runtime is loading. */
  loadProgress(fraction: number): void {
    this.#readiness.progress(fraction);
  }

  /** Starts listening. Defaults: port 8080, host 127.0.0.1 (never all interfaces unless asked). */
  listen(port = 8080, host = "127.0.0.1"): Promise<ListenAddress> {
    return new Promise((resolve, reject) => {
      const onError = (error: Error) => reject(error);
      this.http.once("error", onError);
      this.http.listen(port, host, () => {
        this.http.off("error", onError);
        const address = this.http.address() as AddressInfo;
        const shown = address.family === "IPv6" ? `[${address.address}]` : address.address;
        resolve({ port: address.port, host: address.address, url: `http://${shown}:${address.port}` });
      });
    });
  }

  /**
   * Stops accepting connections and ends every open generation: with `graceful` (the default) each stream
   * gets its terminal chunk (`finish_reason: "cancelled"`) and `[DONE]` before its connection closes;
   * without it every connection is cut at once. Resolves when nothing is left. Idempotent.
   */
  close(options: { graceful?: boolean } = {}): Promise<void> {
    this.#closed ??= this.#close(options.graceful ?? true);
    return this.#closed;
  }

  async #close(graceful: boolean): Promise<void> {
    this.#closing = true;
    const stopped = new Promise<void>((resolve) => this.http.close(() => resolve()));
    if (!graceful) this.http.closeAllConnections();
    for (const { channel } of this.#context.generations.values()) channel.cancel(ServerCancel.shutdown);
    // A client that stopped reading would hold its stream open forever: past the grace period, cut it.
    const cut = setTimeout(() => this.http.closeAllConnections(), CLOSE_GRACE_MS);
    cut.unref();
    while (this.#inflight.size > 0) await Promise.allSettled([...this.#inflight]);
    this.http.closeIdleConnections();
    await stopped;
    clearTimeout(cut);
  }

  /** Handles one request (or only refuses it with `refusal`), so that close() can wait for it. */
  #track(req: IncomingMessage, res: ServerResponse, refusal?: HttpError): void {
    this.#connections.track(req, res);
    // One request's failure, whatever it is, must not take the process (and everyone's streams) down.
    const task = this.#handle(req, res, refusal).catch(() => {
      res.destroy();
    });
    this.#inflight.add(task);
    void task.finally(() => this.#inflight.delete(task));
  }

  async #handle(req: IncomingMessage, res: ServerResponse, refusal: HttpError | undefined): Promise<void> {
    let label = "unmatched";
    const access: AccessRecord = {};
    const started = performance.now();
    res.once("close", () => {
      this.#context.metrics.countHttp(label, res.statusCode);
      if (!this.#logger.isLevelEnabled("info")) return;
      const durationMs = Math.round((performance.now() - started) * 1000) / 1000;
      const entry = { method: req.method ?? "", route: label, status: res.statusCode, durationMs };
      logAccess(this.#logger, { ...entry, aborted: !res.writableFinished }, access);
    });
    // Keep-alive connections must not outlive a shutdown.
    if (this.#closing) res.setHeader("Connection", "close");
    try {
      // First, so that every answer to an allowed page (errors too) carries its CORS headers.
      const preflight = await this.#cors(req, res);
      if (refusal !== undefined) throw refusal;
      if (this.#connections.isExcess(req.socket)) throw tooManyConnections(this.options.maxConnections);
      const target = parseRequestTarget(req.url);
      const { allowedHosts, allowedOrigins } = this.#context.options;
      checkOrigin(req, checkHost(req, target, allowedHosts), allowedOrigins);
      if (preflight) {
        label = "preflight";
        res.writeHead(204, { "Content-Length": "0" }).end();
        return;
      }
      const { url } = target;
      const match = this.#router.match(req.method ?? "GET", url.pathname);
      if (match.kind === "none") {
        throw new HttpError(404, "not_found_error", "not_found", `No route ${req.method} ${url.pathname}.`);
      }
      if (match.kind === "method") {
        throw new HttpError(
          405,
          "invalid_request_error",
          "method_not_allowed",
          `${url.pathname} does not accept ${req.method}; use ${match.allow.join(" or ")}.`,
          null,
          { Allow: match.allow.join(", ") },
        );
      }
      const { route, params } = match;
      label = route.pattern;
      const caller = route.auth ? this.#keys.authenticate(req, true) : ANONYMOUS;
      // Before the body is read: a request the model cannot answer yet is refused at once.
      if (route.model) void this.#context.runtime;
      await route.handler({ req, res, url, params, caller, access });
    } catch (error) {
      if (error instanceof ClientGone) {
        res.destroy();
        return;
      }
      if (res.headersSent) {
        // Mid-stream failure of the server itself: cut rather than send a response that looks complete.
        res.destroy();
        return;
      }
      await this.#fail(req, res, toHttpError(error));
    }
  }

  /** Answers with `error`; a body still on its way is read (bounded) first, so the client sees the answer. */
  #fail(req: IncomingMessage, res: ServerResponse, error: HttpError): Promise<void> {
    if (!bodyPending(req)) {
      sendError(res, error);
      return Promise.resolve();
    }
    return sendErrorUnread(req, res, error, Math.max(DRAIN_BYTES, this.#context.options.maxBodyBytes));
  }
}

function routes(server: ServerContext): Router {
  return new Router()
    .add("POST", "/v1/completions", completionsRoute(server))
    .add("POST", "/v1/chat/completions", chatCompletionsRoute(server))
    .add("GET", "/v1/models", modelsRoute(server))
    .add("GET", "/v1/models/:model", modelRoute(server))
    .add("GET", "/v1/slots", slotsRoute(server))
    .add("DELETE", "/v1/requests/:id", cancelRoute(server))
    .add("POST", "/tokenize", tokenizeRoute(server))
    .add("POST", "/detokenize", detokenizeRoute(server))
    .add("POST", "/apply-template", applyTemplateRoute(server))
    .add("GET", "/metrics", metricsRoute(server), { model: false })
    .add("GET", "/health", healthRoute(server), { auth: false, model: false })
    .add("GET", "/health/ready", healthRoute(server), { auth: false, model: false })
    .add("GET", "/health/live", liveRoute(server), { auth: false, model: false })
    .add("GET", "/", indexRoute(server), { auth: false, model: false })
    .add("GET", "/web/*", webRoute(server), { auth: false, model: false });
}

/**
 * An OpenAI-compatible HTTP server over `runtime` (see src/server/README.md). Call `listen()` to start.
 * `runtime` may be a promise (`Runtime.create(...)` not awaited): the server then listens at once and
 * answers 503 until the model is loaded (report progress with `loadProgress`); a rejected promise leaves
 * it answering 503 with the error.
 */
export function createServer(runtime: Runtime | Promise<Runtime>, options: ServerOptions = {}): SluiceServer {
  return new SluiceServer(runtime, options);
}
