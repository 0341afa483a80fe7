import { HttpError, sendJson } from "../httpErrors.ts";
import type { Handler } from "../router.ts";
import type { ServerContext } from "../ServerContext.ts";

const STARTED = Math.floor(Date.now() / 1000);

function modelObject(server: ServerContext) {
  const { info } = server.runtime.engine;
  return {
    id: server.options.modelName,
    object: "model",
    created: STARTED,
    owned_by: "sluice",
    context_length: info.contextSize,
    slots: info.slots,
  };
}

/** GET /v1/models */
export function modelsRoute(server: ServerContext): Handler {
  return ({ res }) => sendJson(res, 200, { object: "list", data: [modelObject(server)] });
}

/** GET /v1/models/:model */
export function modelRoute(server: ServerContext): Handler {
  return ({ res, params }) => {
    const requested = decodeURIComponent(params.model!);
    if (requested !== server.options.modelName) {
      throw new HttpError(
        404,
        "invalid_request_error",
        "model_not_found",
        `The model ${JSON.stringify(requested)} does not exist on this server; it serves ${JSON.stringify(server.options.modelName)}.`,
        "model",
      );
    }
    sendJson(res, 200, modelObject(server));
  };
}

/** GET /health: no key needed, 503 while shutting down. */
export function healthRoute(server: ServerContext): Handler {
  return ({ res }) => {
    const load = server.runtime.load;
    sendJson(res, server.closing ? 503 : 200, {
      status: server.closing ? "shutting_down" : "ok",
      model: server.options.modelName,
      ...load,
    });
  };
}

/** GET /v1/slots: the runtime's live slot view. */
export function slotsRoute(server: ServerContext): Handler {
  return ({ res }) =>
    sendJson(res, 200, {
      model: server.options.modelName,
      slotsTotal: server.runtime.engine.info.slots,
      ...server.runtime.snapshot(),
    });
}

/** GET /metrics */
export function metricsRoute(server: ServerContext): Handler {
  return ({ res }) => {
    const text = server.metrics.render(server.runtime);
    res.writeHead(200, {
      "Content-Type": "text/plain; version=0.0.4; charset=utf-8",
      "Content-Length": Buffer.byteLength(text),
    });
    res.end(text);
  };
}

/** DELETE /v1/requests/:id: an explicit stop. The stream itself ends with `finish_reason: "cancelled"`. */
export function cancelRoute(server: ServerContext): Handler {
  return ({ res, params }) => {
    const id = decodeURIComponent(params.id!);
    if (!server.runtime.cancel(id)) {
      throw new HttpError(
        404,
        "not_found_error",
        "request_not_found",
        `No running or queued request has id ${JSON.stringify(id)} (it may have finished already).`,
        "id",
      );
    }
    sendJson(res, 200, { id, cancelled: true });
  };
}
