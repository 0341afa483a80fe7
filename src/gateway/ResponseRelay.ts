import type { SseWriter } from "../server/sse.ts";
import type { ChunkError, FinishReason, Timings, Usage } from "../types.ts";
import type { GenerationTarget, TargetEnd } from "./GenerationTarget.ts";
import { timingsOf } from "./UpstreamWriter.ts";
import type { GenerationKind, Logprobs, ToolCallFragment, UpstreamChoice } from "./upstreamEvent.ts";
import type { ChoiceFinish } from "./upstreamFailure.ts";

/** One choice as the relay keeps it: what waits to be written, and (not streamed) the whole answer. */
interface ChoiceState {
  /** Text not yet written (streaming), or all of it (not streaming). */
  text: string;
  /** Tool-call fragments not yet written (streaming), merged; or whole calls (not streaming). */
  calls: ToolCallFragment[];
  logprobs: Logprobs | undefined;
  finish: ChoiceFinish | undefined;
  /** Whether anything waits to be written. */
  pending: boolean;
  deltas: number;
}

export interface RelayInit {
  kind: GenerationKind;
  /** The response's id (`chatcmpl-…`, `cmpl-…`). */
  id: string;
  /** The model the client named; else the upstream's. */
  model: string | undefined;
  created: number;
  stream: boolean;
  includeUsage: boolean;
  /** Choices asked for (`n`). */
  choices: number;
  /** Only OpenAI's finish reasons: `stop` for a cancelled or failed choice. */
  strictFinishReason: boolean;
}

/**
 * The gateway server's side of a pooled request: the upstream's chunks passed through to the client with
 * only the envelope re-rendered (the gateway's id, created, model), so every field an OpenAI-compatible
 * proxy must carry arrives: text, `delta.tool_calls` fragments, `logprobs` (chat's and the legacy
 * completions'), choices by `index`. Each choice gets its opening (chat), its deltas and exactly one finish
 * chunk with its own reason (`tool_calls` stays `tool_calls`); then usage when asked, the error event after a
 * failure, and `[DONE]`.
 *
 * A client that reads slowly gets fewer, larger deltas: while the socket is backed up, each choice's pending
 * text, tool-call fragments (consecutive pieces of one call joined) and log-probabilities merge, and go out
 * at the next `drain`; the upstream is never held back by the client. Not streamed, the same merge builds
 * the whole answer.
 */
export class ResponseRelay implements GenerationTarget {
  readonly #init: RelayInit;
  readonly #choices: ChoiceState[] = [];
  readonly #submittedAt = performance.now();
  #acceptedAt: number | undefined;
  #firstAt: number | undefined;
  #upstreamModel: string | undefined;
  #prefix: string | undefined;
  #sse: SseWriter | undefined;
  #backedUp = false;
  #end: TargetEnd | undefined;
  #accept!: () => void;
  #settle!: (how: TargetEnd) => void;
  /** Resolves when an upstream accepted the request (its stream can start). */
  readonly accepted$: Promise<void>;
  /** Resolves with how the request ended. */
  readonly ended: Promise<TargetEnd>;
  /** The upstream that served the request. */
  upstream: string | undefined;

