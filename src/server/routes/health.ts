import { sendJson } from "../httpErrors.ts";
import type { Handler } from "../router.ts";
import type { ServerContext } from "../ServerContext.ts";

/**
 * GET /health and /health/ready: whether the server can answer generations. 200 `ok` when the model is
 * loaded; 503 `loading` (with `progress`, 0..1) while it loads, `error` when it failed to, and
 * `shutting_down` once close() began. No key needed.
 */
export function healthRoute(server: ServerContext): Handler {
  return ({ res }) => {
    const state = server.readiness.state;
    if (state.status === "loading") {
      sendJson(res, 503, { status: "loading", progress: state.progress }, { "Retry-After": "1" });
      return;
    }
    if (state.status === "failed") {
      sendJson(res, 503, {
        status: "error",
        error: { message: `The model failed to load: ${state.error.message}`, code: "model_load_failed" },
      });
      return;
    }
    sendJson(res, server.closing ? 503 : 200, {
      status: server.closing ? "shutting_down" : "ok",
      model: server.modelNames()[0],
      // Where the model runs: "cpu", "cuda", "vulkan" or "metal" (an engine that does not say is not a GPU).
      backend: state.runtime.engine.info.backend ?? "cpu",
      ...state.runtime.load,
    });
  };
}

/** GET /health/live: 200 as long as the process answers HTTP, loading or not. No key needed. */
export function liveRoute(_server: ServerContext): Handler {
  return ({ res }) => sendJson(res, 200, { status: "alive" });
}
