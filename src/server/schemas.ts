import { z } from "zod";

/**
 * Request bodies of the OpenAI-compatible routes. Objects are strict: a field Sluice does not implement is
 * refused with a message naming it, never silently ignored. Extensions beyond OpenAI: vLLM's top_k, min_p,
 * skip_special_tokens, stream_interval, ignore_eos, stop_token_ids, min_tokens, continue_final_message and
 * add_generation_prompt; llama-server's cache_prompt, repeat_penalty, repeat_last_n and grammar; Sluice's
 * speculative (speculative decoding on or off for the request). See the field table in README.md.
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

/** Most choices one request may ask for, whatever the slot count (see `maxChoices` in routes/generation.ts). */
export const MAX_N = 128;

/** Most alternatives per token in `top_logprobs` (chat) and `logprobs` (completions). */
export const MAX_TOP_LOGPROBS = 20;

/** OpenAI's `response_format`: text, any JSON object, or JSON valid against a schema. */
const responseFormat = z.discriminatedUnion(
  "type",
  [
    z.strictObject({ type: z.literal("text") }),
    z.strictObject({ type: z.literal("json_object") }),
    z.strictObject({
      type: z.literal("json_schema"),
      json_schema: z.strictObject({
        name: z.string().regex(/^[a-zA-Z0-9_-]{1,64}$/, {
          error: "must be 1-64 letters, digits, underscores or dashes",
        }),
        description: z.string().nullish(),
        schema: z.record(z.string(), z.unknown(), { error: "must be a JSON schema (an object)" }).nullish(),
        strict: z.boolean().nullish(),
      }),
    }),
  ],
  { error: 'type must be "text", "json_object" or "json_schema"' },
);

const penalty = z.number().min(-2).max(2).nullish();

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
  stop_token_ids: z
    .array(z.int().min(0), { error: "must be an array of token ids" })
    .max(64, { error: "must hold at most 64 token ids" })
    .nullish(),
  max_tokens: z.int().min(1).nullish(),
  min_tokens: z.int().min(0).nullish(),
  stream: z.boolean().nullish(),
  stream_options: z
    .strictObject({
      include_usage: z.boolean().nullish(),
      include_obfuscation: z.boolean().nullish(),
      // vLLM's: usage on every chunk (with include_usage).
      continuous_usage_stats: z.boolean().nullish(),
    })
    .nullish(),
  n: z.int().min(1).max(MAX_N).nullish(),
  presence_penalty: penalty,
  frequency_penalty: penalty,
  repeat_penalty: z.number().gt(0, { error: "must be > 0 (1 is off)" }).max(10).nullish(),
  repeat_last_n: z.int().min(-1, { error: "must be >= -1 (0 off, -1 the whole context)" }).nullish(),
  logit_bias: z
    .record(
      z.string().regex(/^(0|[1-9][0-9]*)$/, { error: "keys must be token ids (decimal strings)" }),
      z.number().min(-100).max(100),
      { error: "must map token ids to biases from -100 to 100" },
    )
    .nullish(),
  response_format: responseFormat.nullish(),
  grammar: z.string().trim().min(1, { error: "must be GBNF text with a root rule" }).nullish(),
  user: z.string().nullish(),
  metadata: z.record(z.string(), z.unknown()).nullish(),
  skip_special_tokens: z.boolean().nullish(),
  stream_interval: z.int().min(1).nullish(),
  ignore_eos: z.boolean().nullish(),
  cache_prompt: z.boolean().nullish(),
  speculative: z.boolean().nullish(),
};

const tokenIds = z.array(z.int()).min(1);

