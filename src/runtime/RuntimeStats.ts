import type { StepItem } from "../engine/Engine.ts";
import type { FinishReason } from "../types.ts";
import { Histogram } from "./Histogram.ts";
import type { CancelRecord } from "./RequestState.ts";

const SECONDS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** Counters and histograms the server's /metrics and the benchmarks read. Updated per step, not per token. */
export class RuntimeStats {
  submitted = 0;
  readonly finishedBy: Record<FinishReason, number> = { eos: 0, length: 0, stop: 0, cancelled: 0, error: 0 };
  tokensGenerated = 0;
  promptTokensProcessed = 0;
  steps = 0;
  /**
   * Requests admitted with the prompt cache on, those placed on a slot for its cached prefix (a hit), and the
   * tokens reused (a miss may reuse a token or two of the slot it gets: counted here, not as a hit).
   */
  promptCacheLookups = 0;
  promptCacheHits = 0;
  promptTokensCached = 0;
  /** Tokens computed for requests after they were cancelled (beyond the step in flight). Must stay 0. */
  tokensAfterCancel = 0;
  /**
   * Speculative decoding: draft tokens sent to the engine for verification, and those it accepted (the
   * target sampled the same token there). Accepted tokens after a request's finishing token count here but
   * not in its output.
   */
  draftTokens = 0;
  draftTokensAccepted = 0;
  readonly stepSeconds = new Histogram(SECONDS);
  readonly timeToFirstTokenSeconds = new Histogram(SECONDS);
  /** Time between two tokens of one request: from the step that sampled one to the step that sampled the next. */
  readonly interTokenSeconds = new Histogram(SECONDS);
  readonly cancelSeconds = new Histogram(SECONDS);
  readonly cancelSteps = new Histogram([0, 1, 2, 3, 5, 10]);

  constructor(readonly slots: number) {}

  /** Accepted draft tokens over drafted ones, 0 to 1; 0 before any draft. */
  get draftAcceptanceRate(): number {
    return this.draftTokens > 0 ? this.draftTokensAccepted / this.draftTokens : 0;
  }

  step(ms: number, items: readonly StepItem[]): void {
    this.steps++;
    this.stepSeconds.observe(ms / 1000);
    for (const item of items) if (item.sample === undefined) this.promptTokensProcessed += item.tokens.length;
  }

  finished(reason: FinishReason, completionTokens: number): void {
    this.finishedBy[reason]++;
    this.tokensGenerated += completionTokens;
  }

  admitted(cachedTokens: number, lookedUp: boolean, hit: boolean): void {
    if (!lookedUp) return;
    this.promptCacheLookups++;
    if (hit && cachedTokens > 0) this.promptCacheHits++;
    this.promptTokensCached += cachedTokens;
  }

  firstToken(ms: number): void {
    this.timeToFirstTokenSeconds.observe(ms / 1000);
  }

  cancelled(record: CancelRecord): void {
    this.cancelSeconds.observe(record.msToFree / 1000);
    this.cancelSteps.observe(record.stepsToFree);
    this.tokensAfterCancel += record.tokensAfterCancel;
  }
}
