import type { ChunkError, FinishReason, Timings, TokenLogprob, Usage } from "../types.ts";

/** What the runtime knows when a generation ends, besides the final delta. */
export interface TerminalInfo {
  reason: FinishReason;
  /** The matched stop string or stop token id, when `reason === "stop"`. */
  stop?: string | number;
  /** Set when `reason === "error"`. */
  error?: ChunkError;
  usage: Usage;
  timings: Timings;
}

/** Runtime-only side of a channel. Nothing here is reachable from the consumer handle. */
export interface ChannelProducer {
  readonly id: string;
  /** True once the consumer cancelled (by any path). */
  readonly cancelled: boolean;
  /** True once finish() was called. */
  readonly finished: boolean;
  /**
   * Queue a non-terminal delta. Never blocks, never throws. While a delta is still pending (consumer
   * lagging) this one is merged into it, so memory follows the text, not the number of pushes. Ignored
   * after finish; empty deltas (no ids, no text) are ignored.
   */
  push(tokenIds: readonly number[], text: string, logprobs?: readonly TokenLogprob[]): void;
  /**
   * Queue the one terminal chunk, carrying the given final delta (either may be empty) and any pending
   * delta. The first call wins and returns true; later calls return false and change nothing. Resolves
   * `result`, whose text and ids are everything pushed plus this final delta.
   *
   * `logprobs`: one entry per token id, given with every push and with finish or never (chunks and the
   * result then carry them, aligned with their ids).
   */
  finish(
    tokenIds: readonly number[],
    text: string,
    info: TerminalInfo,
    logprobs?: readonly TokenLogprob[],
  ): boolean;
}
