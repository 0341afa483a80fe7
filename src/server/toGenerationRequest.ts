import { SluiceError } from "../errors.ts";
import type { GenerationRequest, GrammarSpec } from "../types.ts";
import { HttpError } from "./httpErrors.ts";
import type { ServerContext } from "./ServerContext.ts";
import type { ChatRequestBody, CompletionRequestBody } from "./schemas.ts";

type Body = CompletionRequestBody | ChatRequestBody;

/**
 * OpenAI sampling semantics on top of the runtime's: OpenAI has no top_k, so the whole vocabulary (0) is the
 * default, and temperature and top_p default to 1 as in OpenAI's API (the runtime's own defaults are greedy).
 * The penalties, logit bias, stop token ids, min_tokens and the output constraint map one to one onto the
 * runtime's fields (`GenerationRequest`); log-probabilities are set by the route (their field differs).
 */
export function samplingOf(body: Body): Omit<GenerationRequest, "prompt"> {
  const request: Omit<GenerationRequest, "prompt"> = {
    temperature: body.temperature ?? 1,
    topP: body.top_p ?? 1,
    topK: body.top_k ?? 0,
    minP: body.min_p ?? 0,
  };
  if (body.seed != null) request.seed = body.seed;
  if (body.stop != null) request.stop = body.stop;
  if (body.stop_token_ids != null && body.stop_token_ids.length > 0)
    request.stopTokenIds = body.stop_token_ids;
  if (body.min_tokens != null && body.min_tokens > 0) request.minTokens = body.min_tokens;
  if (body.presence_penalty != null) request.presencePenalty = body.presence_penalty;
  if (body.frequency_penalty != null) request.frequencyPenalty = body.frequency_penalty;
  if (body.repeat_penalty != null) request.repeatPenalty = body.repeat_penalty;
  if (body.repeat_last_n != null) request.repeatLastN = body.repeat_last_n;
  if (body.logit_bias != null && Object.keys(body.logit_bias).length > 0) request.logitBias = body.logit_bias;
  const grammar = grammarOf(body);
  if (grammar !== undefined) request.grammar = grammar;
  if (body.stream_interval != null) request.streamInterval = body.stream_interval;
  if (body.skip_special_tokens != null) request.skipSpecialTokens = body.skip_special_tokens;
  if (body.ignore_eos != null) request.ignoreEos = body.ignore_eos;
  if (body.cache_prompt != null) request.cachePrompt = body.cache_prompt;
  if (body.speculative != null) request.speculative = body.speculative;
  return request;
}

/**
 * The output constraint: `response_format` json_object is any JSON object, json_schema (with a schema) JSON
 * valid against it, whatever `strict` says (a constraint is always enforced, never best effort); llama-server's
 * `grammar` is GBNF. The schema refuses both at once.
 */
export function grammarOf(body: Body): GrammarSpec | undefined {
  if (body.grammar != null) return { type: "gbnf", grammar: body.grammar };
  const format = body.response_format;
  if (format == null || format.type === "text") return undefined;
  if (format.type === "json_object") return { type: "json" };
  const schema = format.json_schema.schema;
  return schema == null ? { type: "json" } : { type: "json_schema", schema };
}

/** The runtime's field names, as the wire names them (`grammar`: see `wireNames`). */
const WIRE: Record<string, string> = {
  maxTokens: "max_tokens",
  minTokens: "min_tokens",
  topK: "top_k",
  topP: "top_p",
  minP: "min_p",
  repeatPenalty: "repeat_penalty",
  repeatLastN: "repeat_last_n",
  presencePenalty: "presence_penalty",
  frequencyPenalty: "frequency_penalty",
  logitBias: "logit_bias",
  stopTokenIds: "stop_token_ids",
  streamInterval: "stream_interval",
  skipSpecialTokens: "skip_special_tokens",
  ignoreEos: "ignore_eos",
};

/**
 * The wire names of one request's runtime fields: `grammar` is `response_format` unless the body sent
 * llama-server's `grammar`; `logprobs` is chat's `top_logprobs` when that was sent.
 */
export function wireNames(body: Body): Record<string, string> {
  const names: Record<string, string> = { ...WIRE };
  names.grammar = body.grammar != null ? "grammar" : "response_format";
  if ("top_logprobs" in body && body.top_logprobs != null) names.logprobs = "top_logprobs";
  return names;
}

const RUNTIME_NAMES = new RegExp(`\\b(${Object.keys(WIRE).join("|")})\\b`, "g");

/**
 * A runtime refusal (`invalid_request` and friends) in the request's own terms: its param and the field names
 * in its message become the wire names (`logitBias` → `logit_bias`; `grammar` → `response_format` as a
 * param, and in "remove grammar", since the word is also the thing itself), so the 400 says which field of
 * the body to change. Anything else is returned as it is.
 */
export function inWireTerms(error: unknown, names: Record<string, string>): unknown {
  if (!(error instanceof SluiceError) || error.param === undefined) return error;
  const param = names[error.param.split(".")[0]!];
  if (param === undefined) return error;
  const message = error.message
    .replace(RUNTIME_NAMES, (name) => names[name] ?? name)
    .replace(/\bremove grammar\b/g, `remove ${names.grammar}`);
  return new SluiceError(error.code, message, { param, cause: error });
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
