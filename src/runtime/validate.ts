import { randomUUID } from "node:crypto";
import { type EngineInfo, isPlainSampler, type SamplerConfig } from "../engine/Engine.ts";
import { SluiceError } from "../errors.ts";
import type { GenerationRequest, GrammarSpec } from "../types.ts";

/** A request after validation: every default applied, the prompt tokenized. */
export interface NormalizedRequest {
  id: string;
  promptTokens: number[];
  maxTokens: number;
  stop: string[];
  stopTokenIds: number[];
  sampler: SamplerConfig;
  /** Tokens before end-of-generation, stop tokens and stop strings count. */
  minTokens: number;
  streamInterval: number;
  skipSpecialTokens: boolean;
  ignoreEos: boolean;
  rejectOnError: boolean;
  cachePrompt: boolean;
  /** Decode speculatively: the runtime drafts and the request's sampling allows it. */
  speculative: boolean;
  signal: AbortSignal | undefined;
}

export interface SubmissionLimits {
  info: EngineInfo;
  tokenize(text: string, options: { special: boolean }): number[];
  /** Whether text prompts get a BOS token. */
  addBos: boolean;
  /** Default for maxTokens when the request has none. */
  defaultMaxTokens: number;
  /** The engine's grammar compiler (`Engine.grammarText`), when it has one. */
  grammarText?: ((spec: GrammarSpec) => string) | undefined;
  /** Whether the runtime drafts and its engine verifies drafts (speculative decoding). Defaults to false. */
  speculative?: boolean;
}

const KNOWN_KEYS = new Set<string>([
  "prompt",
  "maxTokens",
  "stop",
  "stopTokenIds",
  "streamInterval",
  "skipSpecialTokens",
  "ignoreEos",
  "parseSpecialTokens",
  "addBos",
  "signal",
  "id",
  "rejectOnError",
  "cachePrompt",
  "temperature",
  "topK",
  "topP",
  "minP",
  "seed",
  "repeatPenalty",
  "repeatLastN",
  "presencePenalty",
  "frequencyPenalty",
  "logitBias",
  "minTokens",
  "grammar",
  "logprobs",
  "speculative",
] satisfies (keyof GenerationRequest)[]);

const MAX_STOPS = 16;
const MAX_STOP_LENGTH = 256;

function invalid(param: string, message: string): SluiceError {
  return new SluiceError("invalid_request", message, { param });
}

function optionalNumber(
  request: GenerationRequest,
  key: keyof GenerationRequest,
  fallback: number,
  check: (v: number) => boolean,
  rule: string,
): number {
  const value = request[key];
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isFinite(value) || !check(value)) {
    throw invalid(key, `${key} must be ${rule}; got ${JSON.stringify(value) ?? String(value)}.`);
  }
  return value;
}

function optionalBoolean(
  request: GenerationRequest,
  key: keyof GenerationRequest,
  fallback: boolean,
): boolean {
  const value = request[key];
  if (value === undefined) return fallback;
  if (typeof value !== "boolean")
    throw invalid(key, `${key} must be true or false; got ${JSON.stringify(value)}.`);
  return value;
}

function isTokenId(value: unknown, vocabularySize: number): value is number {
  return typeof value === "number" && Number.isInteger(value) && value >= 0 && value < vocabularySize;
}

/**
 * Checks a submission and applies defaults, synchronously: a bad request fails here with a typed error whose
 * message says what to change, before it costs anything.
 */