export const completionRequestSchema = z
  .strictObject({
    ...sampling,
    prompt: z.union([z.string(), tokenIds, z.tuple([z.string()]), z.tuple([tokenIds])], {
      error:
        "must be a string, an array of token ids, or a one-element array of either (one prompt per request)",
    }),
    logprobs: z.int().min(0).max(MAX_TOP_LOGPROBS).nullish(),
    echo: z.boolean().nullish(),
    best_of: z.int().min(1).max(MAX_N).nullish(),
    suffix: unsupported("suffix", "no fill-in-the-middle", (v) => v === ""),
  })
  .superRefine((body, context) => {
    oneConstraint(body, context);
    const n = body.n ?? 1;
    if (body.best_of != null && body.best_of !== 1 && body.best_of !== n) {
      context.addIssue({
        code: "custom",
        path: ["best_of"],
        message: `must be 1 or equal to n (${n}): every completion is returned, none is ranked and dropped; ask for n instead`,
      });
    }
    if (body.echo === true && body.logprobs != null) {
      context.addIssue({
        code: "custom",
        path: ["echo"],
        message:
          "cannot be combined with logprobs: the prompt's tokens are not scored (only generated ones are); drop echo or logprobs",
      });
    }
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

const TOOL_CHOICE_ERROR =
  'must be "none", "auto", "required" or {"type": "function", "function": {"name": "…"}}';

/**
 * OpenAI's `tool_choice`: `none` (the tools are shown to the model, no call is parsed), `auto` (the default
 * with tools), `required`, or one named function.
 */
const toolChoice = z.union(
  [
    z.enum(["none", "auto", "required"], { error: TOOL_CHOICE_ERROR }),
    z.strictObject({ type: z.literal("function"), function: z.strictObject({ name: z.string().min(1) }) }),
  ],
  { error: TOOL_CHOICE_ERROR },
);

/** OpenAI's deprecated function-calling fields: refused, naming the field that replaced each. */
function legacy(name: string, replacement: string, how: string) {
  return z
    .unknown()
    .refine((value) => value === undefined || value === null, {
      error: `${name} is OpenAI's deprecated form of ${replacement}: send ${replacement} instead (${how})`,
    })
    .optional();
}

/** The fields that decide the chat prompt: the chat route's and /apply-template's. */
const chatPromptFields = {
  messages: z.array(message).min(1, { error: "must hold at least one message" }),
  tools: z.array(toolSchema).nullish(),
  continue_final_message: z.boolean().nullish(),
  add_generation_prompt: z.boolean().nullish(),
};

function chatPromptRefine(
  body: {
    tools?: readonly Tool[] | null | undefined;
    continue_final_message?: boolean | null | undefined;
    add_generation_prompt?: boolean | null | undefined;
  },
  context: z.core.$RefinementCtx,
): void {
  if (body.continue_final_message === true && body.add_generation_prompt === true) {
    context.addIssue({
      code: "custom",
      path: ["add_generation_prompt"],
      message:
        "cannot be true with continue_final_message: the final message is continued, no new turn is opened",
    });
  }
  const seen = new Set<string>();
  body.tools?.forEach((tool, i) => {
    const name = tool.function.name;
    if (seen.has(name)) {
      context.addIssue({
        code: "custom",
        path: ["tools", i, "function", "name"],
        message: `${name} is offered twice: give each function once`,
      });
    }
    seen.add(name);
  });
}

/**
 * `tool_choice` "required" or a named function needs tools, and a named function must be one of them. Calls
 * are held to their functions by a grammar, so another output constraint (`response_format`, `grammar`)
 * cannot apply too unless `tool_choice` is none.
 */
function toolChoiceRefine(
  body: {
    tools?: readonly Tool[] | null | undefined;
    tool_choice?: ToolChoiceBody | null | undefined;
    grammar?: string | null | undefined;
    response_format?: ResponseFormat | null | undefined;
  },
  context: z.core.$RefinementCtx,
): void {
  const tools = body.tools?.length ?? 0;
  const choice = body.tool_choice;
  if (tools === 0 && choice != null && choice !== "none" && choice !== "auto") {
    context.addIssue({
      code: "custom",
      path: ["tool_choice"],
      message: `${typeof choice === "string" ? `"${choice}"` : "a named function"} needs tools: offer the functions in tools, or drop tool_choice`,
    });
  }
  if (tools > 0 && typeof choice === "object" && choice !== null) {
    const names = body.tools!.map((tool) => tool.function.name);
    if (!names.includes(choice.function.name)) {
      context.addIssue({
        code: "custom",
        path: ["tool_choice", "function", "name"],
        message: `names the function ${JSON.stringify(choice.function.name)}, which is not in tools (${names.join(", ")}): name one of them`,
      });
    }
  }
  const constrained =
    body.grammar != null || (body.response_format != null && body.response_format.type !== "text");
  if (tools > 0 && choice !== "none" && constrained) {
    context.addIssue({
      code: "custom",
      path: [body.grammar != null ? "grammar" : "response_format"],
      message:
        'cannot be combined with tools: tool calls are held to their functions by a grammar of their own; drop it, or send tool_choice "none"',
    });
  }
}

export const chatRequestSchema = z
  .strictObject({
    ...sampling,
    max_completion_tokens: z.int().min(1).nullish(),
    logprobs: z.boolean().nullish(),
    top_logprobs: z.int().min(0).max(MAX_TOP_LOGPROBS).nullish(),
    ...chatPromptFields,
    tool_choice: toolChoice.nullish(),
    parallel_tool_calls: z.boolean().nullish(),
    functions: legacy("functions", "tools", 'each function as {"type": "function", "function": {…}}'),
    function_call: legacy("function_call", "tool_choice", '"auto", "none", "required" or a named function'),
  })
  .superRefine((body, context) => {
    oneConstraint(body, context);
    chatPromptRefine(body, context);
    toolChoiceRefine(body, context);
    if (body.top_logprobs != null && body.logprobs !== true) {
      context.addIssue({
        code: "custom",
        path: ["top_logprobs"],
        message: "needs logprobs: true (alternatives are reported with each token's own log-probability)",
      });
    }
  });

/** A grammar and a response_format other than text would be two constraints on one output. */
function oneConstraint(
  body: { grammar?: string | null | undefined; response_format?: ResponseFormat | null | undefined },
  context: z.core.$RefinementCtx,
): void {
  if (body.grammar != null && body.response_format != null && body.response_format.type !== "text") {
    context.addIssue({
      code: "custom",
      path: ["grammar"],
      message: `cannot be combined with response_format ${body.response_format.type}: give one constraint`,
    });
  }
}

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
export const applyTemplateRequestSchema = z
  .strictObject(chatPromptFields)
  .superRefine((body, context) => chatPromptRefine(body, context));

export type CompletionRequestBody = z.infer<typeof completionRequestSchema>;
export type ChatRequestBody = z.infer<typeof chatRequestSchema>;
export type ChatMessage = ChatRequestBody["messages"][number];
export type ResponseFormat = z.infer<typeof responseFormat>;
export type ApplyTemplateRequestBody = z.infer<typeof applyTemplateRequestSchema>;
export type Tool = z.infer<typeof toolSchema>;
export type ToolChoiceBody = z.infer<typeof toolChoice>;
