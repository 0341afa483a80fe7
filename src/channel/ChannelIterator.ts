import type { StreamChunk } from "../types.ts";
import { CancelReason } from "./CancelReason.ts";
import type { ChannelCore } from "./ChannelCore.ts";

const DONE: IteratorResult<StreamChunk, undefined> = Object.freeze({ done: true, value: undefined });

/**
 * One reader over a channel: the for-await iterator, and the engine behind `toReadableStream()` and
 * `consume()`. Closing it early cancels the generation; it never waits for the terminal chunk to close.
 */
export class ChannelIterator implements AsyncIterableIterator<StreamChunk, undefined, undefined> {
  readonly #core: ChannelCore;
  #closed = false;

  constructor(core: ChannelCore) {
    this.#core = core;
  }

  next(): Promise<IteratorResult<StreamChunk, undefined>> {
    if (this.#closed) return Promise.resolve(DONE);
    const core = this.#core;
    const chunk = core.pop();
    if (chunk !== undefined) return Promise.resolve({ value: chunk, done: false });
    if (core.drained) return Promise.resolve(DONE);
    return core.park(true, this, Number.POSITIVE_INFINITY);
  }

  /** `break` / `return` out of for-await: cancel if unfinished and end now. */
  return(): Promise<IteratorResult<StreamChunk, undefined>> {
    this.close(CancelReason.iteratorClosed);
    return Promise.resolve(DONE);
  }

  /** An error thrown into the iterator cancels like `return()` and is passed back, as generators do. */
  throw(error?: unknown): Promise<IteratorResult<StreamChunk, undefined>> {
    this.close(CancelReason.iteratorClosed);
    return Promise.reject(error);
  }

  /** Idempotent: releases this reader's pending reads, then cancels (a no-op once finished). */
  close(reason: string | undefined): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#core.release(this);
    this.#core.cancel(reason);
  }

  [Symbol.asyncIterator](): this {
    return this;
  }
}
