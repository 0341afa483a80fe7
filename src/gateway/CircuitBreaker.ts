/** closed: requests flow; open: none, until `openMs` passed; half-open: one probe decides. */
export type BreakerState = "closed" | "open" | "half-open";

export interface BreakerOptions {
  /** Consecutive failures that open the breaker. */
  failures: number;
  /** How long it stays open before one probe request is let through (ms). */
  openMs: number;
}

/**
 * One upstream's circuit breaker: `failures` failures in a row (connection refused, 5xx, timeouts, broken
 * streams; never a 4xx or a cancel) open it, and the pool stops sending there. After `openMs` one request
 * is let through as a probe: its success closes the breaker, its failure opens it for another `openMs`.
 * Time is passed in, so the state machine is tested without waiting.
 */
export class CircuitBreaker {
  readonly #options: BreakerOptions;
  #state: BreakerState = "closed";
  #failures = 0;
  #openedAt = 0;
  #probing = false;

  constructor(options: BreakerOptions) {
    this.#options = options;
  }

  /** The state at `now` (an open breaker whose time is up reads as half-open). */
  state(now: number): BreakerState {
    if (this.#state === "open" && now - this.#openedAt >= this.#options.openMs) this.#state = "half-open";
    return this.#state;
  }

  /** Whether a request may be sent now (half-open: only while no probe is in flight). */
  allows(now: number): boolean {
    const state = this.state(now);
    return state === "closed" || (state === "half-open" && !this.#probing);
  }

  /** A request is being sent; in half-open it is the probe. */
  begin(now: number): void {
    if (this.state(now) === "half-open") this.#probing = true;
  }

  /** Returns true when this success closed an open breaker. */
  success(): boolean {
    const reopened = this.#state !== "closed";
    this.#state = "closed";
    this.#failures = 0;
    this.#probing = false;
    return reopened;
  }

  /** Returns true when this failure opened the breaker. */
  failure(now: number): boolean {
    this.#failures++;
    const wasProbe = this.#state === "half-open";
    this.#probing = false;
    if (wasProbe || (this.#state === "closed" && this.#failures >= this.#options.failures)) {
      this.#state = "open";
      this.#openedAt = now;
      return true;
    }
    return false;
  }

  /** A request that ended without telling anything (cancelled, refused as bad): a probe slot is freed. */
  neutral(): void {
    this.#probing = false;
  }
}
