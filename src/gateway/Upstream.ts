import { CircuitBreaker } from "./CircuitBreaker.ts";
import type { ResolvedPoolOptions } from "./PoolOptions.ts";
import type { RoutingCandidate } from "./routingPolicy.ts";

/** What `UpstreamPool.snapshot()` reports for one upstream. */
export interface UpstreamSnapshot {
  url: string;
  /** Passing its health checks (or not yet checked twice in a row as failing). */
  healthy: boolean;
  breaker: "closed" | "open" | "half-open";
  /** Whether a request may be routed there now. */
  eligible: boolean;
  /** Requests in flight there. */
  outstanding: number;
  /** Model ids from its `/v1/models` (empty until read). */
  models: string[];
  /** Attempts sent there since the pool started. */
  requests: number;
  /** Attempts that failed there. */
  failures: number;
}

/** One upstream's live state: health, circuit breaker, models, load. */
export class Upstream implements RoutingCandidate {
  readonly id: string;
  readonly apiKey: string | undefined;
  readonly breaker: CircuitBreaker;
  outstanding = 0;
  healthy = true;
  models: ReadonlySet<string> = new Set();
  requests = 0;
  failures = 0;
  #healthFailures = 0;
  #healthPasses = 0;

  constructor(config: { url: string; apiKey: string | undefined }, options: ResolvedPoolOptions) {
    this.id = config.url;
    this.apiKey = config.apiKey;
    this.breaker = new CircuitBreaker({ failures: options.breakerFailures, openMs: options.breakerOpenMs });
  }

  eligible(now: number): boolean {
    return this.healthy && this.breaker.allows(now);
  }

  /**
   * A health check's result; returns `"ejected"` or `"returned"` when it changes whether the upstream is
   * healthy, after `unhealthy` failures or `healthy` passes in a row.
   */
  health(
    ok: boolean,
    thresholds: { unhealthy: number; healthy: number },
  ): "ejected" | "returned" | undefined {
    if (ok) {
      this.#healthFailures = 0;
      this.#healthPasses++;
      if (!this.healthy && this.#healthPasses >= thresholds.healthy) {
        this.healthy = true;
        return "returned";
      }
      return undefined;
    }
    this.#healthPasses = 0;
    this.#healthFailures++;
    if (this.healthy && this.#healthFailures >= thresholds.unhealthy) {
      this.healthy = false;
      return "ejected";
    }
    return undefined;
  }

  snapshot(now: number): UpstreamSnapshot {
    return {
      url: this.id,
      healthy: this.healthy,
      breaker: this.breaker.state(now),
      eligible: this.eligible(now),
      outstanding: this.outstanding,
      models: [...this.models],
      requests: this.requests,
      failures: this.failures,
    };
  }
}
