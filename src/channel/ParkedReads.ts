import type { StreamChunk } from "../types.ts";

/** A parked read gets a chunk, or in iterator shape, or nothing (timeout, release, nothing more to come). */
type Answer = StreamChunk | IteratorResult<StreamChunk, undefined> | undefined;

interface Read {
  resolve: (answer: Answer) => void;
  /** Answer in the async-iterator shape rather than as a bare chunk. */
  asIteration: boolean;
  /** The iterator or stream that parked it, so closing that reader releases it. */
  owner: object | undefined;
  timer: ReturnType<typeof setTimeout> | undefined;
  next: Read | undefined;
}

const DONE: IteratorResult<StreamChunk, undefined> = Object.freeze({ done: true, value: undefined });

/**
 * Consumer reads waiting for the next chunk, oldest first. Usually zero or one; linked rather than an
 * array so taking the oldest is O(1). Every way out of the queue clears the read's timer.
 */
export class ParkedReads {
  #head: Read | undefined = undefined;
  #tail: Read | undefined = undefined;

  // One executor for every parked read, so parking allocates no closure.
  #captured: ((answer: Answer) => void) | undefined = undefined;
  readonly #capture = (resolve: (answer: Answer) => void): void => {
    this.#captured = resolve;
  };
  readonly #onTimeout = (read: Read): void => {
    if (this.#unlink(read)) read.resolve(read.asIteration ? DONE : undefined);
  };

  get waiting(): boolean {
    return this.#head !== undefined;
  }

  /** Parks a read; it settles on `deliver`, `release(owner)`, `endAll` or after `timeoutMs` (finite only). */
  park<T>(asIteration: boolean, owner: object | undefined, timeoutMs: number): Promise<T> {
    const promise = new Promise(this.#capture);
    const read: Read = { resolve: this.#captured!, asIteration, owner, timer: undefined, next: undefined };
    this.#captured = undefined;
    if (timeoutMs < Number.POSITIVE_INFINITY) read.timer = setTimeout(this.#onTimeout, timeoutMs, read);
    if (this.#tail === undefined) this.#head = read;
    else this.#tail.next = read;
    this.#tail = read;
    return promise as Promise<T>;
  }

  /** Hands `chunk` to the oldest read, which must exist (check `waiting`). */
  deliver(chunk: StreamChunk): void {
    const read = this.#head!;
    this.#head = read.next;
    if (this.#head === undefined) this.#tail = undefined;
    if (read.timer !== undefined) clearTimeout(read.timer);
    read.resolve(read.asIteration ? { value: chunk, done: false } : chunk);
  }

  /** Ends every read parked by `owner` with nothing. */
  release(owner: object): void {
    let read = this.#head;
    while (read !== undefined) {
      const next = read.next;
      if (read.owner === owner && this.#unlink(read)) end(read);
      read = next;
    }
  }

  /** Ends every read with nothing: no chunk will ever come. */
  endAll(): void {
    let read = this.#head;
    this.#head = this.#tail = undefined;
    for (; read !== undefined; read = read.next) end(read);
  }

  /** Removes a read wherever it is; false if it was no longer queued. */
  #unlink(target: Read): boolean {
    let previous: Read | undefined;
    let read = this.#head;
    while (read !== undefined && read !== target) {
      previous = read;
      read = read.next;
    }
    if (read === undefined) return false;
    if (previous === undefined) this.#head = read.next;
    else previous.next = read.next;
    if (this.#tail === read) this.#tail = previous;
    return true;
  }
}

function end(read: Read): void {
  if (read.timer !== undefined) clearTimeout(read.timer);
  read.resolve(read.asIteration ? DONE : undefined);
}
