import type { StreamChannel } from "../channel/index.ts";
import type { Runtime } from "../runtime/Runtime.ts";
import { type ChatFormatter, createChatFormatter } from "../server/chat.ts";
import { fromZodError, toHttpError } from "../server/httpErrors.ts";
import { chatRequestSchema, completionRequestSchema } from "../server/schemas.ts";
import { samplingOf } from "../server/toGenerationRequest.ts";
import type { GenerationRequest } from "../types.ts";
import type { AttemptSink } from "./readEventStream.ts";
import type { GenerationKind } from "./upstreamEvent.ts";
import { type AttemptOutcome, statusFailure, unavailable } from "./upstreamFailure.ts";

/** Most stop strings the runtime takes (the caller's first, then the chat format's own). */
const MAX_STOPS = 16;

/**
 * Fields whose answer is the server's protocol layer's work (tool-call parsing, one runtime request per
 * choice, log-probabilities rendered as text, the prompt echoed): a request using them goes to a remote
 * upstream, never to the local member.
 */
function remoteOnly(body: Record<string, unknown>): string | undefined {
  if (typeof body.n === "number" && body.n > 1) return "n above 1";
  if (Array.isArray(body.tools) && body.tools.length > 0 && body.tool_choice !== "none") return "tools";
  if (body.logprobs !== undefined && body.logprobs !== null && body.logprobs !== false) return "logprobs";
  if (body.echo === true) return "echo";
  if (body.best_of !== undefined && body.best_of !== null && body.best_of !== 1) return "best_of";
  return undefined;
}

/**
 * The local engine as one member of an upstream pool: a `Runtime` in this process, reached without an HTTP
 * hop. A request goes through the server's own schema (a bad field is refused with the server's 400, as a
 * Sluice upstream would) and sampling semantics (`samplingOf`); a chat is rendered with the server's chat
 * formatter (the model's template, with assistant prefill as the server does it), and its stop strings and
 * tokens added. Its load is the runtime's (requests running and queued); a cancel cancels the runtime's
 * channel, so the slot is free within one engine step.
 *
 * It serves text (and token ids) and the finish reason. Requests that need the server's protocol layer
 * (`tools`, `n` > 1, `logprobs`, `echo`) are not its: `accepts` says so and the pool routes them to the
 * remote upstreams.
 */
export class LocalMember {
  readonly runtime: Runtime;
  /** The model ids it answers to (the model file's name). */
  readonly models: readonly string[];
  #chat: ChatFormatter | undefined;

  constructor(runtime: Runtime) {
    this.runtime = runtime;
    this.models = [runtime.engine.info.model];
  }

  /** Requests running or queued on the runtime: the member's load for routing. */
  get load(): number {
    const { active, queued } = this.runtime.load;
    return active + queued;
  }

  /** Whether the runtime still takes requests (its health). */
  get open(): boolean {
    return !this.runtime.snapshot().closing;
  }

  /** Whether this request can be served here (see the class comment); the reason when not. */
  refuses(body: Record<string, unknown>): string | undefined {
    return remoteOnly(body);
  }

  /**
   * Serves one request into `sink`, as `runAttempt` does for a remote upstream, and resolves with how it
   * ended (never rejects): a body the server would refuse is `upstream_rejected` with the server's 400, a full
   * queue `upstream_busy`.
   */
  async attempt(
    body: Record<string, unknown>,
    kind: GenerationKind,
    sink: AttemptSink,
    signal: AbortSignal,
  ): Promise<AttemptOutcome> {
    if (signal.aborted) return { kind: "aborted" };
    let channel: StreamChannel;
    try {
      channel = this.runtime.generate({ ...this.#request(body, kind), signal });
    } catch (error) {
      const http = toHttpError(error);
      const errorBody = {
        error: { message: http.message, type: http.type, code: http.code, param: http.param },
      };
      if (http.status >= 500 && http.status !== 503) {
        return { kind: "failed", failure: unavailable(`the local engine failed: ${http.message}`) };
      }
      return { kind: "failed", failure: statusFailure(http.status, errorBody, "the local engine") };
    }
    sink.accepted();
    sink.model?.(this.models[0]!);
    for await (const chunk of channel) {
      if (chunk.text.length > 0 || chunk.tokenIds.length > 0)
        sink.chunk([{ index: 0, text: chunk.text, tokenIds: chunk.tokenIds }]);
    }
    const result = await channel.result;
    if (result.reason === "cancelled") return { kind: "aborted" };
    const finish = {
      reason: result.reason,
      ...(result.stop !== undefined ? { stop: result.stop } : {}),
      ...(result.error !== undefined ? { error: result.error } : {}),
    };
    return { kind: "finished", finish, choices: [finish], usage: result.usage };
  }

  /** The runtime request for an OpenAI body; throws the server's 400 for what the server would refuse. */
  #request(body: Record<string, unknown>, kind: GenerationKind): GenerationRequest {
    if (kind === "completion") {
      const parsed = completionRequestSchema.safeParse(body);
      if (!parsed.success) throw fromZodError(parsed.error);
      const b = parsed.data;
      const prompt =
        Array.isArray(b.prompt) && b.prompt.length === 1 && typeof b.prompt[0] !== "number"
          ? b.prompt[0]!
          : (b.prompt as string | number[]);
      return { ...samplingOf(b), prompt, ...(b.max_tokens != null ? { maxTokens: b.max_tokens } : {}) };
    }
    const parsed = chatRequestSchema.safeParse(body);
    if (!parsed.success) throw fromZodError(parsed.error);
    const b = parsed.data;
    const last = b.messages.at(-1)!;
    const callsTools = (last.tool_calls?.length ?? 0) > 0;
    // Assistant prefill as the server does it: a trailing assistant message is continued unless told not to.
    const continueFinal =
      b.continue_final_message ??
      (last.role === "assistant" && !callsTools && b.add_generation_prompt !== true);
    this.#chat ??= createChatFormatter(this.runtime.engine);
    const chat = this.#chat.format(b.messages, { continueFinal });
    const sampling = samplingOf(b);
    const userStops = typeof sampling.stop === "string" ? [sampling.stop] : (sampling.stop ?? []);
    const maxTokens = b.max_completion_tokens ?? b.max_tokens;
    return {
      ...sampling,
      prompt: chat.tokens,
      stop: [...userStops, ...chat.stop].slice(0, MAX_STOPS),
      stopTokenIds: [...new Set([...(sampling.stopTokenIds ?? []), ...chat.stopTokenIds])],
      ...(maxTokens != null ? { maxTokens } : {}),
    };
  }
}