export function validateStreamingSubmission(
  request: GenerationRequest,
  limits: SubmissionLimits,
): NormalizedRequest {
  if (request === null || typeof request !== "object") {
    throw invalid("request", 'The request must be an object such as { prompt: "..." }.');
  }
  const unknown = Object.keys(request).filter((key) => !KNOWN_KEYS.has(key));
  if (unknown.length > 0) {
    throw invalid(
      unknown[0]!,
      `Unknown option${unknown.length > 1 ? "s" : ""} ${unknown.join(", ")}. Known options: ${[...KNOWN_KEYS].join(", ")}.`,
    );
  }
  const { info } = limits;
  const vocabularySize = info.vocabulary.size;

  const id = request.id ?? randomUUID();
  if (typeof id !== "string" || id.length === 0 || id.length > 128) {
    throw invalid("id", "id must be a non-empty string of at most 128 characters.");
  }
  if (request.signal !== undefined && !(request.signal instanceof AbortSignal)) {
    throw invalid("signal", "signal must be an AbortSignal.");
  }

  const promptTokens = tokenizePrompt(request, limits);
  const room = info.contextSize - promptTokens.length;
  if (room < 1) throw tooLong(`${promptTokens.length} tokens`, info.contextSize);
  const maxTokens = optionalNumber(
    request,
    "maxTokens",
    Math.min(limits.defaultMaxTokens, room),
    (v) => Number.isInteger(v) && v >= 1,
    "an integer >= 1",
  );
  if (promptTokens.length + maxTokens > info.contextSize) {
    throw new SluiceError(
      "prompt_too_long",
      `prompt (${promptTokens.length} tokens) + maxTokens (${maxTokens}) exceeds the context of ${info.contextSize} tokens per slot; ask for at most ${room} tokens or shorten the prompt.`,
      { param: "maxTokens" },
    );
  }

  const stop =
    request.stop === undefined ? [] : typeof request.stop === "string" ? [request.stop] : request.stop;
  if (
    !Array.isArray(stop) ||
    stop.length > MAX_STOPS ||
    stop.some(
      (s) => typeof s !== "string" || s.length === 0 || s.length > MAX_STOP_LENGTH || !s.isWellFormed(),
    )
  ) {
    throw invalid(
      "stop",
      `stop must be a non-empty string or an array of at most ${MAX_STOPS} non-empty strings of at most ${MAX_STOP_LENGTH} characters.`,
    );
  }
  const stopTokenIds = request.stopTokenIds ?? [];
  if (!Array.isArray(stopTokenIds) || !stopTokenIds.every((t) => isTokenId(t, vocabularySize))) {
    throw invalid("stopTokenIds", `stopTokenIds must be an array of token ids in [0, ${vocabularySize}).`);
  }

  const temperature = optionalNumber(request, "temperature", 0, (v) => v >= 0 && v <= 100, "a number >= 0");
  const topK = optionalNumber(
    request,
    "topK",
    40,
    (v) => Number.isInteger(v) && v >= 0,
    "an integer >= 0 (0 = whole vocabulary)",
  );
  const topP = optionalNumber(request, "topP", 0.95, (v) => v > 0 && v <= 1, "a number in (0, 1]");
  const minP = optionalNumber(request, "minP", 0, (v) => v >= 0 && v <= 1, "a number in [0, 1]");
  const seed = optionalNumber(
    request,
    "seed",
    Math.floor(Math.random() * 0x7fffffff),
    (v) => Number.isInteger(v) && v >= 0 && v <= 0xffffffff,
    "an integer in [0, 2^32)",
  );
  const repeatPenalty = optionalNumber(
    request,
    "repeatPenalty",
    1,
    (v) => v > 0 && v <= 10,
    "a number in (0, 10] (1 is off)",
  );
  const repeatLastN = optionalNumber(
    request,
    "repeatLastN",
    64,
    (v) => Number.isInteger(v) && v >= -1,
    "an integer >= -1 (0 off, -1 the whole context)",
  );
  const presencePenalty = optionalNumber(
    request,
    "presencePenalty",
    0,
    (v) => v >= -2 && v <= 2,
    "in [-2, 2]",
  );
  const frequencyPenalty = optionalNumber(
    request,
    "frequencyPenalty",
    0,
    (v) => v >= -2 && v <= 2,
    "in [-2, 2]",
  );
  const logitBias = parseLogitBias(request.logitBias, vocabularySize);
  const minTokens = optionalNumber(
    request,
    "minTokens",
    0,
    (v) => Number.isInteger(v) && v >= 0 && v <= maxTokens,
    `an integer in [0, maxTokens = ${maxTokens}]`,
  );
  const logprobs =
    request.logprobs === undefined
      ? undefined
      : optionalNumber(
          request,
          "logprobs",
          0,
          (v) => Number.isInteger(v) && v >= 0 && v <= 20,
          "an integer in [0, 20]",
        );
  if (logprobs !== undefined && !info.capabilities.logprobs) {
    throw invalid("logprobs", `The engine (${info.model}) cannot report log-probabilities; remove logprobs.`);
  }
  const grammar = request.grammar === undefined ? undefined : compileGrammar(request.grammar, info, limits);
  if (grammar !== undefined && minTokens > 0) {
    // A grammar decides where its output ends: once it is complete only end-of-generation may follow, which
    // minTokens would ban, leaving nothing to sample.
    throw invalid(
      "minTokens",
      "minTokens cannot be combined with a grammar: the grammar decides where the output ends. Remove minTokens (or the grammar).",
    );
  }
  // Until minTokens are out, nothing that would end the generation may be sampled.
  const suppress =
    minTokens > 0
      ? {
          tokens: [...new Set([...(ignoreEosOf(request) ? [] : info.vocabulary.eogIds), ...stopTokenIds])],
          count: minTokens,
        }
      : undefined;
  const sampler: SamplerConfig = {
    temperature,
    topK,
    topP,
    minP,
    seed,
    repeatPenalty,
    repeatLastN,
    presencePenalty,
    frequencyPenalty,
    logitBias,
    suppress,
    grammar,
    logprobs,
  };
  const speculative = speculativeOf(request, limits, { plain: isPlainSampler(sampler) });
  const streamInterval = Math.max(
    1,
    Math.floor(optionalNumber(request, "streamInterval", 1, (v) => v > 0, "a number >= 1")),
  );

  return {
    id,
    promptTokens,
    maxTokens,
    stop: [...stop],
    stopTokenIds: [...stopTokenIds],
    sampler,
    minTokens,
    streamInterval,
    skipSpecialTokens: optionalBoolean(request, "skipSpecialTokens", true),
    ignoreEos: optionalBoolean(request, "ignoreEos", false),
    rejectOnError: optionalBoolean(request, "rejectOnError", false),
    cachePrompt: optionalBoolean(request, "cachePrompt", true),
    speculative,
    signal: request.signal,
  };
}

