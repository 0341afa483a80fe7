import type { GenerationRequest } from "../types.ts";
import { HttpError } from "./httpErrors.ts";
import type { ServerContext } from "./ServerContext.ts";
import type { ChatRequestBody, CompletionRequestBody } from "./schemas.ts";

/**
 * OpenAI sampling semantics on top of the runtime's: OpenAI has no top_k, so the whole vocabulary (0) is the
 * default, and temperature and top_p default to 1 as in OpenAI's API (the runtime's own defaults are greedy).
 */
export function samplingOf(body: CompletionRequestBody | ChatRequestBody): Omit<GenerationRequest, "prompt"> {
  const request: Omit<GenerationRequest, "prompt"> = {
    temperature: body.temperature ?? 1,
    topP: body.top_p ?? 1,
    topK: body.top_k ?? 0,
    minP: body.min_p ?? 0,
  };
  if (body.seed != null) request.seed = body.seed;
  if (body.stop != null) request.stop = body.stop;
  if (body.stream_interval != null) request.streamInterval = body.stream_interval;
  if (body.skip_special_tokens != null) request.skipSpecialTokens = body.skip_special_tokens;
  if (body.ignore_eos != null) request.ignoreEos = body.ignore_eos;
  if (body.cache_prompt != null) request.cachePrompt = body.cache_prompt;
  return request;
}

/**
 * The model name a response gives for a request's `model`: the requested one when it is served or when any
 * name is accepted (one model is served, so a client's name stands for it; echoing it back keeps clients
 * that compare the two happy), the main served name when the request names none. With `strictModelName`,
 * a name that is not served is a 404.
 */
export function checkModel(server: ServerContext, requested: string | undefined): string {
  const names = server.modelNames();
  if (requested === undefined) return names[0]!;
  if (!server.options.strictModelName || names.includes(requested)) return requested;
  throw new HttpError(
    404,
    "invalid_request_error",
    "model_not_found",
    `The model ${JSON.stringify(requested)} does not exist on this server; it serves ${names.map((n) => JSON.stringify(n)).join(", ")} (see GET /v1/models).`,
    "model",
  );
}
