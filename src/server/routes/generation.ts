import { randomUUID } from "node:crypto";
import type { z } from "zod";
import { readJsonBody } from "../body.ts";
import { fromZodError } from "../httpErrors.ts";
import { chatShape, completionShape } from "../openaiShapes.ts";
import type { Handler, RouteContext } from "../router.ts";
import type { ServerContext } from "../ServerContext.ts";
import { chatRequestSchema, completionRequestSchema } from "../schemas.ts";
import { serveGeneration } from "../serveGeneration.ts";
import { checkModel, samplingOf } from "../toGenerationRequest.ts";

/** Most stop strings the runtime takes. */
const MAX_STOPS = 16;

/** POST /v1/completions */
export function completionsRoute(server: ServerContext): Handler {
  return async (context) => {
    const { body, model } = await readRequest(server, context, completionRequestSchema);
    const id = `cmpl-${randomUUID()}`;
    // A one-element batch is the same single prompt.
    const prompt =
      Array.isArray(body.prompt) && body.prompt.length === 1 && typeof body.prompt[0] !== "number"
        ? body.prompt[0]!
        : (body.prompt as string | number[]);
    const includeUsage = body.stream_options?.include_usage === true;
    await serveGeneration(server, context, {
      request: {
        ...samplingOf(body),
        prompt,
        id,
        ...(body.max_tokens != null ? { maxTokens: body.max_tokens } : {}),
      },
      stream: body.stream === true,
      includeUsage,
      shape: completionShape({ id, model, created: unixNow(), includeUsage }),
    });
  };
}

/** POST /v1/chat/completions */
export function chatCompletionsRoute(server: ServerContext): Handler {
  return async (context) => {
    const { body, model } = await readRequest(server, context, chatRequestSchema);
    const id = `chatcmpl-${randomUUID()}`;
    const chat = server.chat().format(body.messages);
    const sampling = samplingOf(body);
    const userStops = typeof sampling.stop === "string" ? [sampling.stop] : (sampling.stop ?? []);
    // The caller's stop strings first: the format's own only fill what room is left.
    const stop = [...userStops, ...chat.stop].slice(0, MAX_STOPS);
    const maxTokens = body.max_completion_tokens ?? body.max_tokens;
    const includeUsage = body.stream_options?.include_usage === true;
    await serveGeneration(server, context, {
      request: {
        ...sampling,
        prompt: chat.tokens,
        stop,
        stopTokenIds: chat.stopTokenIds,
        id,
        ...(maxTokens != null ? { maxTokens } : {}),
      },
      stream: body.stream === true,
      includeUsage,
      shape: chatShape({ id, model, created: unixNow(), includeUsage }),
    });
  };
}

/** The request body, parsed by its schema, for the model this server serves (4xx otherwise). */
async function readRequest<T extends { model?: string | undefined }>(
  server: ServerContext,
  context: RouteContext,
  schema: z.ZodType<T>,
): Promise<{ body: T; model: string }> {
  const parsed = schema.safeParse(await readJsonBody(context.req, server.options.maxBodyBytes));
  if (!parsed.success) throw fromZodError(parsed.error);
  return { body: parsed.data, model: checkModel(server, parsed.data.model) };
}

function unixNow(): number {
  return Math.floor(Date.now() / 1000);
}
