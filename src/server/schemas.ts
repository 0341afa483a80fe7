import { z } from "zod";

/**
 * Request bodies of the OpenAI-compatible routes. Objects are strict: a field Sluice does not implement is
 * refused with a message naming it, never silently ignored. Extensions beyond OpenAI (vLLM's names): top_k,
 * min_p, skip_special_tokens, stream_interval, ignore_eos; and llama-server's cache_prompt.
 */

/** A field OpenAI defines that Sluice does not implement: accepted only at its "off" value. */
function unsupported(name: string, why: string, off: (value: unknown) => boolean = (v) => v === false) {
  return z
    .unknown()
    .refine((value) => value === undefined || value === null || off(value), {
      error: `${name} is not supported by this server (${why}); remove it`,
    })
    .optional();
}

function zeroOnly(name: string) {
  return z
    .number()
    .refine((value) => value === 0, {
      error: `${name} must be 0: the sampler applies no repetition penalties`,
    })
    .nullish();
}

const sampling = {
  model: z.string().min(1).optional(),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().gt(0, { error: "must be > 0 (1 keeps the whole distribution)" }).max(1).nullish(),
  top_k: z.int().min(0).nullish(),
  min_p: z.number().min(0).max(1).nullish(),
  seed: z
    .int()
    .min(0)
    .max(2 ** 32 - 1)
    .nullish(),
  stop: z
    .union([z.string().min(1), z.array(z.string().min(1)).max(16)], {
      error: "must be a non-empty string or an array of at most 16 non-empty strings",
    })
    .nullish(),
  max_tokens: z.int().min(1).nullish(),
  stream: z.boolean().nullish(),
  stream_options: z
    .strictObject({ include_usage: z.boolean().nullish(), include_obfuscation: z.boolean().nullish() })
    .nullish(),
  n: z
    .literal(1, { error: "must be 1: one completion per request (send several requests instead)" })
    .nullish(),
  presence_penalty: zeroOnly("presence_penalty"),
  frequency_penalty: zeroOnly("frequency_penalty"),
  logit_bias: unsupported("logit_bias", "the sampler takes no per-token biases", (v) => isEmptyObject(v)),
  user: z.string().nullish(),
  metadata: z.record(z.string(), z.unknown()).nullish(),
  skip_special_tokens: z.boolean().nullish(),
  stream_interval: z.int().min(1).nullish(),
  ignore_eos: z.boolean().nullish(),
  cache_prompt: z.boolean().nullish(),
};

const tokenIds = z.array(z.int()).min(1);

export const completionRequestSchema = z.strictObject({
  ...sampling,
  prompt: z.union([z.string(), tokenIds, z.tuple([z.string()]), z.tuple([tokenIds])], {
    error:
      "must be a string, an array of token ids, or a one-element array of either (one prompt per request)",
  }),
  logprobs: unsupported("logprobs", "no log-probabilities are returned"),
  echo: unsupported("echo", "the prompt is not echoed"),
  best_of: unsupported("best_of > 1", "one completion per request", (v) => v === 1),
  suffix: unsupported("suffix", "no fill-in-the-middle", (v) => v === ""),
});

const contentPart = z
  .looseObject({ type: z.string(), text: z.unknown().optional() })
  .refine((part) => part.type === "text" && typeof part.text === "string", {
    error: 'only { "type": "text", "text": "..." } content parts are supported (the model reads text only)',
  });

/** An assistant message's call of a tool (OpenAI's shape; `arguments` is a JSON text). */
const toolCall = z.strictObject({
  id: z.string(),
  type: z.literal("function"),
  function: z.strictObject({ name: z.string().min(1), arguments: z.string() }),
});

const message = z
  .strictObject({
    role: z.enum(["system", "developer", "user", "assistant", "tool"]),
    // An assistant message that calls tools may have no content.
    content: z
      .union([z.string(), z.array(contentPart)], {
        error: "must be a string or an array of text parts",
      })
      .nullish(),
    name: z.string().optional(),
    tool_calls: z.array(toolCall).nullish(),
    tool_call_id: z.string().nullish(),
    refusal: z.string().nullish(),
  })
  .refine((m) => m.content != null || (m.role === "assistant" && (m.tool_calls?.length ?? 0) > 0), {
    error: "content is required (only an assistant message with tool_calls may omit it)",
    path: ["content"],
  })
  .refine((m) => m.tool_calls == null || m.role === "assistant", {
    error: "only assistant messages carry tool_calls",
    path: ["tool_calls"],
  });

/** A function the model may call (OpenAI's `tools` entry). */
export const toolSchema = z.strictObject({
  type: z.literal("function"),
  function: z.strictObject({
    name: z.string().regex(/^[a-zA-Z0-9_-]{1,64}$/, {
      error: "must be 1-64 letters, digits, underscores or dashes",
    }),
    description: z.string().nullish(),
    parameters: z.record(z.string(), z.unknown()).nullish(),
    strict: z.boolean().nullish(),
  }),
});

export const chatRequestSchema = z.strictObject({
  ...sampling,
  messages: z.array(message).min(1, { error: "must hold at least one message" }),
  max_completion_tokens: z.int().min(1).nullish(),
  logprobs: unsupported("logprobs", "no log-probabilities are returned"),
  top_logprobs: unsupported("top_logprobs", "no log-probabilities are returned", (v) => v === 0),
  tools: unsupported("tools", "no tool calling", (v) => Array.isArray(v) && v.length === 0),
  tool_choice: unsupported("tool_choice", "no tool calling", (v) => v === "none"),
  parallel_tool_calls: unsupported("parallel_tool_calls", "no tool calling"),
  functions: unsupported("functions", "no function calling", (v) => Array.isArray(v) && v.length === 0),
  response_format: unsupported(
    "response_format",
    "only plain text output",
    (v) => (v as { type?: unknown })?.type === "text",
  ),
});

/** POST /tokenize (llama-server's fields). */
export const tokenizeRequestSchema = z.strictObject({
  content: z.string({ error: "must be a string" }),
  add_special: z.boolean().nullish(),
  parse_special: z.boolean().nullish(),
  with_pieces: z.boolean().nullish(),
});

/** POST /detokenize */
export const detokenizeRequestSchema = z.strictObject({
  tokens: z.array(
    z.number().int({ error: "must be a token id (an integer)" }).min(0, { error: "must be >= 0" }),
    {
      error: "must be an array of token ids",
    },
  ),
});

/** POST /apply-template: the messages of a chat completion request. */
export const applyTemplateRequestSchema = z.strictObject({
  messages: z.array(message).min(1, { error: "must hold at least one message" }),
});

export type CompletionRequestBody = z.infer<typeof completionRequestSchema>;
export type ChatRequestBody = z.infer<typeof chatRequestSchema>;
export type ChatMessage = ChatRequestBody["messages"][number];

function isEmptyObject(value: unknown): boolean {
  return typeof value === "object" && value !== null && Object.keys(value).length === 0;
}
