import { SluiceError, type SluiceErrorCode } from "../errors.ts";
import type { ChunkError, FinishReason, GenerationResult, StreamChunk, Timings, Usage } from "../types.ts";
import { CancelReason } from "./CancelReason.ts";

export interface ChannelOptions {
  /** Stable request id, copied to the handle, the producer and the result. */
  id: string;
  /**
   * Aborting it equals `cancel()`. An already-aborted signal latches the channel as cancelled during
   * `createStreamChannel` (so `producer.cancelled` is true on return) and calls `onCancel` one microtask
   * later, unless the producer finished in between.
   */
  signal?: AbortSignal;
  /**
   * Called exactly once, synchronously, the first time the consumer cancels by any path (see README.md for
   * the list and the reason each path passes). Not called if the channel already finished. Must not throw:
   * a throw is reported as a process warning and otherwise ignored, because cancel never throws.
   */
  onCancel?: (reason: string | undefined) => void;
  /**
   * When true, `result` (and `consume()`) reject with a `SluiceError` carrying the terminal chunk's error
   * code if the generation ends with reason `"error"`. Defaults to false: `result` always resolves.
   */
  rejectOnError?: boolean;
}

export interface TerminalInfo {
  reason: FinishReason;
  stop?: string | number;
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
   * Queue a non-terminal delta. Never blocks, never throws. While a chunk is still pending (consumer
   * lagging) the delta is merged into it. Ignored after finish; empty deltas are ignored.
   */
  push(tokenIds: readonly number[], text: string): void;
  /**
   * Queue the one terminal chunk with the given final delta. The first call wins and returns true; later
   * calls return false and change nothing. Resolves `result`.
   */
  finish(tokenIds: readonly number[], text: string, info: TerminalInfo): boolean;
}

/**
 * One-way life of a channel; every transition first checks it has not already happened.
 * - open: the producer runs and the consumer reads.
 * - cancelled: the consumer gave up; the producer still owes the terminal chunk.
 * - finished: the terminal chunk is queued (possibly after a cancel).
 * - drained: the terminal chunk was handed to the consumer; nothing more will come.
 */
type ChannelState = "open" | "cancelled" | "finished" | "drained";

type WaiterResolve = (value: StreamChunk | IteratorResult<StreamChunk, undefined> | undefined) => void;

/** A parked read. Linked so the queue is O(1) without arrays; more than one is rare. */
interface Waiter {
  resolve: WaiterResolve;
  /** Answer in the async-iterator shape rather than as a bare chunk. */
  asIteration: boolean;
  /** The iterator or stream that parked it, so closing that reader releases it. */
  owner: object | undefined;
  timer: ReturnType<typeof setTimeout> | undefined;
  next: Waiter | undefined;
}

const DONE: IteratorResult<StreamChunk, undefined> = Object.freeze({ done: true, value: undefined });

/** Handles the consumer dropped without reading anything are cancelled when collected. */
const abandoned = new FinalizationRegistry<ChannelCore>((core) => core.cancel(CancelReason.gc));

/**
 * The state shared by a consumer handle and the runtime: the single producer side plus the queue the
 * handle reads from. It never references the handle, so a dropped handle can be collected.
 */
export class ChannelCore implements ChannelProducer {
  readonly id: string;
  #state: ChannelState = "open";
  #cancelled = false;
  readonly #onCancel: ((reason: string | undefined) => void) | undefined;
  readonly #signal: AbortSignal | undefined;
  readonly #rejectOnError: boolean;

  // Everything pushed, in order: the result is the chunks' concatenation by construction, and the pending
  // (coalesced) delta is just the tail of these from the offsets below, so a push appends and nothing more.
  readonly #ids: number[] = [];
  #parts: string[] = [];
  /** Where the pending delta starts in #ids, or -1 when nothing is pending. */
  #pendingIds = -1;
  /** Where the pending delta starts in #parts. */
  #pendingParts = 0;
  #terminal: StreamChunk | undefined = undefined;
  #head: Waiter | undefined = undefined;
  #tail: Waiter | undefined = undefined;
  #outcome: GenerationResult | undefined = undefined;
  #settled: Promise<GenerationResult> | undefined = undefined;
  #settle: ((outcome: GenerationResult) => void) | undefined = undefined;
  #result: Promise<GenerationResult> | undefined = undefined;

