import { SluiceError, type SluiceErrorCode } from "../errors.ts";
import type { GenerationResult, StreamChunk, TokenLogprob } from "../types.ts";
import { CancelReason } from "./CancelReason.ts";
import type { ChannelProducer, TerminalInfo } from "./ChannelProducer.ts";
import { ParkedReads } from "./ParkedReads.ts";
import type { ChannelOptions } from "./StreamChannel.ts";

/**
 * One-way life of a channel; every transition first checks it has not already happened.
 * - open: the producer runs and the consumer reads.
 * - cancelled: the consumer gave up; the producer still owes the terminal chunk.
 * - finished: the terminal chunk is queued (possibly after a cancel).
 * - drained: the terminal chunk was handed to the consumer; nothing more will come.
 */
type ChannelState = "open" | "cancelled" | "finished" | "drained";

/** Handles dropped before anything committed to reading them are cancelled when collected. */
const abandoned = new FinalizationRegistry<ChannelCore>((core) => core.cancel(CancelReason.gc));

/**
 * The state shared by a consumer handle and the runtime: the producer side plus the queue the handle
 * reads from. It never references the handle, so a dropped handle can be collected.
 */
export class ChannelCore implements ChannelProducer {
  readonly id: string;
  #state: ChannelState = "open";
  #cancelled = false;
  readonly #onCancel: ((reason: string | undefined) => void) | undefined;
  readonly #signal: AbortSignal | undefined;
  readonly #rejectOnError: boolean;
  readonly #reads = new ParkedReads();

  // Everything pushed, in order: the result is the chunks' concatenation by construction, and the pending
  // (coalesced) delta is the tail of these from the offsets below, so a push appends and nothing more.
  readonly #ids: number[] = [];
  /** One per id of #ids when the producer reports log-probabilities (every push then carries them). */
  #logprobs: TokenLogprob[] | undefined = undefined;
  #parts: string[] = [];
  /** Where the pending delta starts in #ids, or -1 when nothing is pending. */
  #pendingIds = -1;
  /** Where the pending delta starts in #parts. */
  #pendingParts = 0;
  #terminal: StreamChunk | undefined = undefined;

  #outcome: GenerationResult | undefined = undefined;
  #settled: Promise<GenerationResult> | undefined = undefined;
  #settle: ((outcome: GenerationResult) => void) | undefined = undefined;
  #result: Promise<GenerationResult> | undefined = undefined;

