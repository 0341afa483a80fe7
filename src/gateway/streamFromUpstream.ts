import { randomUUID } from "node:crypto";
import { createStreamChannel, type StreamChannel } from "../channel/index.ts";
import { SluiceError } from "../errors.ts";
import { runAttempt } from "./runAttempt.ts";
import { UpstreamWriter } from "./UpstreamWriter.ts";
import type { GenerationKind } from "./upstreamEvent.ts";
import type { AttemptOutcome } from "./upstreamFailure.ts";

/** An OpenAI-style request body: `/v1/chat/completions` or `/v1/completions`, as a client would send it. */
export type OpenAIBody = Record<string, unknown>;

export interface UpstreamGenerateOptions {
  /** `"chat"` (`/v1/chat/completions`, the default) or `"completion"` (`/v1/completions`). */
  kind?: GenerationKind;
  /** Aborting it is the same as `channel.cancel()`: the upstream request is aborted at once. */
  signal?: AbortSignal;
  /** The channel's id; a random UUID when absent. */
  id?: string;
  /** Make `channel.result` reject with a `SluiceError` on an `error` finish. Defaults to false. */
  rejectOnError?: boolean;
}

export interface StreamFromUpstreamOptions extends UpstreamGenerateOptions {
  /** The upstream's base URL, `http://host:port`. */
  url: string;
  apiKey?: string;
  /** Defaults to 30 000. */
  headersTimeoutMs?: number;
  /** Defaults to 60 000. */
  idleTimeoutMs?: number;
}

/** The route of each kind. */
export const ROUTE_PATH: Record<GenerationKind, string> = {
  chat: "/v1/chat/completions",
  completion: "/v1/completions",
};

/**
 * The body sent upstream: the client's, with `stream: true` and `stream_options.include_usage: true`
 * (the gateway re-renders the stream for its own client, and wants the upstream's usage once, at the end:
 * vLLM's `continuous_usage_stats` is dropped, since the gateway's own chunks do not carry per-chunk usage).
 * Throws `invalid_request` for a body that is not a JSON object, and for a `continuous_usage_stats` that is
 * not a boolean: dropped here, it would reach no upstream to be refused as a Sluice or vLLM server refuses it.
 */
export function upstreamBody(body: unknown): string {
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw new SluiceError("invalid_request", "The request body must be a JSON object.");
  }
  const b = body as OpenAIBody;
  const { continuous_usage_stats: perChunk, ...streamOptions } =
    typeof b.stream_options === "object" && b.stream_options !== null
      ? (b.stream_options as Record<string, unknown>)
      : {};
  if (perChunk !== undefined && perChunk !== null && typeof perChunk !== "boolean") {
    throw new SluiceError(
      "invalid_request",
      `stream_options.continuous_usage_stats must be a boolean; got ${JSON.stringify(perChunk)}.`,
      { param: "stream_options.continuous_usage_stats" },
    );
  }
  return JSON.stringify({ ...b, stream: true, stream_options: { ...streamOptions, include_usage: true } });
}

/** Choices a body asks for (`n`, default 1). */
export function choicesOf(body: OpenAIBody): number {
  return typeof body.n === "number" && Number.isInteger(body.n) && body.n > 1 ? body.n : 1;
}

/** A channel carries one choice: throws `invalid_request` for `n` above 1 (the gateway server takes them). */
export function oneChoice(body: OpenAIBody): void {
  if (body.n !== undefined && body.n !== null && body.n !== 1) {
    throw new SluiceError("invalid_request", "n must be 1: one generation streams through one channel.", {
      param: "n",
    });
  }
}

/**
 * One generation served by one OpenAI-compatible upstream (llama-server, vLLM, another Sluice), through a
 * `StreamChannel` with the runtime's guarantees: deltas of well-formed text (and token ids when the
 * upstream sends them), exactly one terminal chunk on every path, usage and timings in the result. A cancel
 * (any path: `cancel()`, `break`, `signal`) aborts the upstream HTTP request at once and finishes the
 * channel `cancelled` without waiting for the upstream. Upstream failures finish it with `error` and an
 * `upstream_*` code (see `UpstreamErrorCode`). Throws `invalid_request` synchronously for a body that cannot
 * be sent. For several upstreams, retries and routing, use `UpstreamPool`.
 */
export function streamFromUpstream(body: OpenAIBody, options: StreamFromUpstreamOptions): StreamChannel {
  const payload = upstreamBody(body);
  oneChoice(body);
  const kind = options.kind ?? "chat";
  const abort = new AbortController();
  let writer: UpstreamWriter | undefined;
  const { channel, producer } = createStreamChannel({
    id: options.id ?? randomUUID(),
    ...(options.signal ? { signal: options.signal } : {}),
    ...(options.rejectOnError ? { rejectOnError: true } : {}),
    onCancel: () => {
      writer?.finish("cancelled");
      abort.abort("cancelled");
    },
  });
  writer = new UpstreamWriter(producer);
  const w = writer;
  if (producer.cancelled) abort.abort("cancelled");
  void runAttempt(
    {
      baseUrl: options.url.replace(/\/+$/, "").replace(/\/v1$/, ""),
      path: ROUTE_PATH[kind],
      ...(options.apiKey !== undefined ? { apiKey: options.apiKey } : {}),
      body: payload,
      signal: abort.signal,
      headersTimeoutMs: options.headersTimeoutMs ?? 30_000,
      idleTimeoutMs: options.idleTimeoutMs ?? 60_000,
    },
    { accepted: () => w.accepted(), chunk: (choices) => w.chunk(choices) },
  ).then(
    (outcome) => w.end(outcome),
    (error) => w.finish("error", { error: { code: "internal_error", message: String(error) } }),
  );
  return channel;
}

/** Finishes the channel as an attempt's outcome says (a no-op when it already finished). */
export function settle(writer: UpstreamWriter, outcome: AttemptOutcome): void {
  writer.end(outcome);
}
