import type { GenerationResult, StreamChunk } from "../types.ts";
import { CancelReason } from "./CancelReason.ts";
import { ChannelCore } from "./ChannelCore.ts";
import { ChannelIterator } from "./ChannelIterator.ts";
import type { ChannelProducer } from "./ChannelProducer.ts";

export interface ChannelOptions {
  /** Stable request id, copied to the handle, the producer and the result. */
  id: string;
  /**
   * Aborting it equals `cancel()`. An already-aborted signal latches the channel as cancelled inside
   * `createStreamChannel` (so `producer.cancelled` is true on return) and calls `onCancel` one microtask
   * later, unless the producer finished in between.
   */
  signal?: AbortSignal;
  /**
   * Called exactly once, synchronously, the first time the consumer cancels by any path (see
   * `CancelReason` for what each path passes). Not called if the channel already finished. Must not throw:
   * a throw is reported as a process warning and otherwise ignored, because cancel never throws.
   */
  onCancel?: (reason: string | undefined) => void;
  /**
   * When true, `result` and `consume()` reject with a `SluiceError` carrying the terminal chunk's error
   * code if the generation ends with reason `"error"`. Defaults to false: `result` always resolves.
   */
  rejectOnError?: boolean;
}

/** Above this, setTimeout fires at once instead of late, so such waits are treated as unbounded. */
const MAX_TIMER_MS = 2_147_483_647;

/**
 * Creates one request's channel: the consumer handle and the runtime-only producer side. The handle is
 * armed for cancel-on-garbage-collection until something commits to reading it (see README.md).
 */
export function createStreamChannel(options: ChannelOptions): {
  channel: StreamChannel;
  producer: ChannelProducer;
} {
  const core = new ChannelCore(options);
  const channel = new StreamChannel(core);
  core.watch(channel);
  return { channel, producer: core };
}

/**
 * The consumer's handle on one generation. Every method is safe at any time and in any order; exactly one
 * terminal chunk is delivered whatever the consumer does, including after a cancel.
 */
export class StreamChannel implements AsyncIterable<StreamChunk>, AsyncDisposable {
  readonly id: string;
  // Private so the producer side stays unreachable from the handle.
  readonly #core: ChannelCore;

  /** @internal Use `createStreamChannel()`. */
  constructor(core: ChannelCore) {
    this.id = core.id;
    this.#core = core;
  }

  /** The terminal chunk is queued (it may not have been read yet). */
  get finished(): boolean {
    return this.#core.finished;
  }

  /** The consumer cancelled (by any path) before the generation finished. */
  get cancelled(): boolean {
    return this.#core.cancelled;
  }

  /**
   * Resolves once the terminal chunk is queued; never rejects for a cancel. Reading it commits to the
   * generation: dropping the handle afterwards no longer cancels it.
   */
  get result(): Promise<GenerationResult> {
    this.#core.pin();
    return this.#core.result();
  }

  /** The next chunk if one is queued, without waiting. */
  tryPop(): StreamChunk | undefined {
    return this.#core.pop();
  }

  /**
   * The next chunk, waiting up to `timeoutMs` (unbounded when omitted; `0` or less does not wait). Resolves with
   * undefined on timeout or when nothing more will come; its timer is cleared as soon as it resolves.
   */
  waitPop(timeoutMs?: number): Promise<StreamChunk | undefined> {
    const core = this.#core;
    const chunk = core.pop();
    if (chunk !== undefined) return Promise.resolve(chunk);
    if (core.drained) return Promise.resolve(undefined);
    const timeout =
      timeoutMs === undefined || timeoutMs > MAX_TIMER_MS ? Number.POSITIVE_INFINITY : timeoutMs;
    if (!(timeout > 0)) return Promise.resolve(undefined);
    return core.park(false, undefined, timeout);
  }

  /**
   * Calls `handler` on every chunk in order, awaiting it when it returns a promise, and resolves with the
   * result after the terminal chunk (rejecting like `result` under `rejectOnError`). If the handler throws,
   * the generation is cancelled and `consume` rejects with that error.
   */
  async consume(handler: (chunk: StreamChunk) => void | Promise<void>): Promise<GenerationResult> {
    const core = this.#core;
    core.pin();
    const reader = new ChannelIterator(core);
    for (;;) {
      let chunk = core.pop();
      if (chunk === undefined) {
        const step = await reader.next();
        if (step.done === true) break;
        chunk = step.value;
      }
      try {
        const pending = handler(chunk);
        if (pending !== undefined) await pending;
      } catch (error) {
        reader.close(CancelReason.handlerError);
        throw error;
      }
      if (chunk.finished) break;
    }
    return core.result();
  }

  /** Fire-and-forget, idempotent, never throws; a no-op once finished. The terminal chunk still comes. */
  cancel(reason?: string): void {
    this.#core.cancel(reason);
  }

  /** Yields every chunk in order and ends right after the terminal one; leaving early cancels. */
  [Symbol.asyncIterator](): AsyncIterator<StreamChunk> {
    this.#core.pin();
    return new ChannelIterator(this.#core);
  }

  /** A WHATWG stream of the chunks; cancelling it cancels the generation. Pulls only on demand. */
  toReadableStream(): ReadableStream<StreamChunk> {
    this.#core.pin();
    const reader = new ChannelIterator(this.#core);
    let open = true;
    return new ReadableStream<StreamChunk>(
      {
        pull(controller) {
          return reader.next().then((step) => {
            if (!open) return;
            if (step.done === true) {
              open = false;
              controller.close();
              return;
            }
            controller.enqueue(step.value);
            if (step.value.finished) {
              open = false;
              controller.close();
            }
          });
        },
        cancel(reason: unknown) {
          open = false;
          reader.close(typeof reason === "string" ? reason : CancelReason.streamCancelled);
        },
      },
      // No read-ahead: chunks stay in the channel, where they coalesce, until the reader asks.
      { highWaterMark: 0 },
    );
  }

  /** Cancel (a no-op once finished) and wait for the terminal chunk; never rejects. */
  async [Symbol.asyncDispose](): Promise<void> {
    this.#core.cancel(CancelReason.disposed);
    await this.#core.settled();
  }
}