  readonly #onAbort = (): void => {
    this.cancel(abortReason(this.#signal));
  };

  constructor(options: ChannelOptions) {
    this.id = options.id;
    this.#onCancel = options.onCancel;
    this.#signal = options.signal;
    this.#rejectOnError = options.rejectOnError === true;
    const signal = options.signal;
    if (signal === undefined) return;
    if (!signal.aborted) {
      signal.addEventListener("abort", this.#onAbort, { once: true });
      return;
    }
    this.#state = "cancelled";
    this.#cancelled = true;
    // Deferred so the caller can finish wiring up: its onCancel may use the producer being created.
    queueMicrotask(() => {
      if (this.#state === "cancelled") this.#notifyCancel(abortReason(signal));
    });
  }

  get cancelled(): boolean {
    return this.#cancelled;
  }

  get finished(): boolean {
    return this.#state === "finished" || this.#state === "drained";
  }

  /** The terminal chunk was handed out: every read from now on gets nothing. */
  get drained(): boolean {
    return this.#state === "drained";
  }

  /** Arms the garbage-collection cancel for a fresh handle. */
  watch(handle: object): void {
    if (this.#state === "open") abandoned.register(handle, this, this);
  }

  /**
   * The consumer committed to reading the generation (result, consume, iteration, stream): a dropped
   * handle must no longer cancel it. The core holds no handle, so disarming the registry is enough.
   */
  pin(): void {
    abandoned.unregister(this);
  }

  push(tokenIds: readonly number[], text: string, logprobs?: readonly TokenLogprob[]): void {
    const state = this.#state;
    if (state === "finished" || state === "drained") return;
    const count = tokenIds.length;
    if (count === 0 && text === "") return;
    if (logprobs !== undefined) this.#addLogprobs(logprobs);
    const ids = this.#ids;
    const parts = this.#parts;
    const waiting = this.#reads.waiting;
    if (!waiting && this.#pendingIds < 0) {
      this.#pendingIds = ids.length;
      this.#pendingParts = parts.length;
    }
    for (let i = 0; i < count; i++) ids.push(tokenIds[i]!);
    if (text !== "") parts.push(text);
    // A read parks only when nothing is pending, so handing it this delta keeps the order.
    if (!waiting) return;
    const chunk: StreamChunk = { tokenIds: tokenIds.slice(), text, finished: false };
    if (logprobs !== undefined) chunk.logprobs = logprobs.slice();
    this.#reads.deliver(chunk);
  }

  #addLogprobs(logprobs: readonly TokenLogprob[]): void {
    const all = (this.#logprobs ??= []);
    for (const entry of logprobs) all.push(entry);
  }

  finish(
    tokenIds: readonly number[],
    text: string,
    info: TerminalInfo,
    logprobs?: readonly TokenLogprob[],
  ): boolean {
    const state = this.#state;
    if (state === "finished" || state === "drained") return false;
    this.#state = "finished";
    if (logprobs !== undefined) this.#addLogprobs(logprobs);
    const ids = this.#ids;
    const parts = this.#parts;
    // A lagging consumer gets the pending delta merged into the terminal chunk: one read instead of two.
    const hasPending = this.#pendingIds >= 0;
    const idsFrom = hasPending ? this.#pendingIds : ids.length;
    const partsFrom = hasPending ? this.#pendingParts : parts.length;
    this.#pendingIds = -1;
    const count = tokenIds.length;
    for (let i = 0; i < count; i++) ids.push(tokenIds[i]!);
    if (text !== "") parts.push(text);

    const allText = joinFrom(parts, 0);
    const chunk: StreamChunk = {
      tokenIds: ids.slice(idsFrom),
      text: partsFrom === 0 ? allText : joinFrom(parts, partsFrom),
      finished: true,
      reason: info.reason,
    };
    const outcome: GenerationResult = {
      id: this.id,
      reason: info.reason,
      text: allText,
      tokenIds: ids,
      usage: info.usage,
      timings: info.timings,
    };
    const all = this.#logprobs;
    if (all !== undefined) {
      chunk.logprobs = all.slice(idsFrom);
      outcome.logprobs = all;
    }
    if (info.stop !== undefined) chunk.stop = outcome.stop = info.stop;
    if (info.error !== undefined) {
      chunk.error = { code: info.error.code, message: info.error.message };
      outcome.error = { code: info.error.code, message: info.error.message };
    }
    this.#outcome = outcome;
    this.#parts = [];
    this.#detach();

    const reads = this.#reads;
    if (reads.waiting) {
      this.#state = "drained";
      reads.deliver(chunk);
      reads.endAll();
    } else {
      this.#terminal = chunk;
    }
    const settle = this.#settle;
    if (settle !== undefined) {
      this.#settle = undefined;
      settle(outcome);
    }
    return true;
  }

  /** Idempotent, never throws; a no-op once the producer finished. */
  cancel(reason: string | undefined): void {
    if (this.#state !== "open") return;
    this.#state = "cancelled";
    this.#cancelled = true;
    this.#detach();
    this.#notifyCancel(reason);
  }

  /** Non-blocking read: the pending delta, else the terminal chunk, else nothing. */
  pop(): StreamChunk | undefined {
    const from = this.#pendingIds;
    if (from >= 0) {
      this.#pendingIds = -1;
      const chunk: StreamChunk = {
        tokenIds: this.#ids.slice(from),
        text: joinFrom(this.#parts, this.#pendingParts),
        finished: false,
      };
      if (this.#logprobs !== undefined) chunk.logprobs = this.#logprobs.slice(from);
      return chunk;
    }
    const terminal = this.#terminal;
    if (terminal !== undefined) {
      this.#terminal = undefined;
      this.#state = "drained";
    }
    return terminal;
  }

  /**
   * Waits for the next chunk; only after pop() returned nothing and the channel is not drained. Resolves
   * with the chunk (or an iterator result), or with nothing on timeout, release or drain.
   */
  park<T>(asIteration: boolean, owner: object | undefined, timeoutMs: number): Promise<T> {
    return this.#reads.park<T>(asIteration, owner, timeoutMs);
  }

  /** Ends every read parked by `owner` (a closed iterator or cancelled stream) with nothing. */
  release(owner: object): void {
    this.#reads.release(owner);
  }

  /** Resolves with the outcome once finished; never rejects (dispose and internal awaits). */
  settled(): Promise<GenerationResult> {
    if (this.#settled === undefined) {
      const outcome = this.#outcome;
      this.#settled =
        outcome === undefined
          ? new Promise<GenerationResult>((resolve) => {
              this.#settle = resolve;
            })
          : Promise.resolve(outcome);
    }
    return this.#settled;
  }

  /** The consumer-facing result: `settled()`, rejecting on an error finish when asked to. */
  result(): Promise<GenerationResult> {
    if (this.#result === undefined) {
      const settled = this.settled();
      this.#result = this.#rejectOnError ? settled.then(throwIfError) : settled;
    }
    return this.#result;
  }

  #notifyCancel(reason: string | undefined): void {
    const onCancel = this.#onCancel;
    if (onCancel === undefined) return;
    try {
      onCancel(reason);
    } catch (error) {
      // Cancel never throws (it runs from finalizers and abort events too), but a broken hook must show.
      process.emitWarning(`onCancel of channel ${this.id} threw: ${String(error)}`, "SluiceWarning");
    }
  }

  /** Once settled or cancelled, nothing outside may call back into the channel. */
  #detach(): void {
    abandoned.unregister(this);
    this.#signal?.removeEventListener("abort", this.#onAbort);
  }
}

function abortReason(signal: AbortSignal | undefined): string {
  const reason: unknown = signal?.reason;
  return typeof reason === "string" ? reason : CancelReason.aborted;
}

function joinFrom(parts: readonly string[], from: number): string {
  const count = parts.length - from;
  if (count <= 0) return "";
  if (count === 1) return parts[from]!;
  return (from === 0 ? parts : parts.slice(from)).join("");
}

function throwIfError(outcome: GenerationResult): GenerationResult {
  if (outcome.reason !== "error") return outcome;
  const code = (outcome.error?.code ?? "internal_error") as SluiceErrorCode;
  throw new SluiceError(code, outcome.error?.message ?? `generation ${outcome.id} ended with an error`);
}
