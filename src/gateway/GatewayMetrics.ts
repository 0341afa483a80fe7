import { Counter, Gauge, Histogram, Registry } from "prom-client";
import type { Upstream } from "./Upstream.ts";

/** Seconds, for time to first token through the gateway. */
const TTFT_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

/**
 * The pool's metrics (prom-client), one registry per pool, labelled by upstream URL:
 * `sluice_gateway_requests_total{upstream,result}` (attempts by how they ended: ok, cancelled, error,
 * failed), `sluice_gateway_errors_total{upstream,code}`, `sluice_gateway_outstanding{upstream}`,
 * `sluice_gateway_upstream_eligible{upstream}`, `sluice_gateway_ejections_total{upstream,cause}` (health,
 * breaker), `sluice_gateway_returns_total{upstream,cause}`, `sluice_gateway_retries_total`,
 * `sluice_gateway_affinity_total{result}` (hit, overloaded, miss) and
 * `sluice_gateway_time_to_first_token_seconds{upstream}`.
 */
export class GatewayMetrics {
  readonly registry = new Registry();
  readonly requests: Counter<"upstream" | "result">;
  readonly errors: Counter<"upstream" | "code">;
  readonly ejections: Counter<"upstream" | "cause">;
  readonly returns: Counter<"upstream" | "cause">;
  readonly retries: Counter;
  readonly affinity: Counter<"result">;
  readonly ttft: Histogram<"upstream">;

  constructor(upstreams: () => readonly Upstream[]) {
    const registers = [this.registry];
    this.requests = new Counter({
      name: "sluice_gateway_requests_total",
      help: "Attempts sent to each upstream, by how they ended (ok, cancelled, error, failed).",
      labelNames: ["upstream", "result"],
      registers,
    });
    this.errors = new Counter({
      name: "sluice_gateway_errors_total",
      help: "Failed attempts by upstream and error code.",
      labelNames: ["upstream", "code"],
      registers,
    });
    this.ejections = new Counter({
      name: "sluice_gateway_ejections_total",
      help: "Times an upstream was taken out of routing: failed health checks, or its circuit breaker opened.",
      labelNames: ["upstream", "cause"],
      registers,
    });
    this.returns = new Counter({
      name: "sluice_gateway_returns_total",
      help: "Times an ejected upstream came back (health checks passed, or a breaker probe succeeded).",
      labelNames: ["upstream", "cause"],
      registers,
    });
    this.retries = new Counter({
      name: "sluice_gateway_retries_total",
      help: "Requests sent to another upstream after a failure before their first token.",
      registers,
    });
    this.affinity = new Counter({
      name: "sluice_gateway_affinity_total",
      help: "Prefix-affinity routing decisions: hit (sent to the prefix holder), overloaded (holder too busy), miss.",
      labelNames: ["result"],
      registers,
    });
    this.ttft = new Histogram({
      name: "sluice_gateway_time_to_first_token_seconds",
      help: "Submission to the first token through the gateway, by upstream.",
      labelNames: ["upstream"],
      buckets: TTFT_BUCKETS,
      registers,
    });
    new Gauge({
      name: "sluice_gateway_outstanding",
      help: "Requests in flight to each upstream.",
      labelNames: ["upstream"],
      registers,
      collect() {
        for (const u of upstreams()) this.set({ upstream: u.id }, u.outstanding);
      },
    });
    new Gauge({
      name: "sluice_gateway_upstream_eligible",
      help: "1 when requests may be routed to the upstream (healthy, breaker not open), else 0.",
      labelNames: ["upstream"],
      registers,
      collect() {
        const now = performance.now();
        for (const u of upstreams()) this.set({ upstream: u.id }, u.eligible(now) ? 1 : 0);
      },
    });
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  render(): Promise<string> {
    return this.registry.metrics();
  }
}