/**
 * Whether the request decodes speculatively: by default when the runtime drafts and its sampling is plain
 * (what verification supports); an explicit `true` that cannot be honoured is refused rather than ignored.
 */
function speculativeOf(
  request: GenerationRequest,
  limits: SubmissionLimits,
  sampling: { plain: boolean },
): boolean {
  const asked = optionalBoolean(request, "speculative", true);
  if (!asked) return false;
  const available = limits.speculative === true;
  if (request.speculative === true && !available) {
    throw invalid(
      "speculative",
      `The runtime does not decode speculatively (its drafter is off, or the engine ${limits.info.model} cannot verify drafts); remove speculative or start the runtime with drafter "prompt-lookup".`,
    );
  }
  if (request.speculative === true && !sampling.plain) {
    throw invalid(
      "speculative",
      "speculative cannot go with grammar, logprobs, penalties, logitBias or minTokens (draft verification samples with temperature, top-k, top-p, min-p and seed only); remove speculative or those options.",
    );
  }
  return available && sampling.plain;
}

function ignoreEosOf(request: GenerationRequest): boolean {
  return request.ignoreEos === true;
}

/** OpenAI's logit_bias as a map: keys are token ids (numbers or their decimal strings), values -100 to 100. */
function parseLogitBias(value: unknown, vocabularySize: number): Map<number, number> | undefined {
  if (value === undefined) return undefined;
  const rule = `logitBias must map token ids in [0, ${vocabularySize}) to numbers in [-100, 100]`;
  if (value === null || typeof value !== "object" || Array.isArray(value))
    throw invalid("logitBias", `${rule}.`);
  const bias = new Map<number, number>();
  for (const [key, v] of Object.entries(value)) {
    const token = /^(0|[1-9][0-9]*)$/.test(key) ? Number(key) : Number.NaN;
    if (!isTokenId(token, vocabularySize))
      throw invalid("logitBias", `${rule}; ${JSON.stringify(key)} is not one.`);
    if (typeof v !== "number" || !Number.isFinite(v) || v < -100 || v > 100) {
      throw invalid("logitBias", `${rule}; token ${key} has ${JSON.stringify(v)}.`);
    }
    if (v !== 0) bias.set(token, v);
  }
  return bias.size > 0 ? bias : undefined;
}