  constructor(init: RelayInit) {
    this.#init = init;
    for (let i = 0; i < init.choices; i++) this.#choices.push(emptyChoice());
    this.accepted$ = new Promise((resolve) => (this.#accept = resolve));
    this.ended = new Promise((resolve) => (this.#settle = resolve));
  }

  /** Whether the request has ended. */
  get isEnded(): boolean {
    return this.#end !== undefined;
  }

  get delivered(): boolean {
    return this.#firstAt !== undefined;
  }

  accepted(upstream: string): void {
    this.#acceptedAt ??= performance.now();
    this.upstream = upstream;
    this.#accept();
  }

  model(name: string): void {
    this.#upstreamModel ??= name;
  }

  chunk(choices: readonly UpstreamChoice[]): void {
    if (this.#end !== undefined) return;
    for (const c of choices) {
      if (c.text.length === 0 && c.toolCalls === undefined && c.logprobs === undefined) continue;
      while (this.#choices.length <= c.index) this.#choices.push(emptyChoice());
      const state = this.#choices[c.index]!;
      if (c.text.length > 0 || c.toolCalls !== undefined) this.#firstAt ??= performance.now();
      state.text += c.text;
      state.deltas++;
      if (c.toolCalls !== undefined) mergeCalls(state.calls, c.toolCalls, this.#init.stream);
      if (c.logprobs !== undefined) state.logprobs = mergeLogprobs(state.logprobs, c.logprobs);
      state.pending = true;
    }
    if (this.#sse !== undefined && !this.#backedUp) this.#flush();
  }

  end(how: TargetEnd): void {
    if (this.#end !== undefined) return;
    this.#end = how;
    if (how.kind === "finished") {
      how.choices.forEach((finish, i) => {
        while (this.#choices.length <= i) this.#choices.push(emptyChoice());
        this.#choices[i]!.finish ??= finish;
      });
    }
    this.#accept();
    this.#settle(how);
  }

  /** Starts writing the stream: every choice's opening (chat), then whatever came meanwhile. */
  start(sse: SseWriter): void {
    this.#sse = sse;
    if (this.#init.kind === "chat") {
      const openings = this.#choices.map(
        (_, index) =>
          `{"index":${index},"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}`,
      );
      sse.data(openings.map((choice) => this.#event(choice)).join("\n\ndata: "));
    }
    this.#flush();
  }

  /**
   * Writes the rest once the request has ended: pending deltas, each choice's finish chunk (choices the
   * upstream did not finish end `error` after a failure, `cancelled` after a cancel), usage when asked, the
   * error event after a failure, `[DONE]`.
   */
  async finishStream(): Promise<void> {
    const sse = this.#sse!;
    const how = await this.ended;
    if (this.#backedUp) await sse.writable();
    if (!sse.open) return;
    this.#flush(true);
    const error = this.error;
    const fallback: FinishReason = how.kind === "aborted" ? "cancelled" : "error";
    const usage = this.usage;
    const events = this.#choices.map((state, index) => {
      const finish = state.finish ?? { reason: fallback };
      const rendered = this.#finishReason(finish);
      const ext = JSON.stringify(this.#extension(finish, usage.completionTokens));
      const choice =
        this.#init.kind === "chat"
          ? `{"index":${index},"delta":{},"logprobs":null,"finish_reason":${JSON.stringify(rendered)}}`
          : `{"text":"","index":${index},"logprobs":null,"finish_reason":${JSON.stringify(rendered)}}`;
      return this.#event(choice, `,"sluice":${ext}`);
    });
    if (this.#init.includeUsage) events.push(this.#usageEvent(usage));
    if (error !== undefined) {
      events.push(
        JSON.stringify({ error: { message: error.message, type: "server_error", code: error.code } }),
      );
    }
    sse.data(events.join("\n\ndata: "));
    sse.end();
  }

  /** The non-streamed answer, once ended. */
  body(): unknown {
    const usage = this.usage;
    const chat = this.#init.kind === "chat";
    const choices = this.#choices.map((state, index) => {
      const finish = state.finish ?? { reason: "error" as const };
      const finishReason = this.#finishReason(finish);
      const logprobs = state.logprobs ?? null;
      if (!chat) return { text: state.text, index, logprobs, finish_reason: finishReason };
      const calls = state.calls.filter((c) => c !== undefined);
      const message =
        calls.length > 0
          ? {
              role: "assistant",
              content: state.text.length > 0 ? state.text : null,
              refusal: null,
              tool_calls: calls,
            }
          : { role: "assistant", content: state.text, refusal: null };
      return { index, message, logprobs, finish_reason: finishReason };
    });
    const first = this.#choices[0]?.finish ?? { reason: "error" as const };
    return {
      id: this.#init.id,
      object: chat ? "chat.completion" : "text_completion",
      created: this.#init.created,
      model: this.#model(),
      ...(chat ? { system_fingerprint: null } : {}),
      choices,
      usage: usageJson(usage),
      sluice: this.#extension(first, usage.completionTokens),
    };
  }

  /** The error the request ended with, if any: a failure, or an upstream's error finish. */
  get error(): ChunkError | undefined {
    const how = this.#end;
    if (how === undefined) return undefined;
    if (how.kind === "error") return how.error;
    if (how.kind === "failed") return { code: how.failure.code, message: how.failure.message };
    if (how.kind === "finished" && how.finish.reason === "error")
      return how.finish.error ?? { code: "upstream_error", message: "The upstream failed." };
    return undefined;
  }

  /** The upstream's usage, or the deltas counted when it sent none. */
  get usage(): Usage {
    const how = this.#end;
    if (how?.kind === "finished" && how.usage !== undefined) return how.usage;
    return {
      promptTokens: 0,
      completionTokens: this.#choices.reduce((n, c) => n + c.deltas, 0),
      cachedTokens: 0,
    };
  }

  get timings(): Timings {
    return timingsOf(this.#submittedAt, this.#acceptedAt, this.#firstAt, this.usage.completionTokens);
  }

  /** Writes every choice's pending delta as one socket write; notes when the socket backs up. */
  #flush(final = false): void {
    const sse = this.#sse!;
    const events: string[] = [];
    this.#choices.forEach((state, index) => {
      if (!state.pending) return;
      events.push(this.#event(this.#delta(state, index)));
      state.text = "";
      state.calls = [];
      state.logprobs = undefined;
      state.pending = false;
    });
    if (events.length === 0 || !sse.open) return;
    if (sse.data(events.join("\n\ndata: ")) || final) return;
    // Backed up: merge what comes meanwhile, write it at the next drain.
    this.#backedUp = true;
    void sse.writable().then(() => {
      this.#backedUp = false;
      if (this.#end === undefined) this.#flush();
    });
  }

  #delta(state: ChoiceState, index: number): string {
    const logprobs = state.logprobs === undefined ? "null" : JSON.stringify(state.logprobs);
    if (this.#init.kind === "completion") {
      return `{"text":${JSON.stringify(state.text)},"index":${index},"logprobs":${logprobs},"finish_reason":null}`;
    }
    const content =
      state.text.length > 0 || state.calls.length === 0 ? `"content":${JSON.stringify(state.text)}` : "";
    const calls = state.calls.length > 0 ? `"tool_calls":${JSON.stringify(state.calls)}` : "";
    const delta = content && calls ? `${content},${calls}` : content || calls;
    return `{"index":${index},"delta":{${delta}},"logprobs":${logprobs},"finish_reason":null}`;
  }

  /** One chunk's JSON around a rendered choice (the envelope is rendered once). */
  #event(choice: string, extra = ""): string {
    this.#prefix ??= this.#envelope();
    return `${this.#prefix}${choice}]${this.#init.includeUsage ? ',"usage":null' : ""}${extra}}`;
  }

  #usageEvent(usage: Usage): string {
    this.#prefix ??= this.#envelope();
    return `${this.#prefix}],"usage":${JSON.stringify(usageJson(usage))}}`;
  }

  #envelope(): string {
    const chat = this.#init.kind === "chat";
    const head = JSON.stringify({
      id: this.#init.id,
      object: chat ? "chat.completion.chunk" : "text_completion",
      created: this.#init.created,
      model: this.#model(),
      ...(chat ? { system_fingerprint: null } : {}),
    });
    return `${head.slice(0, -1)},"choices":[`;
  }

  #model(): string {
    return this.#init.model ?? this.#upstreamModel ?? "unknown";
  }

  /** OpenAI's finish_reason: the upstream's own for a normal end (`tool_calls` stays), Sluice's otherwise. */
  #finishReason(finish: ChoiceFinish): string {
    const { reason } = finish;
    if (reason === "length") return "length";
    if (reason === "eos" || reason === "stop") {
      const own = finish.finishReason;
      return own === "tool_calls" || own === "function_call" ? own : "stop";
    }
    return this.#init.strictFinishReason ? "stop" : reason;
  }

  #extension(finish: ChoiceFinish, completionTokens: number) {
    return {
      reason: finish.reason,
      ...(finish.stop !== undefined ? { stop: finish.stop } : {}),
      timings: timingsOf(this.#submittedAt, this.#acceptedAt, this.#firstAt, completionTokens),
    };
  }
}

function emptyChoice(): ChoiceState {
  return { text: "", calls: [], logprobs: undefined, finish: undefined, pending: false, deltas: 0 };
}

/**
 * Tool-call fragments into `calls`. Streaming (pending fragments): a fragment continuing the last one's call
 * (same index, no id of its own) has its argument piece appended, others are kept as sent. Whole (not
 * streamed): one call per index, its arguments joined.
 */
function mergeCalls(
  calls: ToolCallFragment[],
  fragments: readonly ToolCallFragment[],
  stream: boolean,
): void {
  for (const f of fragments) {
    const last = stream ? calls.at(-1) : calls.find((c) => c.index === f.index);
    if (last !== undefined && last.index === f.index && (!stream || f.id === undefined)) {
      const args = f.function?.arguments;
      if (args !== undefined)
        last.function = { ...last.function, arguments: (last.function?.arguments ?? "") + args };
      if (f.function?.name !== undefined && last.function?.name === undefined)
        last.function = { ...last.function, name: f.function.name };
      continue;
    }
    calls.push({ ...f, ...(f.function !== undefined ? { function: { ...f.function } } : {}) });
  }
  if (!stream) calls.sort((a, b) => a.index - b.index);
}

/** Log-probabilities of consecutive deltas, joined: chat's `content` entries, or the legacy arrays. */
function mergeLogprobs(into: Logprobs | undefined, next: Logprobs): Logprobs {
  if (into === undefined)
    return "content" in next ? { ...next, content: [...next.content] } : copyLegacy(next);
  if ("content" in into && "content" in next) into.content.push(...next.content);
  else if ("tokens" in into && "tokens" in next) {
    into.tokens.push(...next.tokens);
    into.token_logprobs.push(...next.token_logprobs);
    into.top_logprobs.push(...(next.top_logprobs ?? []));
    into.text_offset.push(...(next.text_offset ?? []));
  }
  return into;
}

function copyLegacy(l: Extract<Logprobs, { tokens: unknown[] }>): Logprobs {
  return {
    tokens: [...l.tokens],
    token_logprobs: [...l.token_logprobs],
    top_logprobs: [...(l.top_logprobs ?? [])],
    text_offset: [...(l.text_offset ?? [])],
  };
}

function usageJson(usage: Usage) {
  return {
    prompt_tokens: usage.promptTokens,
    completion_tokens: usage.completionTokens,
    total_tokens: usage.promptTokens + usage.completionTokens,
    prompt_tokens_details: { cached_tokens: usage.cachedTokens },
  };
}