  // One executor for every parked read, so parking allocates no closure.
  #captured: WaiterResolve | undefined = undefined;
  readonly #capture = (resolve: WaiterResolve): void => {
    this.#captured = resolve;
  };
  readonly #onAbort = (): void => {
    this.cancel(abortReason(this.#signal));
  };
  readonly #onTimeout = (waiter: Waiter): void => {
    if (this.#unlink(waiter)) waiter.resolve(waiter.asIteration ? DONE : undefined);
  };

  constructor(options: ChannelOptions) {
    this.id = options.id;
    this.#onCancel = options.onCancel;
    this.#signal = options.signal;
    this.#rejectOnError = options.rejectOnError === true;
    const signal = options.signal;
    if (signal === undefined) return;
    if (signal.aborted) {
      this.#state = "cancelled";
      this.#cancelled = true;
      // Deferred so the caller can finish wiring up (its onCancel may refer to the producer being created).
      queueMicrotask(() => {
        if (this.#state === "cancelled") this.#notifyCancel(abortReason(signal));
      });
    } else {
      signal.addEventListener("abort", this.#onAbort, { once: true });
    }
  }

  get cancelled(): boolean {
    return this.#cancelled;
  }

  get finished(): boolean {
    return this.#state === "finished" || this.#state === "drained";
  }

  /** True once the terminal chunk was handed out: every read from now on gets nothing. */
  get drained(): boolean {
    return this.#state === "drained";
  }

  /** Arms the garbage-collection cancel for a handle that has not been pinned yet. */
  watch(handle: object): void {
    if (this.#state === "open") abandoned.register(handle, this, this);
  }

  /**
   * The consumer committed to reading the generation (result, consume, iteration, stream): from now on a
   * dropped handle must not cancel it. The core holds no handle, so disarming the registry is enough.
   */
  pin(): void {
    abandoned.unregister(this);
  }

  push(tokenIds: readonly number[], text: string): void {
    const state = this.#state;
    if (state === "finished" || state === "drained") return;
    const count = tokenIds.length;
    if (count === 0 && text === "") return;
    const ids = this.#ids;
    const parts = this.#parts;
    const waiter = this.#head;
    if (waiter === undefined && this.#pendingIds < 0) {
      this.#pendingIds = ids.length;
      this.#pendingParts = parts.length;
    }
    for (let i = 0; i < count; i++) ids.push(tokenIds[i]!);
    if (text !== "") parts.push(text);
    if (waiter !== undefined) {
      // A waiter only parks when nothing is queued, so handing it the delta keeps order.
      this.#shift(waiter);
      this.#wake(waiter, { tokenIds: tokenIds.slice(), text, finished: false });
    }
  }

  finish(tokenIds: readonly number[], text: string, info: TerminalInfo): boolean {
    const state = this.#state;
    if (state === "finished" || state === "drained") return false;
    this.#state = "finished";
    const ids = this.#ids;
    const parts = this.#parts;
    // A lagging consumer gets the pending delta merged into the terminal chunk: one read instead of two.
    const idsFrom = this.#pendingIds < 0 ? ids.length : this.#pendingIds;
    const partsFrom = this.#pendingIds < 0 ? parts.length : this.#pendingParts;
    this.#pendingIds = -1;
    const count = tokenIds.length;
    for (let i = 0; i < count; i++) ids.push(tokenIds[i]!);
    if (text !== "") parts.push(text);
    const chunk: StreamChunk = {
      tokenIds: ids.slice(idsFrom),
      text: joinFrom(parts, partsFrom),
      finished: true,
      reason: info.reason,
    };
    const outcome: GenerationResult = {
      id: this.id,
      reason: info.reason,
      text: joinFrom(parts, 0),
      tokenIds: ids,
      usage: info.usage,
      timings: info.timings,
    };
    if (info.stop !== undefined) chunk.stop = outcome.stop = info.stop;
    if (info.error !== undefined) {
      chunk.error = { code: info.error.code, message: info.error.message };
      outcome.error = { code: info.error.code, message: info.error.message };
    }
    this.#outcome = outcome;
    this.#parts = [];
    this.#detach();

    const waiter = this.#head;
    if (waiter === undefined) {
      this.#terminal = chunk;
    } else {
      this.#shift(waiter);
      this.#state = "drained";
      this.#wake(waiter, chunk);
      this.#endWaiters();
    }
    const settle = this.#settle;
    if (settle !== undefined) {
      this.#settle = undefined;
      settle(outcome);
    }
    return true;
  }

  /** Fire-and-forget, idempotent, never throws; a no-op once the producer finished. */
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
      return {
        tokenIds: this.#ids.slice(from),
        text: joinFrom(this.#parts, this.#pendingParts),
        finished: false,
      };
    }
    const terminal = this.#terminal;
    if (terminal !== undefined) {
      this.#terminal = undefined;
      this.#state = "drained";
    }
    return terminal;
  }

  /**
   * Waits for the next chunk; call only after pop() returned nothing and the channel is not drained.
   * Resolves with the chunk (or an iterator result), or with nothing on timeout, release or drain.
   */
  park<T>(asIteration: boolean, owner: object | undefined, timeoutMs: number): Promise<T> {
    const promise = new Promise(this.#capture);
    const waiter: Waiter = {
      resolve: this.#captured!,
      asIteration,
      owner,
      timer: undefined,
      next: undefined,
    };
    this.#captured = undefined;
    if (timeoutMs < Number.POSITIVE_INFINITY) waiter.timer = setTimeout(this.#onTimeout, timeoutMs, waiter);
    if (this.#tail === undefined) this.#head = waiter;
    else this.#tail.next = waiter;
    this.#tail = waiter;
    return promise as Promise<T>;
  }

  /** Ends every read parked by `owner` (a closed iterator or cancelled stream) with nothing. */
  release(owner: object): void {
    let waiter = this.#head;
    while (waiter !== undefined) {
      const next = waiter.next;
      if (waiter.owner === owner && this.#unlink(waiter)) {
        if (waiter.timer !== undefined) clearTimeout(waiter.timer);
        waiter.resolve(waiter.asIteration ? DONE : undefined);
      }
      waiter = next;
    }
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
      process.emitWarning(`onCancel of channel ${this.id} threw: ${String(error)}`, "SluiceWarning");
    }
  }

  /** Nothing outside may keep a settled or cancelled channel alive or call back into it. */
  #detach(): void {
    abandoned.unregister(this);
    this.#signal?.removeEventListener("abort", this.#onAbort);
  }

  #wake(waiter: Waiter, chunk: StreamChunk): void {
    waiter.resolve(waiter.asIteration ? { value: chunk, done: false } : chunk);
  }

  #endWaiters(): void {
    let waiter = this.#head;
    this.#head = this.#tail = undefined;
    while (waiter !== undefined) {
      if (waiter.timer !== undefined) clearTimeout(waiter.timer);
      waiter.resolve(waiter.asIteration ? DONE : undefined);
      waiter = waiter.next;
    }
  }

  /** Removes the head waiter. */
  #shift(waiter: Waiter): void {
    this.#head = waiter.next;
    if (this.#head === undefined) this.#tail = undefined;
  }

  /** Removes a waiter wherever it is; false if it was no longer queued. */
  #unlink(target: Waiter): boolean {
    let previous: Waiter | undefined;
    let waiter = this.#head;
    while (waiter !== undefined && waiter !== target) {
      previous = waiter;
      waiter = waiter.next;
    }
    if (waiter === undefined) return false;
    if (previous === undefined) this.#head = waiter.next;
    else previous.next = waiter.next;
    if (this.#tail === waiter) this.#tail = previous;
    return true;
  }
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

function abortReason(signal: AbortSignal | undefined): string {
  const reason: unknown = signal?.reason;
  return typeof reason === "string" ? reason : CancelReason.aborted;
}
