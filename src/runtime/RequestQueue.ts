import type { RequestState } from "./RequestState.ts";

/**
 * The requests waiting for a slot, first in first out, with O(1) amortised push and shift (no
 * `Array.shift()`). A request that finishes while waiting (a cancel) is counted out at once with `drop()`;
 * its entry is skipped when reached, and compacted away once dead entries outnumber live ones, so a flood of
 * submit-and-cancel behind busy slots holds memory for the waiting requests only.
 */
export class RequestQueue {
  #items: (RequestState | undefined)[] = [];
  #head = 0;
  #waiting = 0;
  #dead = 0;

  /** Requests waiting (dropped ones not counted). */
  get length(): number {
    return this.#waiting;
  }

  push(state: RequestState): void {
    this.#items.push(state);
    this.#waiting++;
  }

  /** The oldest request still waiting, taken off the queue; undefined when none waits. */
  shift(): RequestState | undefined {
    while (this.#head < this.#items.length) {
      const state = this.#items[this.#head];
      // Released at once: a taken entry must not keep its request reachable until the next compaction.
      this.#items[this.#head++] = undefined;
      if (this.#head > 1024 && this.#head * 2 > this.#items.length) this.#compact();
      if (state === undefined) continue;
      if (state.phase === "queued") {
        this.#waiting--;
        return state;
      }
      this.#dead--;
    }
    return undefined;
  }

  /** A waiting request finished (its phase is no longer `queued`): it no longer counts. */
  drop(): void {
    this.#waiting--;
    this.#dead++;
    if (this.#dead >= 64 && this.#dead > this.#waiting) this.#compact();
  }

  #compact(): void {
    const live: RequestState[] = [];
    for (let i = this.#head; i < this.#items.length; i++) {
      const state = this.#items[i];
      if (state?.phase === "queued") live.push(state);
    }
    this.#items = live;
    this.#head = 0;
    this.#dead = 0;
  }
}
