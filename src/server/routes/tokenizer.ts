import type { z } from "zod";
import { readJsonBody } from "../body.ts";
import { renderChatRequest } from "../chatRequest.ts";
import { badRequest, fromZodError, sendJson } from "../httpErrors.ts";
import type { Handler, RouteContext } from "../router.ts";
import type { ServerContext } from "../ServerContext.ts";
import { applyTemplateRequestSchema, detokenizeRequestSchema, tokenizeRequestSchema } from "../schemas.ts";

/** Invalid UTF-8 becomes U+FFFD, as llama-server's detokenizer does. */
const decoder = new TextDecoder("utf-8");
const strict = new TextDecoder("utf-8", { fatal: true });

/**
 * POST /tokenize `{ content, add_special?, parse_special?, with_pieces? }` → `{ tokens }`, as llama-server:
 * `add_special` (default false) puts BOS in front when the model wants one; `parse_special` (default true)
 * reads special-token text (`<|im_start|>`) as control tokens; with `with_pieces` each token is
 * `{ id, piece }`, the piece a string when its bytes are valid UTF-8 by themselves, else the bytes.
 */
export function tokenizeRoute(server: ServerContext): Handler {
  return async (context) => {
    const body = await read(server, context, tokenizeRequestSchema);
    const { engine } = server.runtime;
    const { vocabulary } = engine.info;
    const tokens = engine.tokenize(body.content, { special: body.parse_special ?? true });
    const bos = vocabulary.bos;
    if (body.add_special === true && engine.info.addBos && bos !== undefined && tokens[0] !== bos) {
      tokens.unshift(bos);
    }
    if (body.with_pieces !== true) return sendJson(context.res, 200, { tokens });
    sendJson(context.res, 200, {
      tokens: tokens.map((id) => ({ id, piece: piece(vocabulary.bytesOf(id)) })),
    });
  };
}

/** POST /detokenize `{ tokens }` → `{ content }`: the tokens' bytes as text, control tokens as their text. */
export function detokenizeRoute(server: ServerContext): Handler {
  return async (context) => {
    const body = await read(server, context, detokenizeRequestSchema);
    sendJson(context.res, 200, { content: detokenize(server, body.tokens) });
  };
}

/**
 * POST /apply-template `{ messages, tools?, continue_final_message?, add_generation_prompt? }` → `{ prompt }`:
 * the chat exactly as /v1/chat/completions renders it from the same fields (the model's template, else ChatML
 * or plain; tools; a trailing assistant message continued or answered; see README.md), as text, without the
 * BOS that /v1/completions puts back in front of a text prompt. The same 400s as the chat route for tools the
 * template cannot render and contradictory continuation fields.
 */
export function applyTemplateRoute(server: ServerContext): Handler {
  return async (context) => {
    const body = await read(server, context, applyTemplateRequestSchema);
    const { tokens } = renderChatRequest(server, body).prompt;
    const bos = server.runtime.engine.info.vocabulary.bos;
    const start = bos !== undefined && tokens[0] === bos ? 1 : 0;
    sendJson(context.res, 200, { prompt: detokenize(server, tokens.slice(start)) });
  };
}

async function read<T>(server: ServerContext, context: RouteContext, schema: z.ZodType<T>): Promise<T> {
  const parsed = schema.safeParse(await readJsonBody(context.req, server.options.maxBodyBytes));
  if (!parsed.success) throw fromZodError(parsed.error);
  return parsed.data;
}

function detokenize(server: ServerContext, tokens: readonly number[]): string {
  const { vocabulary } = server.runtime.engine.info;
  const out = tokens.findIndex((id) => id >= vocabulary.size);
  if (out !== -1) {
    throw badRequest(
      "invalid_request",
      `Invalid request: tokens.${out}: ${tokens[out]} is not a token id of this model (0..${vocabulary.size - 1}).`,
      `tokens.${out}`,
    );
  }
  const parts = tokens.map((id) => vocabulary.bytesOf(id));
  const bytes = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    bytes.set(part, at);
    at += part.length;
  }
  return decoder.decode(bytes);
}

function piece(bytes: Uint8Array): string | number[] {
  try {
    return strict.decode(bytes);
  } catch {
    return [...bytes];
  }
}
