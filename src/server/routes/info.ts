import { mayControl } from "../auth.ts";
import { HttpError, sendJson } from "../httpErrors.ts";
import type { Handler } from "../router.ts";
import type { ServerContext } from "../ServerContext.ts";
import { ServerCancel } from "../serveGeneration.ts";
import { checkModel } from "../toGenerationRequest.ts";

const STARTED = Math.floor(Date.now() / 1000);

function modelObject(server: ServerContext, id: string) {
  const { info } = server.runtime.engine;
  return {
    id,
    object: "model",
    created: STARTED,
    owned_by: "sluice",
    context_length: info.contextSize,
    slots: info.slots,
  };
}

/** GET /v1/models: every served name (aliases of the one model), OpenAI's list shape. */
export function modelsRoute(server: ServerContext): Handler {
  return ({ res }) =>
    sendJson(res, 200, { object: "list", data: server.modelNames().map((id) => modelObject(server, id)) });
}

/** GET /v1/models/:model: a served name, or any name unless `strictModelName` (see `checkModel`). */
export function modelRoute(server: ServerContext): Handler {
  return ({ res, params }) => sendJson(res, 200, modelObject(server, checkModel(server, params.model)));
}

/**
 * GET /v1/slots: the runtime's live slot view. A request id is a capability (who knows it can cancel the
 * request), so a slot shows it only to the admin and to the key that created the request; anonymous
 * callers see none, not even their own.
 */
export function slotsRoute(server: ServerContext): Handler {
  return ({ res, caller }) => {
    const snapshot = server.runtime.snapshot();
    const slots = snapshot.slots.map(({ requestId, ...slot }) => {
      if (requestId === undefined) return slot;
      const owner = server.generations.get(requestId)?.owner;
      const visible = caller.admin || (caller.key !== undefined && owner === caller.key);
      return visible ? { ...slot, requestId } : slot;
    });
    sendJson(res, 200, {
      model: server.modelNames()[0],
      slotsTotal: server.runtime.engine.info.slots,
      backend: server.runtime.engine.info.backend ?? "cpu",
      ...snapshot,
      slots,
    });
  };
}

/** GET /metrics */
export function metricsRoute(server: ServerContext): Handler {
  return async ({ res }) => {
    const text = await server.metrics.render();
    res.writeHead(200, {
      "Content-Type": server.metrics.contentType,
      "Content-Length": Buffer.byteLength(text),
    });
    res.end(text);
  };
}

/**
 * DELETE /v1/requests/:id: an explicit stop of every choice of the response (any choice's id names the whole
 * response) still running. The stream itself ends with `finish_reason: "cancelled"` for each of them.
 * Only the key that created the request (or the admin) may stop it; to anyone else it does not exist, so
 * the answer tells nothing about other clients' requests.
 */
export function cancelRoute(server: ServerContext): Handler {
  return ({ res, params, caller }) => {
    const id = params.id!;
    const generation = server.generations.get(id);
    // The admin may also stop requests submitted to the runtime directly, outside this server.
    const allowed = generation === undefined ? caller.admin : mayControl(caller, generation.owner);
    // A response's id (choice 0's) stops every choice of it, even once choice 0 has ended.
    const cancelled =
      allowed &&
      (generation === undefined ? server.runtime.cancel(id) : generation.cancel(ServerCancel.deleted));
    if (!cancelled) {
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
