import type { IncomingMessage, Server, ServerResponse } from "node:http";
import type { Runtime } from "../runtime/Runtime.ts";
import { type ChatFormatter, createChatFormatter } from "./chat.ts";
import { HttpTransport, type ListenAddress } from "./HttpTransport.ts";
import { HttpError } from "./httpErrors.ts";
import { ServerMetrics } from "./metrics.ts";
import { Readiness, type ReadinessState } from "./Readiness.ts";
import { Router } from "./router.ts";
import { chatCompletionsRoute, completionsRoute } from "./routes/generation.ts";
import { healthRoute, liveRoute } from "./routes/health.ts";
import { cancelRoute, metricsRoute, modelRoute, modelsRoute, slotsRoute } from "./routes/info.ts";
import { applyTemplateRoute, detokenizeRoute, tokenizeRoute } from "./routes/tokenizer.ts";
import { indexRoute, webRoute } from "./routes/web.ts";
import type { ServerContext } from "./ServerContext.ts";
import { type ResolvedServerOptions, resolveServerOptions, type ServerOptions } from "./ServerOptions.ts";
import { ServerCancel } from "./serveGeneration.ts";

export type { ListenAddress } from "./HttpTransport.ts";

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
  readonly #transport: HttpTransport;

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
        return server.#transport.closing;
      },
    };
    this.#transport = new HttpTransport({
      options: resolved,
      router: routes(this.#context),
      metrics: this.#context.metrics,
      // Before the body is read: a request the model cannot answer yet is refused at once.
      beforeHandler: (route) => {
        if (route.model) void this.#context.runtime;
      },
    });
    this.http = this.#transport.http;
    // Node answers an Expect it does not know with an empty 417 unless this is listened to.
    this.http.on("checkExpectation", (req: IncomingMessage, res: ServerResponse) =>
      this.#transport.track(
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
    return this.#transport.listen(port, host);
  }

  /**
   * Stops accepting connections and ends every open generation: with `graceful` (the default) each stream
   * gets its terminal chunk (`finish_reason: "cancelled"`) and `[DONE]` before its connection closes;
   * without it every connection is cut at once. Resolves when nothing is left. Idempotent.
   */
  close(options: { graceful?: boolean } = {}): Promise<void> {
    return this.#transport.close(options.graceful ?? true, () => {
      for (const { channel } of this.#context.generations.values()) channel.cancel(ServerCancel.shutdown);
    });
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
