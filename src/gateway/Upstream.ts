import { CircuitBreaker } from "./CircuitBreaker.ts";
import type { LocalMember } from "./LocalMember.ts";
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
  /** Requests in flight there (the local engine: its requests running and queued). */
  outstanding: number;
  /** The local engine (`url` is then `local`), reached without HTTP. */
  local: boolean;
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
  /** The local engine, when this member is the runtime in this process rather than a URL. */
  readonly local: LocalMember | undefined;
  /** Requests this pool has in flight there. */
  inflight = 0;
  healthy = true;
  models: ReadonlySet<string> = new Set();
  requests = 0;
  failures = 0;
  #healthFailures = 0;
  #healthPasses = 0;

  constructor(
    config: { url: string; apiKey: string | undefined; local?: LocalMember },
    options: ResolvedPoolOptions,
  ) {
    this.id = config.url;
    this.apiKey = config.apiKey;
    this.local = config.local;
    if (config.local !== undefined) this.models = new Set(config.local.models);
    this.breaker = new CircuitBreaker({ failures: options.breakerFailures, openMs: options.breakerOpenMs });
  }

  /** Requests in flight there: for the local engine, the runtime's own count (running and queued). */
  get outstanding(): number {
    return this.local !== undefined ? this.local.load : this.inflight;
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
      local: this.local !== undefined,
      models: [...this.models],
      requests: this.requests,
      failures: this.failures,
    };
  }
}