function compileGrammar(
  spec: GrammarSpec,
  info: EngineInfo,
  limits: SubmissionLimits,
): { gbnf: string; trigger?: string } {
  if (!info.capabilities.grammar || limits.grammarText === undefined) {
    throw invalid(
      "grammar",
      `The engine (${info.model}) cannot constrain sampling with a grammar; remove grammar.`,
    );
  }
  const kinds = ["gbnf", "json", "json_schema"];
  if (spec === null || typeof spec !== "object" || !kinds.includes((spec as { type?: string }).type ?? "")) {
    throw invalid(
      "grammar",
      'grammar must be { type: "gbnf", grammar }, { type: "json" } or { type: "json_schema", schema }.',
    );
  }
  if (spec.type === "gbnf") {
    if (typeof spec.grammar !== "string" || spec.grammar.trim() === "") {
      throw invalid("grammar", "grammar.grammar must be GBNF text with a root rule.");
    }
    if (spec.trigger !== undefined && (typeof spec.trigger !== "string" || spec.trigger === "")) {
      throw invalid("grammar", "grammar.trigger must be a non-empty string.");
    }
  }
  if (spec.type === "json_schema" && (spec.schema === null || typeof spec.schema !== "object")) {
    throw invalid("grammar", "grammar.schema must be a JSON schema object.");
  }
  const gbnf = limits.grammarText(spec);
  return spec.type === "gbnf" && spec.trigger !== undefined ? { gbnf, trigger: spec.trigger } : { gbnf };
}

function tooLong(what: string, contextSize: number): SluiceError {
  return new SluiceError(
    "prompt_too_long",
    `The prompt is ${what}; the context holds ${contextSize} tokens per slot, so at most ${contextSize - 1} prompt tokens leave room to generate. Shorten the prompt or raise contextSize.`,
    { param: "prompt" },
  );
}

function tokenizePrompt(request: GenerationRequest, limits: SubmissionLimits): number[] {
  const { prompt } = request;
  const { vocabulary, contextSize } = limits.info;
  if (typeof prompt === "string") {
    if (prompt.length === 0) throw invalid("prompt", "prompt is empty; give some text or token ids.");
    // Tokenizing runs on the event loop, beside every stream's step loop: a text too long for the context
    // whatever its tokens is refused by size first (a token stands for at most maxTokenBytes bytes).
    // prompt.length counts UTF-16 units, at least a third of the UTF-8 bytes: skip counting when small.
    if (prompt.length * 3 > (contextSize - 1) * vocabulary.maxTokenBytes) {
      const bytes = Buffer.byteLength(prompt, "utf8");
      if (bytes > (contextSize - 1) * vocabulary.maxTokenBytes) {
        throw tooLong(
          `${bytes} bytes of text, more than ${contextSize - 1} tokens whatever they are`,
          contextSize,
        );
      }
    }
    const special = optionalBoolean(request, "parseSpecialTokens", false);
    const addBos = optionalBoolean(request, "addBos", true) && limits.addBos && vocabulary.bos !== undefined;
    const ids = limits.tokenize(prompt, { special });
    return addBos ? [vocabulary.bos!, ...ids] : ids;
  }
  if (Array.isArray(prompt)) {
    if (prompt.length === 0)
      throw invalid("prompt", "prompt is an empty token array; give at least one token id.");
    if (prompt.length >= contextSize) throw tooLong(`${prompt.length} tokens`, contextSize);
    const bad = prompt.findIndex((t) => !isTokenId(t, vocabulary.size));
    if (bad >= 0) {
      throw invalid(
        "prompt",
        `prompt[${bad}] = ${JSON.stringify(prompt[bad])} is not a token id; ids are integers in [0, ${vocabulary.size}).`,
      );
    }
    return [...prompt];
  }
  throw invalid("prompt", "prompt must be a string or an array of token ids.");
}
