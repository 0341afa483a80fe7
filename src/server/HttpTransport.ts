import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from "node:http";
import type { AddressInfo } from "node:net";
import type { Logger } from "pino";
import { type AccessRecord, createLogger, logAccess } from "./accessLog.ts";
import { ANONYMOUS, ApiKeys } from "./auth.ts";
import { bodyPending, ClientGone, sendErrorUnread } from "./body.ts";
import { ConnectionGuard } from "./connections.ts";
import { createCors } from "./cors.ts";
import { checkHost } from "./host.ts";
import { HttpError, sendError, toHttpError, tooManyConnections } from "./httpErrors.ts";
import type { ServerMetrics } from "./metrics.ts";
import { checkOrigin } from "./origin.ts";
import { parseRequestTarget } from "./requestTarget.ts";
import type { Route, Router } from "./router.ts";
import type { ResolvedServerOptions } from "./ServerOptions.ts";

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

export interface HttpTransportOptions {
  options: ResolvedServerOptions;
  router: Router;
  /** Counts every request by route and status (`unmatched` for those that reach no route). */
  metrics: ServerMetrics;
  /** Called for the matched route once the key is checked, before the handler; may throw (an `HttpError`). */
  beforeHandler?: (route: Route) => void;
}

/**
 * The HTTP side of a server, shared by `SluiceServer` and the gateway: the node:http server with its
 * timeouts, the checks every request meets in order (CORS, connection cap, request-target, Host, Origin,
 * preflight, route, key), errors mapped to OpenAI's shape, the access log, and a graceful `close()`.
 */
export class HttpTransport {
  /** The underlying node:http server. */
  readonly http: Server;
  readonly #options: ResolvedServerOptions;
  readonly #router: Router;
  readonly #metrics: ServerMetrics;
  readonly #beforeHandler: ((route: Route) => void) | undefined;
  readonly #keys: ApiKeys;
  readonly #connections: ConnectionGuard;
  readonly #cors: ReturnType<typeof createCors>;
  readonly #logger: Logger;
  /** Every request being handled, so close() can wait for all of them. */
  readonly #inflight = new Set<Promise<void>>();
  #closing = false;
  #closed: Promise<void> | undefined;

  constructor({ options, router, metrics, beforeHandler }: HttpTransportOptions) {
    this.#options = options;
    this.#router = router;
    this.#metrics = metrics;
    this.#beforeHandler = beforeHandler;
    this.#keys = new ApiKeys(options.apiKeys, options.adminApiKey);
    this.#cors = createCors(options.corsOrigins);
    this.#logger = createLogger(options.logLevel, options.logDestination);
    this.http = createHttpServer(
      {
        noDelay: true,
        // A missing Host is answered in OpenAI's shape by checkHost, not with node's empty 400.
        requireHostHeader: false,
        headersTimeout: options.headersTimeoutMs,
        // Node's requestTimeout counts from the request's first byte to the end of its body.
        requestTimeout: options.bodyTimeoutMs,
        keepAliveTimeout: options.idleTimeoutMs,
        // Node checks the two timeouts above on this interval: a tenth of the shorter one, within 10-1000 ms.
        connectionsCheckingInterval: Math.min(1000, Math.max(10, Math.floor(options.headersTimeoutMs / 10))),
      },
      (req, res) => this.track(req, res),
    );
    this.#connections = new ConnectionGuard(this.http, options, (status) =>
      metrics.countHttp("unmatched", status),
    );
  }

  /** True once close() began. */
  get closing(): boolean {
    return this.#closing;
  }

  /** Starts listening on `host:port`. */
  listen(port: number, host: string): Promise<ListenAddress> {
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
   * Stops accepting connections, calls `cancelAll` so that every open generation ends (with `graceful`, a
   * stream still gets its terminal chunk; without it every connection is cut at once), and resolves when
   * nothing is left. Idempotent: later calls get the first call's promise.
   */
  close(graceful: boolean, cancelAll: () => void): Promise<void> {
    this.#closed ??= this.#close(graceful, cancelAll);
    return this.#closed;
  }

  async #close(graceful: boolean, cancelAll: () => void): Promise<void> {
    this.#closing = true;
    const stopped = new Promise<void>((resolve) => this.http.close(() => resolve()));
    if (!graceful) this.http.closeAllConnections();
    cancelAll();
    // A client that stopped reading would hold its stream open forever: past the grace period, cut it.
    const cut = setTimeout(() => this.http.closeAllConnections(), CLOSE_GRACE_MS);
    cut.unref();
    while (this.#inflight.size > 0) await Promise.allSettled([...this.#inflight]);
    this.http.closeIdleConnections();
    await stopped;
    clearTimeout(cut);
  }

  /** Handles one request (or only refuses it with `refusal`), so that close() can wait for it. */
  track(req: IncomingMessage, res: ServerResponse, refusal?: HttpError): void {
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
      this.#metrics.countHttp(label, res.statusCode);
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
      if (this.#connections.isExcess(req.socket)) throw tooManyConnections(this.#options.maxConnections);
      const target = parseRequestTarget(req.url);
      const { allowedHosts, allowedOrigins } = this.#options;
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
      this.#beforeHandler?.(route);
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
    return sendErrorUnread(req, res, error, Math.max(DRAIN_BYTES, this.#options.maxBodyBytes));
  }
}
