import type { ChannelProducer } from "../channel/index.ts";
import type { OutputProcessor } from "../detok/index.ts";
import type { ChunkError, FinishReason, Timings, TokenLogprob } from "../types.ts";
import type { Speculation } from "./Speculation.ts";
import type { NormalizedRequest } from "./validate.ts";

/** A request's life, one way only: queued → prefill → decode → finished (any state may jump to finished). */
export type Phase = "queued" | "prefill" | "decode" | "finished";

export interface Latch {
  reason: FinishReason;
  stop?: string | number;
  error?: ChunkError;
}

/** Measured on every cancel: what the consumer waited for and what the engine still spent. */
export interface CancelRecord {
  phase: Exclude<Phase, "finished">;
  /** cancel() to the terminal chunk being queued. */
  msToTerminal: number;
  /** cancel() to the slot being free for another request (0 when the request held no slot). */
  msToFree: number;
  /** Engine steps that completed between cancel() and the slot being free: at most the one in flight. */
  stepsToFree: number;
  /** Tokens the engine computed for this request in steps started after cancel(): 0 unless eviction regressed. */
  tokensAfterCancel: number;
}

export interface RequestRecord {
  id: string;
  reason: FinishReason;
  promptTokens: number;
  completionTokens: number;
  /** Prompt tokens reused from the slot's prompt cache. */
  cachedTokens: number;
  timings: Timings;
  cancel?: CancelRecord;
}

export class RequestState {
  phase: Phase = "queued";
  slot = -1;
  /** Prompt tokens already in the slot's KV cache. */
  prefilled = 0;
  generated = 0;
  lastToken = -1;
  /** When the last token was sampled: the inter-token gap is measured from it. */
  lastTokenAt = 0;
  /** Prompt tokens reused from the slot's cache (set at admission). */
  cachedTokens = 0;
  latched: Latch | undefined;
  readonly submittedAt = performance.now();
  admittedAt = 0;
  firstTokenAt = 0;
  finishedAt = 0;
  /** Set when the consumer cancelled: time and completed-step count at that moment. */
  cancelledAt: { ms: number; step: number; phase: Exclude<Phase, "finished"> } | undefined;
  cancel: CancelRecord | undefined;
  /** Tokens planned for this request after it was cancelled (finished slots are evicted first: stays 0). */
  tokensAfterCancel = 0;
  /**
   * With logprobs asked: the entries of the ids the processor holds and has not emitted yet, in order (a
   * delta of k ids takes the first k).
   */
  readonly logprobs: TokenLogprob[] | undefined;

  constructor(
    readonly request: NormalizedRequest,
    readonly producer: ChannelProducer,
    readonly processor: OutputProcessor,
    /** Its drafter and draft length when it decodes speculatively; undefined otherwise. */
    readonly speculation?: Speculation,
  ) {
    this.logprobs = request.sampler.logprobs === undefined ? undefined : [];
  }

  /** The log-probabilities of a delta's ids, taken off the queue (undefined without logprobs). */
  takeLogprobs(count: number): TokenLogprob[] | undefined {
    return this.logprobs?.splice(0, count);
  }

  get id(): string {
    return this.request.id;
  }

  /** First writer wins: later finish causes are ignored. Returns whether this call latched. */
  latch(latch: Latch): boolean {
    if (this.latched !== undefined) return false;
    this.latched = latch;
    return true;
  }

  timings(): Timings {
    const end = this.finishedAt;
    const admitted = this.admittedAt || end;
    const first = this.firstTokenAt;
    const decodeMs = first ? end - first : 0;
    return {
      queuedMs: admitted - this.submittedAt,
      prefillMs: first ? first - admitted : end - admitted,
      decodeMs,
      firstTokenMs: first ? first - this.submittedAt : 0,
      tokensPerSecond: this.generated > 1 && decodeMs > 0 ? (this.generated - 1) / (decodeMs / 1000) : 0,
    };
  }

  record(): RequestRecord {
    return {
      id: this.id,
      reason: this.latched?.reason ?? "error",
      promptTokens: this.request.promptTokens.length,
      completionTokens: this.generated,
      cachedTokens: this.cachedTokens,
      timings: this.timings(),
      ...(this.cancel ? { cancel: this.cancel } : {}),
    };
  }
}
